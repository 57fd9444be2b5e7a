"""A tiny deploy agent for the core's unit tests, with executors that record every call.

It mirrors the seed's deploybot on purpose (list_git_tags, then deploy_backend(tag, environment)
where production needs approval) but lives here so the core is proven without the real agents
package. `run_migration` is an async tool: it is dispatched and its result arrives by callback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from twelvefactor.core import replies
from twelvefactor.core.agent import Agent, Prefetch
from twelvefactor.core.context import BodyRenderer, ContextPolicy
from twelvefactor.core.events import Event, Thread
from twelvefactor.core.ports import Ports
from twelvefactor.core.prompts import JinjaPrompts
from twelvefactor.core.reducer import run_until_paused
from twelvefactor.core.tools import Intent, Tool, ToolContext
from twelvefactor.local.scripted import ScriptedModel, ScriptedReply

AGENT_NAME = "shipper"
TAGS = ["v1.2.3", "v1.2.2", "v1.2.1"]

# The smallest template that shows everything a template can use.
MINIMAL_TEMPLATE = """\
{% block system %}
You are {{ agent.name }}: {{ agent.description }}
Intents:
{% for intent in intents %}
- {{ intent.name }}: {{ intent.description }}
{% endfor %}
Answer with one JSON object matching this schema:
{{ tools_schema }}
{% endblock %}
{% block user %}
{{ thread }}

What is the next step?
{% endblock %}
"""


class ListGitTags(Intent):
    """List the git tags that can be deployed, newest first."""

    intent: Literal["list_git_tags"] = "list_git_tags"


class DeployBackend(Intent):
    """Deploy a tag of the backend to an environment."""

    intent: Literal["deploy_backend"] = "deploy_backend"
    tag: str
    environment: Literal["staging", "production"]


class RunMigration(Intent):
    """Start a database migration; its result arrives later."""

    intent: Literal["run_migration"] = "run_migration"
    tag: str


def production_only(call: DeployBackend) -> bool:
    return call.environment == "production"


@dataclass
class DeployService:
    """Stands in for the deployment service; `calls` is the record tests assert on."""

    tags: list[str] = field(default_factory=lambda: list(TAGS))
    fail_with: Exception | None = None
    calls: list[tuple[str, dict[str, Any], str]] = field(default_factory=list)

    def _record(self, call: Intent, ctx: ToolContext) -> None:
        self.calls.append((call.intent, call.model_dump(exclude={"intent"}), ctx.idempotency_key))
        if self.fail_with is not None:
            raise self.fail_with

    def list_git_tags(self, call: ListGitTags, ctx: ToolContext) -> dict[str, Any]:
        self._record(call, ctx)
        return {"tags": self.tags}

    def deploy_backend(self, call: DeployBackend, ctx: ToolContext) -> dict[str, Any]:
        self._record(call, ctx)
        return {"deployed": call.tag, "environment": call.environment}

    def run_migration(self, call: RunMigration, ctx: ToolContext) -> dict[str, Any]:
        self._record(call, ctx)
        return {"job": f"migration-{ctx.call_id}"}

    def names(self) -> list[str]:
        return [name for name, _arguments, _key in self.calls]


def build_agent(
    service: DeployService,
    *,
    max_steps: int = 20,
    max_consecutive_errors: int = 3,
    prefetch: Prefetch | None = None,
    renderers: dict[str, BodyRenderer] | None = None,
    context_policy: ContextPolicy | None = None,
    context_budget_chars: int = 24_000,
    max_value_chars: int = 2_000,
    migration_needs_approval: bool = False,
) -> Agent:
    return Agent(
        name=AGENT_NAME,
        description="deploys the backend",
        tools=(
            Tool(ListGitTags, service.list_git_tags, read_only=True),
            Tool(DeployBackend, service.deploy_backend, requires_approval=production_only),
            Tool(
                RunMigration, service.run_migration, mode="async", requires_approval=migration_needs_approval
            ),
        ),
        max_steps=max_steps,
        max_consecutive_errors=max_consecutive_errors,
        prefetch=prefetch,
        renderers=renderers or {},
        context_policy=context_policy or ContextPolicy(),
        context_budget_chars=context_budget_chars,
        max_value_chars=max_value_chars,
    )


def write_prompts(directory: Path, template: str = MINIMAL_TEMPLATE) -> Path:
    (directory / f"{AGENT_NAME}.jinja").write_text(template, encoding="utf-8")
    return directory


def intent_json(intent: str, **arguments: Any) -> str:
    """What a well-behaved model answers."""
    return json.dumps({"intent": intent, **arguments})


class StepClock:
    """A clock that ticks one second per reading, so timestamps are distinct and reproducible."""

    def __init__(self, start: datetime = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)) -> None:
        self._ticks: Iterator[int] = iter(range(1_000_000))
        self._start = start

    def __call__(self) -> datetime:
        return self._start + timedelta(seconds=next(self._ticks))


@dataclass
class Harness:
    """One agent, its recording service, a scripted model and a thread, driven like a runtime would."""

    agent: Agent
    service: DeployService
    model: ScriptedModel
    ports: Ports
    thread: Thread

    def launch(self, text: str) -> Thread:
        return self.append(replies.launch(text, at=self.ports.clock(), channel="api"))

    def append(self, events: Sequence[Event]) -> Thread:
        self.thread = self.thread.extended(list(events))
        return self.thread

    def run(self) -> Thread:
        self.thread = run_until_paused(self.agent, self.thread, self.ports)
        return self.thread

    def respond(self, reply: replies.ApprovalReply | replies.TextReply) -> Thread:
        return self.append(replies.respond(self.thread, reply, at=self.ports.clock()))

    def events_of(self, kind: type[Any]) -> list[Any]:
        return [event for event in self.thread.events if isinstance(event, kind)]

    def user_message_seen(self, call: int = -1) -> str:
        """The user message of the model's `call`-th request (the rendered thread lives there)."""
        messages = self.model.calls[call]
        return next(message["content"] for message in messages if message["role"] == "user")


def harness(
    prompts_dir: Path,
    script: Sequence[ScriptedReply],
    *,
    service: DeployService | None = None,
    **agent_options: Any,
) -> Harness:
    service = service or DeployService()
    agent = build_agent(service, **agent_options)
    model = ScriptedModel(script)
    ports = Ports(llm=model, prompts=JinjaPrompts(write_prompts(prompts_dir)), clock=StepClock())
    return Harness(agent, service, model, ports, Thread(id="thread-1", agent=AGENT_NAME))
