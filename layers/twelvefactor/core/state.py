"""Execution state derived from the event list (factor 5: execution state *is* business state).

Nothing here is stored: every answer is computed from the events, so a thread loaded from
DynamoDB, from a file or rebuilt by a test means exactly the same thing everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from .events import (
    Approval,
    ApprovalRequested,
    Cancelled,
    DecisionEvent,
    Done,
    Error,
    Escalation,
    Event,
    HumanRequest,
    HumanResponse,
    ToolCall,
    ToolDispatched,
    ToolResult,
    UserMessage,
)


class ThreadStatus(StrEnum):
    READY = "ready"  # the model decides the next step
    TOOL_PENDING = "tool_pending"  # a decided (or approved) tool call waits to be executed or dispatched
    AWAITING_APPROVAL = "awaiting_approval"
    AWAITING_HUMAN = "awaiting_human"  # a question or an escalation waits for a person
    AWAITING_CALLBACK = "awaiting_callback"  # an async tool's result arrives through a callback
    DONE = "done"
    CANCELLED = "cancelled"

    @property
    def is_waiting(self) -> bool:
        return self in _WAITING

    @property
    def is_runnable(self) -> bool:
        return self in (ThreadStatus.READY, ThreadStatus.TOOL_PENDING)

    @property
    def is_final(self) -> bool:
        return self in (ThreadStatus.DONE, ThreadStatus.CANCELLED)


_WAITING = frozenset(
    {ThreadStatus.AWAITING_APPROVAL, ThreadStatus.AWAITING_HUMAN, ThreadStatus.AWAITING_CALLBACK}
)

# What a person (or the outside world) says starts a new "launch": budgets count from there.
_HUMAN_TURN = (UserMessage, HumanResponse, Approval)
# Any of these proves the loop is making progress, so the error streak starts again.
_SUCCESS = (ToolResult, UserMessage, HumanResponse, Approval)


def status(events: Sequence[Event]) -> ThreadStatus:
    """Where the thread stands, read off its last events."""
    if not events:
        return ThreadStatus.READY
    if any(isinstance(event, Cancelled) for event in events):
        return ThreadStatus.CANCELLED
    last = events[-1]
    match last:
        case Done():
            return ThreadStatus.DONE
        case ApprovalRequested():
            return ThreadStatus.AWAITING_APPROVAL
        case HumanRequest() | Escalation():
            return ThreadStatus.AWAITING_HUMAN
        case ToolCall():
            return ThreadStatus.TOOL_PENDING
        case ToolDispatched():
            return ThreadStatus.AWAITING_CALLBACK
        case Approval(data=decision) if decision.approved:
            return ThreadStatus.TOOL_PENDING
        case _:
            return ThreadStatus.READY


def pending_tool_call(events: Sequence[Event]) -> ToolCall | None:
    """The tool call to run now: one just decided, or the one a human just approved."""
    if status(events) is not ThreadStatus.TOOL_PENDING:
        return None
    last = events[-1]
    if isinstance(last, ToolCall):
        return last
    assert isinstance(last, Approval)
    return find_tool_call(events, last.data.call_id)


def find_tool_call(events: Sequence[Event], call_id: str) -> ToolCall | None:
    for event in reversed(events):
        if isinstance(event, ToolCall) and event.data.call_id == call_id:
            return event
    return None


def awaiting_approval(events: Sequence[Event]) -> ApprovalRequested | None:
    last = events[-1] if events else None
    return last if isinstance(last, ApprovalRequested) else None


def awaiting_human(events: Sequence[Event]) -> HumanRequest | Escalation | None:
    last = events[-1] if events else None
    return last if isinstance(last, HumanRequest | Escalation) else None


def awaiting_callback(events: Sequence[Event]) -> ToolDispatched | None:
    last = events[-1] if events else None
    return last if isinstance(last, ToolDispatched) else None


def consecutive_errors(events: Sequence[Event]) -> int:
    """Errors since the last sign of progress (a tool result or anything a person said)."""
    count = 0
    for event in reversed(events):
        if isinstance(event, _SUCCESS):
            break
        if isinstance(event, Error):
            count += 1
    return count


def steps_since_launch(events: Sequence[Event]) -> int:
    """How many times the model was asked since a person last spoke to the thread."""
    count = 0
    for event in reversed(events):
        if isinstance(event, _HUMAN_TURN):
            break
        if _is_model_step(event):
            count += 1
    return count


def _is_model_step(event: Event) -> bool:
    match event:
        case ToolCall(data=call):
            return call.origin == "model"
        case HumanRequest() | Done():
            return True
        case Error(data=error):
            return error.source == "llm"
    return False


def total_tokens(events: Sequence[Event]) -> int:
    return sum(
        event.usage.total_tokens
        for event in events
        if isinstance(event, DecisionEvent) and event.usage is not None
    )
