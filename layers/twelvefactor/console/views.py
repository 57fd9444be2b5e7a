"""What the console's pages show, computed from the API's answers and the events themselves.

Status, waits and steps come from `twelvefactor.core.state` (the same derivations the runtime uses);
each event is shown as the model sees it (the agent's own context rendering) and raw.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from ..commands.threads import SequencedEvent, describe
from ..core import state
from ..core.agent import Agent
from ..core.events import (
    ApprovalRequested,
    Done,
    Error,
    Escalation,
    Event,
    HumanRequest,
    ToolCall,
    dump_event,
)
from ..core.state import ThreadStatus

Filter = Literal["all", "waiting", "escalated", "running", "finished"]
FILTERS: dict[Filter, str] = {
    "all": "All",
    "waiting": "Waiting for a person",
    "escalated": "Escalated",
    "running": "Running",
    "finished": "Finished",
}


def phase(status: ThreadStatus, events: Sequence[Event]) -> Filter:
    """Which filter a thread falls under: an escalation waits for a person too, but is its own kind."""
    if status.is_final:
        return "finished"
    if events and isinstance(events[-1], Escalation):
        return "escalated"
    if status in (ThreadStatus.AWAITING_APPROVAL, ThreadStatus.AWAITING_HUMAN):
        return "waiting"
    return "running"


def model_steps(events: Sequence[Event]) -> int:
    """How many times the model was asked (a decision, or an answer that was no valid decision)."""
    return sum(
        1
        for event in events
        if (isinstance(event, ToolCall) and event.data.origin == "model")
        or isinstance(event, HumanRequest | Done)
        or (isinstance(event, Error) and event.data.source == "llm")
    )


def is_model_decision(event: Event) -> bool:
    return model_steps([event]) == 1


def age(since: datetime, now: datetime | None = None) -> str:
    seconds = int(((now or datetime.now(UTC)) - since).total_seconds())
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{max(seconds, 0)} s"


@dataclass(frozen=True)
class ThreadRow:
    thread_id: str
    agent: str
    channel: str
    created_at: datetime
    status: ThreadStatus
    phase: Filter
    steps: int
    tokens: int
    cost_usd: str | None  # as GET /threads/{id} answers it: None when the model's price is unknown

    @property
    def age(self) -> str:
        return age(self.created_at)

    @property
    def cost(self) -> str:
        """An unknown price is shown as such, never as $0 (that would read as free)."""
        return "unknown" if self.cost_usd is None else f"${self.cost_usd}"


def thread_row(view: dict[str, Any], events: Sequence[Event]) -> ThreadRow:
    created = datetime.fromisoformat(str(view["created_at"]))
    # From the events read after the view, so the status and the timeline shown always agree.
    status = state.status(events)
    return ThreadRow(
        thread_id=view["thread_id"],
        agent=view["agent"],
        channel=view["channel"],
        created_at=created if created.tzinfo else created.replace(tzinfo=UTC),
        status=status,
        phase=phase(status, events),
        steps=model_steps(events),
        tokens=state.total_tokens(events),
        cost_usd=None if view.get("cost_usd") is None else str(view["cost_usd"]),
    )


@dataclass(frozen=True)
class TimelineItem:
    seq: int
    type: str
    at: datetime
    summary: str
    context: str | None  # the tagged block the model reads for this event (None: the agent hides it)
    raw: str
    decision: bool  # a model decision: its exact request can be shown
    tokens: int | None


def timeline(agent: Agent | None, items: Sequence[SequencedEvent]) -> list[TimelineItem]:
    arguments: dict[str, Any] = {}
    found = []
    for item in items:
        event = item.event
        if isinstance(event, ToolCall):
            arguments[event.data.call_id] = event.data.arguments
        usage = getattr(event, "usage", None)
        found.append(
            TimelineItem(
                seq=item.seq,
                type=event.type,
                at=event.at,
                summary=describe(event),
                context=agent.context.render_event(event, arguments) if agent is not None else None,
                raw=json.dumps(dump_event(event), indent=2, ensure_ascii=False),
                decision=is_model_decision(event),
                tokens=usage.total_tokens if usage is not None else None,
            )
        )
    return found


@dataclass(frozen=True)
class Pending:
    """What the thread waits for from a person, and how to answer it."""

    kind: Literal["approval", "question", "escalation"]
    title: str
    detail: str
    choices: tuple[str, ...] = ()


def pending(events: Sequence[Event]) -> Pending | None:
    approval = state.awaiting_approval(events)
    if approval is not None:
        return _approval(approval)
    waiting = state.awaiting_human(events)
    if isinstance(waiting, HumanRequest):
        return Pending("question", "The agent asks", waiting.data.question, tuple(waiting.data.choices))
    if isinstance(waiting, Escalation):
        return Pending("escalation", f"Escalated ({waiting.data.reason})", waiting.data.message)
    return None


def _approval(request: ApprovalRequested) -> Pending:
    arguments = ", ".join(f"{name}={json.dumps(value)}" for name, value in request.data.arguments.items())
    return Pending("approval", "Approval needed", f"{request.data.intent}({arguments})")
