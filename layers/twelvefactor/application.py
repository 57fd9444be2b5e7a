"""The application the framework runs: its agents and their prompts.

The dependency points from the application to the framework. The application is an importable
module, ``agents`` unless ``TWELVEFACTOR_AGENTS`` names another, that exposes

- ``build_registry() -> AgentRegistry``: every agent, each built from its own settings;
- ``default_prompts_dir() -> Path``: where its ``prompts/<agent>.jinja`` live (``PROMPTS_DIR`` wins).

Nothing in ``twelvefactor`` imports an agent, so an application's agents can be added, renamed or
deleted without touching the framework (`twelvefactor new agent` writes into the application).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from .core.agent import AgentRegistry
from .settings import AgentSettings


class ApplicationError(Exception):
    """The configured application module is missing or does not expose what the framework needs."""


@dataclass(frozen=True)
class Application:
    module: ModuleType
    prompts_dir: Path

    @property
    def name(self) -> str:
        return self.module.__name__

    @property
    def directory(self) -> Path:
        """The application package's folder, where `twelvefactor new agent` writes modules."""
        return Path(self.module.__file__ or "").resolve().parent

    def build_registry(self) -> AgentRegistry:
        registry = self.module.build_registry()
        if not isinstance(registry, AgentRegistry):
            raise ApplicationError(f"{self.name}.build_registry() returned {type(registry).__name__}")
        return registry


def load(settings: AgentSettings | None = None) -> Application:
    settings = settings or AgentSettings()
    try:
        module = importlib.import_module(settings.agents_module)
    except ModuleNotFoundError as missing:
        if missing.name != settings.agents_module.split(".")[0] and missing.name != settings.agents_module:
            raise  # the application itself failed to import something: show that, not this
        raise ApplicationError(
            f"no application module {settings.agents_module!r} (TWELVEFACTOR_AGENTS) on the Python path"
        ) from None
    for needed in ("build_registry", "default_prompts_dir"):
        if not callable(getattr(module, needed, None)):
            raise ApplicationError(f"{settings.agents_module} has no {needed}()")
    prompts_dir = settings.prompts_dir or Path(module.default_prompts_dir())
    return Application(module, prompts_dir)
