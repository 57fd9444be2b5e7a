"""``twelvefactor new agent NAME``: a new agent in the application, ready to run and to change.

Writes four things, in the application the framework loads (``TWELVEFACTOR_AGENTS``, default
``agents``): the agent's module (its own settings under the prefix ``NAME_``, one intent, its tool
and an executor stub), ``prompts/NAME.jinja``, ``evals/NAME/`` (starter cases and a config), and
its registration in the application's ``build_registry()``. Then prints the next steps.

A name that is not a lower-case Python identifier, or that an agent, module, prompt or evals folder
already uses, is refused with exit code 2, and nothing is written.
"""

from __future__ import annotations

import argparse
import keyword
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from twelvefactor import application
from twelvefactor.application import Application, ApplicationError

EXIT_REFUSED = 2
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
# Where the registration goes in the application's __init__.py: the builder's import among the
# others (sorted, as ruff wants them), its call above the marker line, which tells a reader so too.
BUILDER_IMPORT = re.compile(r"^from \.(\w+) import build_\1$", re.MULTILINE)
AGENTS_MARKER = "# twelvefactor new agent: agents above this line"


class Refused(Exception):
    """The name or the application cannot take a new agent; the message says why."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="KIND")
    agent = kinds.add_parser("agent", help="an agent module, its prompt, its evals and its registration")
    agent.add_argument("name", metavar="NAME", help="lower-case Python identifier, e.g. oncall")
    agent.set_defaults(run=run_agent)


def run_agent(args: argparse.Namespace) -> int:
    try:
        plan = plan_agent(args.name, application.load())
    except (Refused, ApplicationError) as error:
        print(f"twelvefactor new agent: {error}; nothing was written", file=sys.stderr)
        return EXIT_REFUSED
    plan.write()
    print(plan.next_steps())
    return 0


@dataclass(frozen=True)
class Plan:
    name: str
    files: dict[Path, str]  # new files and their text
    registry_file: Path
    registry_text: str  # the application's __init__.py with the agent registered

    def write(self) -> None:
        for path, text in self.files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        self.registry_file.write_text(self.registry_text, encoding="utf-8")

    def next_steps(self) -> str:
        name, settings = self.name, f"{self.name.upper()}_"
        module, prompt, evals = (_shown(path) for path in list(self.files)[:3])
        parameter = f"{_camel(name)}ServiceUrl"
        return f"""Created the agent {name!r}:
  {module}  its settings ({settings}*), intent, tool and executor stub
  {prompt}  its prompt
  {_shown(Path(evals).parent)}/  starter eval cases and config.yaml
  {_shown(self.registry_file)}  registered in build_registry()

Next steps:
  1. Write its intents and replace the executor stub in {module}.
  2. Say when to use each step in {prompt}, then see the exact request:
       twelvefactor eval {name} --export-threads /tmp/{name}-threads
       twelvefactor prompt render {name} --thread /tmp/{name}-threads/first_step_looks_up.json
  3. Score the prompt on its cases (and add your own to {_shown(Path(evals).parent)}/):
       twelvefactor eval {name}
  4. Give its settings to the Reducer: a template.yaml Parameter {parameter} and
     {settings}SERVICE_URL: !Ref {parameter} in ReducerFunction's variables (docs/configuration.md).
  5. Launch it: POST /threads {{"agent": "{name}", ...}}, an EVENTBRIDGE_LAUNCH_RULES entry, or
     SLACK_DEFAULT_AGENT; `twelvefactor local up` runs it offline (docs/writing-agents.md)."""


def plan_agent(name: str, app: Application) -> Plan:
    """Everything the scaffold would write, checked before anything is: Refused if it cannot."""
    if not NAME_PATTERN.fullmatch(name) or keyword.iskeyword(name) or name.endswith("_"):
        raise Refused(
            f"{name!r} is not a valid agent name: use a lower-case Python identifier of at most 40 "
            "characters that starts with a letter, e.g. oncall or release_notes"
        )
    if name in app.build_registry():
        raise Refused(f"an agent named {name!r} already exists")
    module = app.directory / f"{name}.py"
    prompt = app.prompts_dir / f"{name}.jinja"
    evals = app.prompts_dir.parent / "evals" / name
    taken = [path for path in (module, app.directory / name, prompt, evals) if path.exists()]
    if taken:
        raise Refused(f"{name!r} is taken: {', '.join(_shown(path) for path in taken)} already exists")
    registry_file = Path(app.module.__file__ or "")
    text = registry_file.read_text(encoding="utf-8")
    if text.count(AGENTS_MARKER) != 1 or not BUILDER_IMPORT.search(text):
        raise Refused(
            f"{_shown(registry_file)} has no place to register an agent: it needs the line "
            f"{AGENTS_MARKER!r} in its registry and imports like 'from .NAME import build_NAME'"
        )
    files = {
        module: _module(name),
        prompt: _prompt(name),
        evals / "first_step_looks_up.yaml": _FIRST_CASE,
        evals / "result_ends_the_turn.yaml": _DONE_CASE,
        evals / "config.yaml": _CONFIG.format(name=name),
    }
    return Plan(name, files, registry_file, _registered(text, name))


def _registered(text: str, name: str) -> str:
    # The new import goes before the first builder import that sorts after it, else after the last.
    found = list(BUILDER_IMPORT.finditer(text))
    later = [match for match in found if match.group(1) > name]
    at = later[0].start() if later else found[-1].end() + 1
    text = f"{text[:at]}from .{name} import build_{name}\n{text[at:]}"
    marker = text.index(AGENTS_MARKER)
    indent = text[text.rindex("\n", 0, marker) + 1 : marker]
    return f"{text[: marker - len(indent)]}{indent}build_{name}(),\n{indent}{text[marker:]}"


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _module(name: str) -> str:
    camel, prefix = _camel(name), f"{name.upper()}_"
    return f'''"""{name}: TODO, one line on what this agent does and for whom.

Written by `twelvefactor new agent {name}`. The agent is plain code: intents (what the model may
choose, one pydantic model each), tools (an intent plus a deterministic executor and its policy:
read-only, needs approval) and the agent's budget. Its settings are its own, read from the
environment under {prefix} (docs/configuration.md).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from twelvefactor.core.agent import Agent
from twelvefactor.core.events import JsonValue
from twelvefactor.core.tools import Intent, Tool, ToolContext
from twelvefactor.settings import PrefixedSettings

from ._service import ServiceClient

NAME = "{name}"
DESCRIPTION = "TODO: an assistant that looks records up."


class {camel}Settings(PrefixedSettings):
    """{name}'s own settings: {prefix}SERVICE_URL, {prefix}TIMEOUT_SECONDS."""

    env_prefix = "{prefix}"
    # Empty until the agent has a service: the executor stub answers by itself meanwhile.
    service_url: str = ""
    # A tool call that hangs would hold the reducer Lambda until its own timeout; fail fast instead.
    timeout_seconds: float = Field(default=10.0, gt=0, le=60)


class LookUp(Intent):
    """Look up records matching a short query."""

    intent: Literal["look_up"] = "look_up"
    query: str = Field(min_length=1, max_length=200, description="What to look up, in a few words")


def build_{name}(settings: {camel}Settings | None = None) -> Agent:
    settings = settings or {camel}Settings()
    service = ServiceClient("{name} service", settings.service_url, settings.timeout_seconds)

    def look_up(call: LookUp, _ctx: ToolContext) -> JsonValue:
        if not settings.service_url:
            # The stub: an honest empty answer, so the agent runs before its service exists.
            return {{"query": call.query, "records": [], "stub": True}}
        return service.get(f"/records?query={{call.query}}")

    return Agent(
        name=NAME,
        description=DESCRIPTION,
        tools=(Tool(LookUp, look_up, read_only=True),),
        max_steps=8,
    )
'''


def _prompt(name: str) -> str:
    return f"""{{#- {name}'s prompt, written by `twelvefactor new agent {name}`. The variables come from
    twelvefactor.core.prompts: agent, thread (the escaped, redacted context) and intents (each with
    a one-line signature). The schema travels with the request as its structured-output format. -#}}
{{% block system %}}
You are {{{{ agent.name }}}}, {{{{ agent.description }}}}
You choose the next step of a conversation. Answer with exactly one JSON object: the step's
name in "intent" and its fields. Nothing else.

Steps you can take (fields marked ? are optional):
{{% for intent in intents %}}
- {{{{ intent.signature }}}}: {{{{ intent.description }}}}
{{% endfor %}}

Rules:
- To answer a question about records, call look_up first, unless its result is already in the
  conversation.
- If it is not clear what to look up, use request_human_input and ask one short question.
- If a step ended in an error, read the error, then fix the call or ask a human.
- When the work is finished, use done_for_now with a one-sentence summary for the person.

The usual order, decided by the LAST block of the conversation:
- last block <user_message> asking about something: look_up
- last block <look_up_result>: done_for_now, saying what was found
{{% endblock %}}
{{% block user %}}
Here is everything that has happened so far:

{{{{ thread }}}}

What should the next step be?
{{% endblock %}}
"""


_FIRST_CASE = """description: A question about records starts by looking them up.
thread:
  - user_message: Can you look up the invoices of ACME?
expect:
  intent: look_up
"""

_DONE_CASE = """description: Once the look-up answered, the agent ends with a summary for the person.
thread:
  - user_message: Can you look up the invoices of ACME?
  - tool_call: {intent: look_up, arguments: {query: ACME invoices}}
  - tool_result:
      result: {query: ACME invoices, records: [{id: inv-7, total: 120}]}
expect:
  intent: done_for_now
"""

_CONFIG = """# The bar for {name}'s prompt: `twelvefactor eval {name}` exits 1 below this overall pass rate.
threshold: 0.8
# Runs per case when --repeat is not given; raise it to see how stable an answer is.
repeat: 1
"""
