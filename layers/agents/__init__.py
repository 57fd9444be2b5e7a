"""The team's agents: the application this repository runs on the twelvefactor framework.

The framework imports this package (``TWELVEFACTOR_AGENTS``, default ``agents``) and calls
``build_registry()`` and ``default_prompts_dir()``; nothing in ``twelvefactor`` names an agent.
Each agent reads its own settings from the environment under its own prefix.
deploybot is the example; payments keeps the registry honest.
"""

from __future__ import annotations

from pathlib import Path

from twelvefactor.core.agent import AgentRegistry
from twelvefactor.settings import AgentSettings

from .deploybot import build_deploybot
from .oncall import build_oncall
from .payments import build_payments

# Where the Lambda layer puts the templates (the layer's content is mounted under /opt).
LAYER_PROMPTS_DIR = Path("/opt/prompts")
# In a checkout: layers/agents/__init__.py -> the repository's top-level prompts/.
REPO_PROMPTS_DIR = Path(__file__).resolve().parents[2] / "prompts"


def build_registry() -> AgentRegistry:
    return AgentRegistry(
        [
            build_deploybot(),
            build_payments(),
            build_oncall(),
            # twelvefactor new agent: agents above this line
        ]
    )


def default_prompts_dir() -> Path:
    """PROMPTS_DIR if set, else the layer's copy when running in Lambda, else the checkout's."""
    configured = AgentSettings().prompts_dir
    if configured is not None:
        return configured
    return LAYER_PROMPTS_DIR if LAYER_PROMPTS_DIR.is_dir() else REPO_PROMPTS_DIR


__all__ = ["build_registry", "default_prompts_dir"]
