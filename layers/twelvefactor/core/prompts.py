"""Own your prompts (factor 2): Jinja templates in ``prompts/<agent>.jinja``.

A template defines a ``system`` block and a ``user`` block; each becomes one chat message. The
environment is sandboxed (a template cannot reach Python internals) and undefined names fail
loudly instead of rendering as empty text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from .agent import Agent
from .events import Thread
from .ports import ChatMessage

MESSAGE_BLOCKS = ("system", "user")


class JinjaPrompts:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._env = SandboxedEnvironment(
            loader=FileSystemLoader(directory),
            undefined=StrictUndefined,
            autoescape=False,  # the context renderer already escaped every untrusted value
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def variables(self, agent: Agent, thread: Thread) -> dict[str, Any]:
        """Everything a template can use. Task tokens and secrets are never in here."""
        intents = agent.intents
        return {
            "agent": {"name": agent.name, "description": agent.description},
            "thread": agent.context.render(thread.events),
            "intents": [
                {"name": name, "description": (model.__doc__ or "").strip()}
                for name, model in intents.by_name.items()
            ],
            "tools_schema": json.dumps(intents.json_schema(), indent=2, sort_keys=True),
        }

    def render(self, agent: Agent, thread: Thread) -> list[ChatMessage]:
        template = self._env.get_template(agent.template_name)
        context = template.new_context(self.variables(agent, thread))
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
