"""Agents own their settings, and the application hands the framework its agents."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from pydantic import Field, ValidationError

from twelvefactor import application, settings
from twelvefactor.application import ApplicationError
from twelvefactor.core.agent import AgentRegistry
from twelvefactor.settings import AgentSettings, PrefixedSettings

FRAMEWORK = Path(application.__file__).resolve().parent


class ExampleSettings(PrefixedSettings):
    env_prefix = "EXAMPLE_AGENT_"
    service_url: str = "http://127.0.0.1:1"
    timeout_seconds: float = Field(default=10.0, gt=0, le=60)


def test_an_agent_reads_its_fields_under_its_own_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the agent's variables, and a look-alike without the prefix
    monkeypatch.setenv("EXAMPLE_AGENT_SERVICE_URL", "http://tools.internal")
    monkeypatch.setenv("EXAMPLE_AGENT_TIMEOUT_SECONDS", "2.5")
    monkeypatch.setenv("SERVICE_URL", "http://wrong")
    # When its settings are built
    found = ExampleSettings()
    # Then each field came from PREFIX + NAME, and a value passed in code still wins
    assert (found.service_url, found.timeout_seconds) == ("http://tools.internal", 2.5)
    assert ExampleSettings(service_url="http://given").service_url == "http://given"


def test_a_bad_value_under_the_prefix_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAMPLE_AGENT_TIMEOUT_SECONDS", "600")
    with pytest.raises(ValidationError, match="timeout_seconds"):
        ExampleSettings()


def test_a_prefix_that_is_no_variable_prefix_is_refused_at_import() -> None:
    with pytest.raises(TypeError, match="env_prefix"):

        class _Bad(PrefixedSettings):
            env_prefix = "lower"


def test_the_framework_names_no_agent() -> None:
    # Given every module of the framework package
    imported: set[str] = set()
    for path in FRAMEWORK.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
    named = {
        f"{field.alias or name}={field.default}".lower()
        for kind in vars(settings).values()
        if isinstance(kind, type) and issubclass(kind, settings.EnvironmentSettings)
        for name, field in kind.model_fields.items()
    }
    # Then none imports the application, and no framework setting is an agent's or defaults to one
    assert "agents" not in imported
    assert not [n for n in named if any(agent in n for agent in ("deploy", "payment", "oncall"))]


def test_the_configured_module_hands_over_its_agents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given another application on the path, with one agent of its own and its own prompts
    package = tmp_path / "otherapp"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from pathlib import Path\n"
        "from twelvefactor.core.agent import Agent, AgentRegistry\n"
        "def build_registry():\n"
        "    return AgentRegistry([Agent(name='solo', description='d', tools=())])\n"
        "def default_prompts_dir():\n"
        f"    return Path({str(tmp_path)!r})\n",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "otherapp", raising=False)
    # When the framework loads the module TWELVEFACTOR_AGENTS names
    monkeypatch.setenv("TWELVEFACTOR_AGENTS", "otherapp")
    app = application.load()
    # Then it runs that application's agents and reads its prompts
    registry = app.build_registry()
    assert isinstance(registry, AgentRegistry)
    assert registry.names == ("solo",)
    assert app.prompts_dir == tmp_path


def test_a_missing_or_incomplete_application_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ApplicationError, match="no application module 'nosuchapp'"):
        application.load(AgentSettings(agents_module="nosuchapp"))
    (tmp_path / "halfapp.py").write_text("def build_registry(): ...\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ApplicationError, match="halfapp has no default_prompts_dir"):
        application.load(AgentSettings(agents_module="halfapp"))
