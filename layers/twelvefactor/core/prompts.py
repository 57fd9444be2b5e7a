"""Own your prompts (factor 2): Jinja templates in ``prompts/<agent>.jinja``.

A template defines a ``system`` block and a ``user`` block; each becomes one chat message. The
environment is sandboxed (a template cannot reach Python internals) and undefined names fail
loudly instead of rendering as empty text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from .agent import Agent
from .control import Offer, offer
from .events import Thread
from .ports import ChatMessage
from .tools import Intent

MESSAGE_BLOCKS = ("system", "user")
MAX_ENUM_SHOWN = 12
# How to answer, worded for the output mode the adapter uses (`LLM_OUTPUT_MODE`): in tools mode the
# model calls a function; in json_schema mode its answer is wrapped as {"step": ...}.
ANSWER_FORMATS = {
    "json_object": 'Answer with exactly one JSON object: the step\'s name in "intent" and its fields.',
    "json_schema": (
        'Answer with exactly one JSON object whose "step" holds the step: its name in "intent" and '
        "its fields."
    ),
    "tools": "Answer by calling exactly one of the functions (one per step) with its fields.",
}


class JinjaPrompts:
    def __init__(self, directory: Path, output_mode: str = "json_object") -> None:
        if output_mode not in ANSWER_FORMATS:
            raise ValueError(f"unknown output mode {output_mode!r}: one of {', '.join(ANSWER_FORMATS)}")
        self.directory = directory
        self.output_mode = output_mode
        self._env = SandboxedEnvironment(
            loader=FileSystemLoader(directory),
            undefined=StrictUndefined,
            autoescape=False,  # the context renderer already escaped every untrusted value
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def variables(self, agent: Agent, thread: Thread, offered: Offer | None = None) -> dict[str, Any]:
        """Everything a template can use. Task tokens and secrets are never in here.

        ``intents`` is the agent's whole catalogue, the same at every decision (it belongs in the
        cacheable prefix); ``offered`` is what code offers at this decision, grounded values
        included (it belongs at the end of the request)."""
        offered = offered or offer(agent, thread)
        schema = agent.intents.json_schema()
        return {
            "agent": {"name": agent.name, "description": agent.description},
            "thread": agent.context.render(thread.events),
            "intents": _listed(agent.intents.by_name, schema),
            "offered": _listed(offered.intents.by_name, offered.intents.json_schema()),
            "answer_format": ANSWER_FORMATS[self.output_mode],
            # For wording a template varies by mode (e.g. no JSON examples when the answer is a call).
            "output_mode": self.output_mode,
            "tools_schema": json.dumps(schema, indent=2, sort_keys=True),
        }

    def render(self, agent: Agent, thread: Thread, offered: Offer | None = None) -> list[ChatMessage]:
        template = self._env.get_template(agent.template_name)
        context = template.new_context(self.variables(agent, thread, offered))
        messages: list[ChatMessage] = []
        for role in MESSAGE_BLOCKS:
            if role not in template.blocks:
                continue
            content = "".join(template.blocks[role](context)).strip()
            if content:
                messages.append({"role": role, "content": content})  # type: ignore[typeddict-item]
        if not messages:
            raise ValueError(f"{agent.template_name} defines no system or user block")
        return messages


def _listed(models: Mapping[str, type[Intent]], schema: dict[str, Any]) -> list[dict[str, str]]:
    return [
        {
            "name": name,
            "description": (model.__doc__ or "").strip(),
            "signature": signature(name, schema["$defs"][model.__name__]),
        }
        for name, model in models.items()
    ]


def signature(name: str, definition: dict[str, Any]) -> str:
    """A one-line form of an intent, e.g. ``deploy_backend(tag: string, environment: staging|production)``.

    A fraction of the JSON Schema's tokens: prompts list the steps with it, while the full schema
    travels in the request's structured-output parameters (and stays available as `tools_schema`).
    Optional fields end in ``?``.
    """
    required = set(definition.get("required", ()))
    fields = [
        f"{field}{'' if field in required else '?'}: {_type_of(spec)}"
        for field, spec in definition.get("properties", {}).items()
        if field != "intent"
    ]
    return f"{name}({', '.join(fields)})"


def _type_of(spec: dict[str, Any]) -> str:
    if "enum" in spec:
        values = [str(value) for value in spec["enum"]]
        # A grounded field may allow thousands of values (every tag listed): the schema carries them
        # all, the prompt's one-line signature only the first few, so it stays within its budget.
        if len(values) > MAX_ENUM_SHOWN:
            return "|".join(values[:MAX_ENUM_SHOWN]) + f"|… ({len(values)} values)"
        return "|".join(values)
    if "const" in spec:
        return str(spec["const"])
    if "anyOf" in spec:
        return "|".join(_type_of(option) for option in spec["anyOf"])
    if spec.get("type") == "array":
        return f"list[{_type_of(spec.get('items', {}))}]"
    return str(spec.get("type", "any"))
