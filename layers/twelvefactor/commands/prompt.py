"""``twelvefactor prompt render AGENT --thread FILE.json``: what the LLM receives, exactly (factor 2).

The chat messages come from the agent's real template rendered by the same code the reducer uses,
with the thread rendered as context (escaped, truncated, redacted). The structured-output part is
the one the OpenAI adapter sends in the chosen mode (``LLM_OUTPUT_MODE`` unless ``--mode``), narrowed
to what `twelvefactor.core.control.offer` offers at this point of the thread, as the reducer would. A bad
agent name, thread file or template is reported on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, get_args

from jinja2 import TemplateError, TemplateNotFound

from twelvefactor import application
from twelvefactor.adapters.llm import guided_schema, strict_schema, tool_definitions
from twelvefactor.application import Application
from twelvefactor.commands.threads import UnusableThreadFile, thread_from_document
from twelvefactor.core import control
from twelvefactor.core.agent import Agent
from twelvefactor.core.errors import UnknownAgent
from twelvefactor.core.events import Thread
from twelvefactor.core.ports import ChatMessage
from twelvefactor.core.prompts import JinjaPrompts
from twelvefactor.core.tools import IntentSet
from twelvefactor.settings import LlmSettings, OutputMode

EXIT_UNUSABLE = 2


class UnusableInput(Exception):
    """An argument or file the command cannot use; the message says which and why."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    render_parser = actions.add_parser("render", help="print an agent's chat messages and output schema")
    render_parser.add_argument("agent", metavar="AGENT", help="the agent's name in the registry")
    render_parser.add_argument(
        "--thread",
        type=Path,
        required=True,
        metavar="FILE.json",
        help="a saved thread: what GET /threads/{id} answers, `twelvefactor threads show ID --json` "
        "prints, or `twelvefactor eval --export-threads` writes",
    )
    render_parser.add_argument(
        "--prompts-dir",
        type=Path,
        metavar="DIR",
        help="templates to use (default: PROMPTS_DIR, else the repo's)",
    )
    render_parser.add_argument(
        "--mode",
        choices=get_args(OutputMode),
        help="structured-output mode to show (default: LLM_OUTPUT_MODE)",
    )
    render_parser.set_defaults(run=run_render)


def run_render(args: argparse.Namespace) -> int:
    app = application.load()
    try:
        agent = _agent(args.agent, app)
        thread = _thread(args.thread, agent)
        prompts_dir: Path = args.prompts_dir or app.prompts_dir
        mode: OutputMode = args.mode or LlmSettings().output_mode
        request = render_request(agent, thread, prompts_dir, mode)
    except UnusableInput as error:
        print(f"twelvefactor prompt render: {error}", file=sys.stderr)
        return EXIT_UNUSABLE
    print(request, end="")
    return 0


def render_request(agent: Agent, thread: Thread, prompts_dir: Path, mode: OutputMode) -> str:
    """The exact request the model gets for the next decision on ``thread``, as text: what this
    command prints and what the console shows for a model decision (UnusableInput if it cannot)."""
    # The reducer's own narrowing for this thread: the same offer shapes prompt and schema.
    offered = control.offer(agent, thread)
    messages = _messages(JinjaPrompts(prompts_dir, output_mode=mode), agent, thread, offered)
    return format_request(messages, mode, offered)


def format_request(messages: list[ChatMessage], mode: OutputMode, offered: control.Offer) -> str:
    sections = [f"=== {message['role']} ===\n{message['content']}\n" for message in messages]
    schema = json.dumps(structured_output(mode, offered.intents), indent=2, sort_keys=True)
    sections.append(f"=== structured output ({mode}) ===\n{schema}\n")
    if offered.withheld:
        withheld = "".join(f"- {name}: {reason}\n" for name, reason in offered.withheld.items())
        sections.append(f"=== not offered at this decision ===\n{withheld}")
    return "\n".join(sections)


def structured_output(mode: OutputMode, intents: IntentSet) -> Any:
    """The schema part of the request, as the OpenAI adapter builds it for this mode."""
    match mode:
        case "json_schema":
            return strict_schema(intents)
        case "json_object":
            return guided_schema(intents)
        case "tools":
            return tool_definitions(intents)


def _agent(name: str, app: Application) -> Agent:
    registry = app.build_registry()
    try:
        return registry.get(name)
    except UnknownAgent:
        known = ", ".join(registry.names) or "none"
        raise UnusableInput(f"no agent named {name!r} (known agents: {known})") from None


def _thread(path: Path, agent: Agent) -> Thread:
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise UnusableInput(f"cannot read thread file {path}: {error.strerror or error}") from None
    try:
        thread = thread_from_document(raw, f"thread file {path}")
    except UnusableThreadFile as error:
        raise UnusableInput(str(error)) from None
    if thread.agent != agent.name:
        raise UnusableInput(f"thread file {path} belongs to agent {thread.agent!r}, not {agent.name!r}")
    return thread


def _messages(
    prompts: JinjaPrompts, agent: Agent, thread: Thread, offered: control.Offer
) -> list[ChatMessage]:
    template = prompts.directory / agent.template_name
    try:
        return prompts.render(agent, thread, offered)
    except TemplateNotFound:
        raise UnusableInput(f"no template {template} (give --prompts-dir or set PROMPTS_DIR)") from None
    except TemplateError as error:
        raise UnusableInput(f"cannot render {template}: {type(error).__name__}: {error}") from None
    except ValueError as error:  # a template without a system or user block
        raise UnusableInput(f"cannot render from {prompts.directory}: {error}") from None
