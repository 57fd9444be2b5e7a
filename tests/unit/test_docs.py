"""The docs stay true to the code: every name they must list is read from the code itself.

Settings come from `twelvefactor.settings`, Parameters, environment and routes from `template.yaml`,
events and statuses from `twelvefactor.core`, make targets from the Makefile and sub-commands from
`twelvefactor.cli.COMMANDS`. Adding any of them without documenting it fails here.
"""

from __future__ import annotations

import inspect
import json
import re
import typing
from pathlib import Path

import pytest

from twelvefactor import application, cli, settings
from twelvefactor.adapters.ports import StoredPayload
from twelvefactor.core.events import Event
from twelvefactor.core.state import ThreadStatus
from twelvefactor.local.template import api_routes, load_template
from twelvefactor.triggers import api
from twelvefactor.triggers.api import ThreadSummary

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
ARCHITECTURE = DOCS / "architecture.md"
CONFIGURATION = DOCS / "configuration.md"
# Every page that names commands: the README and everything under docs/, whoever wrote it.
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_MAKE = re.compile(r"(?:^|[\s;&(|])make ([a-z][a-z0-9_-]*)")
_COMMAND = re.compile(r"(?:^|[\s/;&(|])twelvefactor ([a-z][a-z-]*)(?: ([a-z][a-z|-]*))?")
_MAKE_TARGET = re.compile(r"^([A-Za-z0-9_.-]+(?:[ \t]+[A-Za-z0-9_.-]+)*)[ \t]*:(?![:=])", re.MULTILINE)


def code_of(text: str) -> list[str]:
    """The code in a Markdown page: fenced blocks line by line, and inline `code` spans."""
    code: list[str] = []
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        elif fenced:
            code.append(line)
        else:
            code += _INLINE_CODE.findall(line)
    return code


def documented(name: str, text: str) -> bool:
    """Named as code (`name`), not merely as a substring of prose or of a longer name."""
    return f"`{name}`" in text


def settings_env_vars() -> set[str]:
    names: set[str] = set()
    for _, kind in inspect.getmembers(settings, inspect.isclass):
        if issubclass(kind, settings.EnvironmentSettings) and kind.__module__ == settings.__name__:
            names |= {field.alias or name.upper() for name, field in kind.model_fields.items()}
    return names | agent_env_vars()


def agent_env_vars() -> set[str]:
    """The variables each of the application's agents reads under its own prefix."""
    application.load().build_registry()  # imports every agent's module, so its settings class exists
    return {
        field.alias or f"{kind.env_prefix}{name}".upper()
        for kind in settings.PrefixedSettings.__subclasses__()
        if kind.__module__.startswith("agents.")
        for name, field in kind.model_fields.items()
    }


def template_env_vars() -> set[str]:
    template = load_template()
    names = set(template["Globals"]["Function"]["Environment"]["Variables"])
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            names |= set(resource["Properties"].get("Environment", {}).get("Variables", {}))
    return names


def event_types() -> set[str]:
    union = typing.get_args(Event)[0]  # Annotated[Union[...], Field(discriminator=...)]
    return {model.model_fields["type"].default for model in typing.get_args(union)}


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return {target for match in _MAKE_TARGET.findall(text) for target in match.split()}


def named_make_targets() -> dict[str, set[str]]:
    return {
        page.name: {
            target for code in code_of(page.read_text(encoding="utf-8")) for target in _MAKE.findall(code)
        }
        for page in PAGES
    }


def named_commands() -> dict[str, set[tuple[str, str]]]:
    """(command, the word after it or "") pairs per page; `_has_action` decides if that word is an action."""
    return {
        page.name: {
            pair for code in code_of(page.read_text(encoding="utf-8")) for pair in _COMMAND.findall(code)
        }
        for page in PAGES
    }


def test_every_settings_variable_is_in_configuration_md() -> None:
    # Given every environment variable the settings classes read
    names = settings_env_vars()
    assert {
        "THREADS_TABLE",
        "OPENAI_API_KEY_SECRET_ARN",
        "TWELVEFACTOR_API_URL",
        "DEPLOYBOT_SERVICE_URL",
    } <= names
    # When configuration.md is searched for each as code
    text = CONFIGURATION.read_text(encoding="utf-8")
    missing = sorted(name for name in names if not documented(name, text))
    # Then none is missing
    assert missing == []


def test_every_variable_the_template_sets_is_in_configuration_md() -> None:
    # Given every environment variable template.yaml gives any function (Globals included)
    names = template_env_vars()
    assert {"POWERTOOLS_SERVICE_NAME", "STATE_MACHINE_ARN"} <= names
    # When configuration.md is searched for each as code
    text = CONFIGURATION.read_text(encoding="utf-8")
    missing = sorted(name for name in names if not documented(name, text))
    # Then none is missing
    assert missing == []


def test_every_template_parameter_is_in_configuration_md() -> None:
    # Given the template's Parameters
    parameters = set(load_template()["Parameters"])
    assert {"Stage", "WaitTimeoutSeconds"} <= parameters
    # When configuration.md is searched for each as code
    text = CONFIGURATION.read_text(encoding="utf-8")
    missing = sorted(name for name in parameters if not documented(name, text))
    # Then none is missing
    assert missing == []


def test_every_event_type_is_in_architecture_md() -> None:
    # Given the types of the Event union
    types = event_types()
    assert {"user_message", "tool_dispatched", "cancelled"} <= types
    # When architecture.md is searched for each as code
    text = ARCHITECTURE.read_text(encoding="utf-8")
    missing = sorted(name for name in types if not documented(name, text))
    # Then none is missing
    assert missing == []


def test_every_thread_status_is_in_architecture_md() -> None:
    # Given every derived ThreadStatus
    statuses = {status.value for status in ThreadStatus}
    # When architecture.md is searched for each as code
    text = ARCHITECTURE.read_text(encoding="utf-8")
    missing = sorted(name for name in statuses if not documented(name, text))
    # Then none is missing
    assert missing == []


def test_every_api_route_is_in_architecture_md() -> None:
    # Given the template's API routes (the Api and Slack functions' events)
    routes = {f"{route.method} {route.path}" for route in api_routes(load_template())}
    assert "POST /threads" in routes
    # When architecture.md and deploying.md are searched for each as "METHOD /path"
    text = ARCHITECTURE.read_text(encoding="utf-8") + (DOCS / "deploying.md").read_text(encoding="utf-8")
    missing = sorted(route for route in routes if route not in text)
    # Then none is missing
    assert missing == []


def test_every_field_of_a_thread_read_is_in_architecture_md() -> None:
    # Given the fields a client meets when it reads a thread: pages, the cursor and event pointers
    models = (api.ThreadView, api.EventsPage, api.EventPointer, StoredPayload)
    fields = {name for model in models for name in model.model_fields} - set(ThreadSummary.model_fields)
    assert {"next_after", "payload", "url", "sha256"} <= fields
    # When architecture.md is searched for each as code, and for the page's limits
    text = ARCHITECTURE.read_text()
    missing = sorted(name for name in fields if not documented(name, text) and f'"{name}"' not in text)
    # Then none is missing, and the byte budget is named where it is set
    assert not missing, f"architecture.md does not describe: {missing}"
    assert (
        "`PAGE_BYTES`" in text
        and f"1..{api.MAX_PAGE_EVENTS}" in text
        and f"default {api.PAGE_EVENTS}" in text
    )


def test_every_state_of_the_state_machine_is_in_architecture_md() -> None:
    # Given the states of statemachine/agent.asl.json
    definition = json.loads((ROOT / "statemachine" / "agent.asl.json").read_text(encoding="utf-8"))
    states = set(definition["States"])
    assert {"Reduce", "Wait for human"} <= states
    # When architecture.md is searched for each as code
    text = ARCHITECTURE.read_text(encoding="utf-8")
    missing = sorted(name for name in states if not documented(name, text))
    # Then none is missing
    assert missing == []


def test_make_targets_named_in_the_docs_exist() -> None:
    # Given the targets the Makefile defines and those the README and docs tell people to run
    targets = makefile_targets()
    named = named_make_targets()
    assert {"test", "demo", "validate", "build"} <= named["README.md"]
    # When each named target is looked up
    unknown = {page: sorted(found - targets) for page, found in named.items() if found - targets}
    # Then every one exists
    assert unknown == {}


def test_twelvefactor_commands_named_in_the_docs_exist() -> None:
    # Given cli.COMMANDS and the `twelvefactor ...` commands the README and docs show
    named = named_commands()
    assert ("local", "up") in named["README.md"]
    # When each command, and each action of a command that has actions, is looked up
    unknown: dict[str, list[str]] = {}
    for page, pairs in named.items():
        for command, action in sorted(pairs):
            if command not in cli.COMMANDS:
                unknown.setdefault(page, []).append(command)
            elif not all(_has_action(command, name) for name in action.split("|") if name):
                unknown.setdefault(page, []).append(f"{command} {action}")
    # Then every one exists
    assert unknown == {}


def _has_action(command: str, action: str) -> bool:
    """A command with sub-commands (`local up`) must define this one; others take arguments."""
    module = cli.COMMANDS[command][0]
    source = (ROOT / "layers" / "twelvefactor" / "commands" / f"{module}.py").read_text(encoding="utf-8")
    if "add_subparsers" not in source:
        return True
    return f'add_parser("{action}"' in source


@pytest.mark.parametrize(
    ("markdown", "targets"),
    [
        ("Run `make test` and `make demo ARGS=--yes`.", {"test", "demo"}),
        ("```bash\nmake validate\n$ make build ARCH=arm64\n```", {"validate", "build"}),
        ("To make sure it works, make it fast.", set()),
    ],
)
def test_make_targets_are_read_from_code_only(markdown: str, targets: set[str]) -> None:
    # Given a page naming make targets in code and the word "make" in prose
    # When the named targets are extracted
    found = {target for code in code_of(markdown) for target in _MAKE.findall(code)}
    # Then exactly the ones in code are found
    assert found == targets
