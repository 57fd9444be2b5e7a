"""Factors 5 and 12: events are one discriminated union, and execution state is derived from them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from twelvefactor.core import state
from twelvefactor.core.events import (
    EVENT_ADAPTER,
    Approval,
    ApprovalData,
    ApprovalRequested,
    ApprovalRequestedData,
    Cancelled,
    CancelledData,
    Done,
    DoneData,
    Error,
    ErrorData,
    Escalation,
    EscalationData,
    Event,
    HumanRequest,
    HumanRequestData,
    HumanResponse,
    HumanResponseData,
    Thread,
    TokenUsage,
    ToolCall,
    ToolCallData,
    ToolDispatched,
    ToolDispatchedData,
    ToolResult,
    ToolResultData,
    UserMessage,
    UserMessageData,
    dump_event,
    dump_thread,
    parse_event,
    parse_thread,
)
from twelvefactor.core.state import ThreadStatus

T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
USAGE = TokenUsage(prompt_tokens=100, completion_tokens=7)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def user(text: str = "Can you deploy the backend?") -> UserMessage:
    return UserMessage(at=at(0), data=UserMessageData(text=text, channel="slack", sender="U123"))


def call(call_id: str = "call-1", intent: str = "deploy_backend", *, prefetched: bool = False) -> ToolCall:
    arguments = {"tag": "v1.2.3", "environment": "production"}
    origin = "prefetch" if prefetched else "model"
    data = ToolCallData(call_id=call_id, intent=intent, arguments=arguments, origin=origin)
    return ToolCall(at=at(1), usage=USAGE, data=data)


def dispatched(call_id: str = "call-1", intent: str = "deploy_backend") -> ToolDispatched:
    return ToolDispatched(at=at(2), data=ToolDispatchedData(call_id=call_id, intent=intent))


def result(call_id: str = "call-1", intent: str = "deploy_backend") -> ToolResult:
    return ToolResult(at=at(2), data=ToolResultData(call_id=call_id, intent=intent, result={"ok": None}))


def approval_requested(call_id: str = "call-1") -> ApprovalRequested:
    data = ApprovalRequestedData(call_id=call_id, intent="deploy_backend", arguments={"tag": "v1.2.3"})
    return ApprovalRequested(at=at(3), data=data)


def approval(*, approved: bool, call_id: str = "call-1") -> Approval:
    return Approval(at=at(4), data=ApprovalData(call_id=call_id, approved=approved, comment="ok", by="alice"))


def llm_error() -> Error:
    return Error(at=at(5), usage=USAGE, data=ErrorData(source="llm", message="invalid model output"))


def tool_error() -> Error:
    return Error(at=at(5), data=ErrorData(source="tool", message="ConnectionError", call_id="call-1"))


def human_request() -> HumanRequest:
    data = HumanRequestData(question="Which tag?", format="multiple_choice", choices=["v1", "v2"])
    return HumanRequest(at=at(6), usage=USAGE, data=data)


def human_response() -> HumanResponse:
    return HumanResponse(at=at(7), data=HumanResponseData(text="v2", by="alice"))


def escalation() -> Escalation:
    return Escalation(at=at(8), data=EscalationData(reason="error_budget", message="3 errors in a row"))


def done() -> Done:
    return Done(at=at(9), usage=USAGE, data=DoneData(message="Deployed."))


def cancelled() -> Cancelled:
    return Cancelled(at=at(10), data=CancelledData(by="alice", reason="changed my mind"))


ONE_OF_EACH: list[Event] = [
    user(),
    call(),
    result(),
    dispatched(),
    approval_requested(),
    approval(approved=True),
    human_request(),
    human_response(),
    llm_error(),
    escalation(),
    done(),
    cancelled(),
]


@pytest.mark.parametrize("event", ONE_OF_EACH, ids=lambda event: event.type)
def test_every_event_type_round_trips_through_the_type_adapter(event: Event) -> None:
    # Given an event dumped to its JSON envelope
    dumped = dump_event(event)

    # When it is parsed back from a dict and from JSON text
    from_dict = parse_event(dumped)
    from_text = parse_event(json.dumps(dumped))

    # Then the same typed event comes back, chosen by its `type`
    assert set(dumped) >= {"type", "id", "at", "data"}
    assert from_dict == event
    assert from_text == event
    assert type(from_dict) is type(event)


def test_the_union_covers_every_event_type() -> None:
    # The parametrized round trip above must cover the whole union, or a new type goes untested.
    schema = EVENT_ADAPTER.json_schema()
    assert set(schema["discriminator"]["mapping"]) == {event.type for event in ONE_OF_EACH}


def test_a_thread_round_trips_as_json() -> None:
    # Given a thread with every kind of event
    thread = Thread(id="thread-1", agent="deploybot", events=tuple(ONE_OF_EACH))

    # When it is dumped and parsed
    parsed = parse_thread(dump_thread(thread))

    # Then nothing is lost, including nulls inside tool results
    assert parsed == thread
    tool_result = parsed.events[2]
    assert isinstance(tool_result, ToolResult)
    assert tool_result.data.result == {"ok": None}


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        ({"type": "self_destruct", "at": T0.isoformat(), "data": {}}, "union_tag_invalid"),
        (
            {"type": "user_message", "at": T0.isoformat(), "data": {"text": "hi", "admin": True}},
            "extra_forbidden",
        ),
        (
            {"type": "approval", "at": T0.isoformat(), "data": {"call_id": "call 1; rm", "approved": True}},
            "pattern",
        ),
        ({"type": "done", "data": {"message": "x"}}, "missing"),
    ],
)
def test_malformed_events_are_rejected(raw: dict[str, object], complaint: str) -> None:
    with pytest.raises(ValidationError) as raised:
        parse_event(raw)
    assert complaint in str(raised.value.errors()[0]["type"])


def test_a_thread_id_cannot_carry_key_separators() -> None:
    # Thread ids end up in DynamoDB keys such as THREAD#<id>, so "#" and "/" are refused.
    with pytest.raises(ValidationError):
        Thread(id="a#b", agent="deploybot")


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([], ThreadStatus.READY),
        ([user()], ThreadStatus.READY),
        ([user(), call()], ThreadStatus.TOOL_PENDING),
        ([user(), call(), result()], ThreadStatus.READY),
        ([user(), call(), approval_requested()], ThreadStatus.AWAITING_APPROVAL),
        ([user(), call(), approval_requested(), approval(approved=True)], ThreadStatus.TOOL_PENDING),
        ([user(), call(), approval_requested(), approval(approved=False)], ThreadStatus.READY),
        ([user(), human_request()], ThreadStatus.AWAITING_HUMAN),
        ([user(), human_request(), human_response()], ThreadStatus.READY),
        ([user(), llm_error(), llm_error(), llm_error(), escalation()], ThreadStatus.AWAITING_HUMAN),
        ([user(), call(), dispatched()], ThreadStatus.AWAITING_CALLBACK),
        ([user(), call(), dispatched(), result()], ThreadStatus.READY),
        (
            [user(), call(), approval_requested(), approval(approved=True), dispatched()],
            ThreadStatus.AWAITING_CALLBACK,
        ),
        ([user(), tool_error()], ThreadStatus.READY),
        ([user(), call(), escalation(), human_response()], ThreadStatus.TOOL_PENDING),
        ([user(), call(), approval_requested(), escalation(), human_response()], ThreadStatus.READY),
        ([user(), done()], ThreadStatus.DONE),
        ([user(), done(), user("and the frontend?")], ThreadStatus.READY),
        ([user(), human_request(), cancelled()], ThreadStatus.CANCELLED),
        ([user(), cancelled(), user("hello?")], ThreadStatus.CANCELLED),
    ],
    ids=lambda value: (
        ("-".join(event.type for event in value) or "empty") if isinstance(value, list) else None
    ),
)
def test_status_is_derived_from_the_events(events: list[Event], expected: ThreadStatus) -> None:
    assert state.status(events) is expected


def test_waiting_helpers_name_what_the_thread_waits_for() -> None:
    asked = [user(), call(), approval_requested()]
    assert state.awaiting_approval(asked) == asked[-1]
    assert state.awaiting_human(asked) is None
    assert state.awaiting_callback(asked) is None

    waiting = [user(), call(), dispatched()]
    assert state.awaiting_callback(waiting) == waiting[-1]
    assert state.pending_tool_call(waiting) is None

    approved = [*asked, approval(approved=True)]
    assert state.pending_tool_call(approved) == asked[1]
    assert state.awaiting_approval(approved) is None

    escalated = [user(), escalation()]
    assert state.awaiting_human(escalated) == escalated[-1]


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([user()], 0),
        ([user(), llm_error()], 1),
        ([user(), llm_error(), call(), tool_error()], 2),  # a decided call is not yet progress
        ([user(), llm_error(), llm_error(), call(), result()], 0),  # a tool result is
        ([user(), llm_error(), call(), result(), llm_error()], 1),
        ([user(), llm_error(), llm_error(), escalation(), human_response()], 0),
        ([user(), llm_error(), llm_error(), approval_requested(), approval(approved=False)], 0),
        ([user(), llm_error(), done(), user("again"), llm_error()], 1),
    ],
)
def test_consecutive_errors_count_since_the_last_progress(events: list[Event], expected: int) -> None:
    assert state.consecutive_errors(events) == expected


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([user()], 0),
        ([user(), call(), result(), call(), result()], 2),
        ([user(), call(), result(), llm_error()], 2),  # a failed decision still used a step
        ([user(), call(), tool_error()], 1),  # a failed tool did not ask the model again
        ([user(), human_request()], 1),
        ([user(), call(), result(), human_request(), human_response(), call()], 1),
        ([user(), call(), approval_requested(), approval(approved=True), result(), done()], 1),
        ([user(), call(), result(), done(), user("next"), call()], 1),
        ([user(), call(prefetched=True), result(), call()], 1),  # prefetch is code, not the model
    ],
)
def test_steps_count_model_decisions_since_a_person_last_spoke(events: list[Event], expected: int) -> None:
    assert state.steps_since_launch(events) == expected


def test_total_tokens_sum_every_model_decision() -> None:
    events = [user(), call(), result(), llm_error(), human_request(), done()]
    assert state.total_tokens(events) == 4 * USAGE.total_tokens
