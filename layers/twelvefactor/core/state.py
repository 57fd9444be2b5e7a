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
    # A decided (or approved) tool call waits to be executed or dispatched, or one that was cleared to
    # run never got its outcome recorded (its reducer failed for good) and must be settled first.
    TOOL_PENDING = "tool_pending"
    AWAITING_APPROVAL = "awaiting_approval"
    AWAITING_HUMAN = "awaiting_human"  # a question or an escalation waits for a person
    AWAITING_CALLBACK = "awaiting_callback"  # an async tool's result arrives through a callback
    DONE = "done"
    # A cancel arrived while a call cleared to run (approved, or needing no approval) had no outcome
    # yet: the call is not abandoned halfway. It runs (or finishes) and its result or error is
    # recorded; then the thread is cancelled. Nothing else is accepted meanwhile.
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"

    @property
    def is_waiting(self) -> bool:
        return self in _WAITING

    @property
    def is_runnable(self) -> bool:
        return self in (ThreadStatus.READY, ThreadStatus.TOOL_PENDING, ThreadStatus.CANCELLING)

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
        # Every executor call that ran is recorded: a cancel takes effect once the call it found
        # cleared to run has an outcome (or was given up on after workflow failures).
        return ThreadStatus.CANCELLING if unsettled_tool_call(events) is not None else ThreadStatus.CANCELLED
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
    # A call just decided or approved is unsettled, and so is one whose reducer died after running
    # it, however many answers and messages came since: it runs (again, under its own call id and
    # so its own idempotency key) before the model is asked anything.
    return ThreadStatus.TOOL_PENDING if unsettled_tool_call(events) is not None else ThreadStatus.READY


def pending_tool_call(events: Sequence[Event]) -> ToolCall | None:
    """The tool call to run now: one just decided, one a human just approved, or one left unsettled
    (also when a cancel waits for it)."""
    if status(events) not in (ThreadStatus.TOOL_PENDING, ThreadStatus.CANCELLING):
        return None
    return unsettled_tool_call(events)


# A call whose re-run (after a person answered its failure) failed again is given up on: the next
# answer goes to the model instead, so a call that always kills the reducer cannot trap the thread.
MAX_FAILURES_PER_CALL = 2


def unsettled_tool_call(events: Sequence[Event]) -> ToolCall | None:
    """The latest tool call if it was cleared to run (no approval needed, or approved) and nothing
    records its outcome: no result, no dispatch, no error, no rejection.

    Only the latest call can be unsettled: the model is never asked while a call is pending. So a
    model decision after the call (a question, a model error, `done`) means the thread moved on:
    older threads, or a call given up on after MAX_FAILURES_PER_CALL workflow failures. A cancel
    does not settle a call: the call was cleared to run before it, so it runs to its outcome."""
    settled: set[str] = set()
    gated: set[str] = set()
    approved: set[str] = set()
    failures = 0
    for event in reversed(events):
        match event:
            case ToolCall(data=call):
                cleared = call.call_id not in gated or call.call_id in approved
                given_up = failures >= MAX_FAILURES_PER_CALL
                return event if cleared and call.call_id not in settled and not given_up else None
            case HumanRequest() | Done():
                return None
            case Error(data=error) if error.call_id is None:
                return None
            case Escalation(data=escalation) if escalation.reason == "workflow_failure":
                failures += 1
            case ToolResult(data=outcome) | ToolDispatched(data=outcome):
                settled.add(outcome.call_id)
            case Error(data=error) if error.call_id is not None:
                settled.add(error.call_id)
            case ApprovalRequested(data=request):
                gated.add(request.call_id)
            case Approval(data=decision):
                (approved if decision.approved else settled).add(decision.call_id)
    return None


def cancel_requested(events: Sequence[Event]) -> bool:
    return any(isinstance(event, Cancelled) for event in events)


def outcome_call_id(event: Event) -> str | None:
    """The call an event records the outcome of: a result, a dispatch or a tool's error."""
    match event:
        case ToolResult(data=outcome) | ToolDispatched(data=outcome):
            return outcome.call_id
        case Error(data=error):
            return error.call_id
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
        if is_model_step(event):
            count += 1
    return count


def is_model_step(event: Event) -> bool:
    """Whether the event records an answer of the model (not prefetch's or completion's code)."""
    match event:
        case ToolCall(data=call):
            return call.origin == "model"
        case Done(data=done):
            return done.origin == "model"
        case HumanRequest():
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
