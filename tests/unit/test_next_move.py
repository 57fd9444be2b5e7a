"""Factor 8: `next_move` is the one place that orders the loop's moves.

A tool call cleared to run (no approval needed, or approved) whose outcome was never recorded, e.g.
because its reducer kept failing after running it and the failure was escalated, is settled under its
own call id before the model is asked anything; a call that waits, was rejected or was dispatched
is never run again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.unit.agent_fixtures import DeployService, build_agent, harness, intent_json
from twelvefactor.core import replies
from twelvefactor.core.events import (
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
    ToolCall,
    ToolCallData,
    ToolDispatched,
    ToolDispatchedData,
    ToolResult,
    ToolResultData,
    UserMessage,
    UserMessageData,
)
from twelvefactor.core.reducer import Move, next_move
from twelvefactor.core.state import ThreadStatus, pending_tool_call, status

AT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
AGENT = build_agent(DeployService())


def opening() -> UserMessage:
    return UserMessage(at=AT, data=UserMessageData(text="Deploy v1.2.3"))


def deploy_call(call_id: str = "call-1", environment: str = "staging") -> ToolCall:
    arguments = {"tag": "v1.2.3", "environment": environment}
    return ToolCall(at=AT, data=ToolCallData(call_id=call_id, intent="deploy_backend", arguments=arguments))


def migration_call(call_id: str = "call-1") -> ToolCall:
    return ToolCall(
        at=AT, data=ToolCallData(call_id=call_id, intent="run_migration", arguments={"tag": "v1.2.3"})
    )


def approval_requested(call_id: str = "call-1") -> ApprovalRequested:
    data = ApprovalRequestedData(call_id=call_id, intent="deploy_backend", arguments={"tag": "v1.2.3"})
    return ApprovalRequested(at=AT, data=data)


def approval(*, approved: bool, call_id: str = "call-1") -> Approval:
    return Approval(at=AT, data=ApprovalData(call_id=call_id, approved=approved, by="alice"))


def failure_escalated() -> Escalation:
    data = EscalationData(reason="workflow_failure", message="States.TaskFailed: killed")
    return Escalation(at=AT, data=data)


def timeout_escalated() -> Escalation:
    return Escalation(at=AT, data=EscalationData(reason="wait_timeout", message="States.Timeout"))


def answer(text: str = "go on") -> HumanResponse:
    return HumanResponse(at=AT, data=HumanResponseData(text=text, by="alice"))


def result(call_id: str = "call-1") -> ToolResult:
    return ToolResult(at=AT, data=ToolResultData(call_id=call_id, intent="deploy_backend", result={}))


def dispatched(call_id: str = "call-1") -> ToolDispatched:
    return ToolDispatched(at=AT, data=ToolDispatchedData(call_id=call_id, intent="run_migration"))


def tool_error(call_id: str = "call-1") -> Error:
    return Error(at=AT, data=ErrorData(source="tool", message="HTTP 503", call_id=call_id))


def done() -> Done:
    return Done(at=AT, data=DoneData(message="Deployed."))


def question() -> HumanRequest:
    return HumanRequest(at=AT, data=HumanRequestData(question="Which environment?"))


def cancelled() -> Cancelled:
    return Cancelled(at=AT, data=CancelledData(by="alice"))


def thread_of(*events: Event) -> Thread:
    return Thread(id="thread-1", agent=AGENT.name, events=events)


LEFT_UNSETTLED = [
    pytest.param([opening(), deploy_call(), failure_escalated(), answer()], id="escalated-then-answered"),
    pytest.param([opening(), deploy_call(), opening()], id="a-message-landed-before-the-result"),
    pytest.param(
        [
            opening(),
            deploy_call(environment="production"),
            approval_requested(),
            approval(approved=True),
            failure_escalated(),
            answer(),
        ],
        id="approved-then-escalated-then-answered",
    ),
]


@pytest.mark.parametrize("events", LEFT_UNSETTLED)
def test_a_call_cleared_to_run_but_never_settled_runs_before_the_model_is_asked(events: list[Event]) -> None:
    # Given a thread whose last tool call was cleared to run and has no recorded outcome
    thread = thread_of(*events)

    # When the loop decides its next move
    move = next_move(AGENT, thread)

    # Then it runs that very call (same call id) instead of asking the model
    assert move is Move.RUN_TOOL
    assert status(thread.events) is ThreadStatus.TOOL_PENDING
    pending = pending_tool_call(thread.events)
    assert pending is not None and pending.data.call_id == "call-1"


SETTLED_OR_WAITING = [
    pytest.param([opening(), deploy_call(), result()], Move.ASK_MODEL, id="result-recorded"),
    pytest.param([opening(), deploy_call(), tool_error()], Move.ASK_MODEL, id="tool-error-recorded"),
    pytest.param(
        [opening(), deploy_call(environment="production"), approval_requested()],
        Move.NONE,
        id="waiting-for-approval",
    ),
    pytest.param(
        [opening(), deploy_call(environment="production"), approval_requested(), approval(approved=False)],
        Move.ASK_MODEL,
        id="approval-rejected",
    ),
    pytest.param(
        [
            opening(),
            deploy_call(environment="production"),
            approval_requested(),
            timeout_escalated(),
            answer(),
        ],
        Move.ASK_MODEL,
        id="approval-never-given-then-escalated-and-answered",
    ),
    pytest.param([opening(), migration_call(), dispatched()], Move.NONE, id="async-waiting-for-callback"),
    pytest.param(
        [opening(), migration_call(), dispatched(), timeout_escalated(), answer()],
        Move.ASK_MODEL,
        id="async-dispatched-then-escalated-and-answered",
    ),
    pytest.param(
        [opening(), deploy_call(), cancelled(), result()], Move.NONE, id="cancelled-then-the-call-settled"
    ),
    pytest.param(
        [opening(), deploy_call("call-1", "production"), approval_requested(), cancelled()],
        Move.NONE,
        id="cancelled-while-awaiting-approval",
    ),
    pytest.param(
        [opening(), deploy_call(), result(), opening(), deploy_call("call-4"), failure_escalated()],
        Move.NONE,
        id="escalation-still-unanswered",
    ),
    # Saved before unsettled calls were looked for: the model was asked after the call and the turn
    # finished, so a new message must not run that old call again.
    pytest.param(
        [opening(), deploy_call(), failure_escalated(), answer(), done(), opening()],
        Move.ASK_MODEL,
        id="the-turn-finished-after-the-call",
    ),
    pytest.param(
        [opening(), deploy_call(), failure_escalated(), answer(), question(), answer()],
        Move.ASK_MODEL,
        id="the-model-asked-a-question-after-the-call",
    ),
    # The re-run after the first answer died too: the second answer goes to the model.
    pytest.param(
        [opening(), deploy_call(), failure_escalated(), answer(), failure_escalated(), answer()],
        Move.ASK_MODEL,
        id="its-re-run-failed-as-well",
    ),
]


@pytest.mark.parametrize(("events", "expected"), SETTLED_OR_WAITING)
def test_a_call_that_waits_was_refused_or_was_settled_is_never_run_again(
    events: list[Event], expected: Move
) -> None:
    # Given a thread whose last call has an outcome, waits for someone, or was never cleared to run
    thread = thread_of(*events)

    # When the loop decides its next move
    move = next_move(AGENT, thread)

    # Then it asks the model or waits, exactly as it did before unsettled calls were looked for
    assert move is expected
    assert pending_tool_call(thread.events) is None


@pytest.mark.parametrize(
    "events",
    [
        pytest.param([opening(), deploy_call(), cancelled()], id="decided-then-cancelled"),
        pytest.param(
            [
                opening(),
                deploy_call("call-1", "production"),
                approval_requested(),
                approval(approved=True),
                cancelled(),
            ],
            id="approved-then-cancelled",
        ),
        pytest.param(
            [opening(), deploy_call(), failure_escalated(), answer(), cancelled()],
            id="cancelled-after-the-escalation-was-answered",
        ),
    ],
)
def test_a_cancel_takes_effect_after_the_call_cleared_before_it_is_settled(events: list[Event]) -> None:
    # Given a thread cancelled while a call cleared to run had no outcome
    thread = thread_of(*events)

    # When the loop decides its next move, before and after the call's outcome is recorded
    before = (status(thread.events), next_move(AGENT, thread), pending_tool_call(thread.events))
    settled = thread_of(*events, result())

    # Then the call runs first, with the thread cancelling, and the cancel takes effect after it
    assert before[:2] == (ThreadStatus.CANCELLING, Move.RUN_TOOL)
    assert before[2] is not None and before[2].data.call_id == "call-1"
    assert (status(settled.events), next_move(AGENT, settled)) == (ThreadStatus.CANCELLED, Move.NONE)


def test_the_left_over_call_runs_under_its_own_idempotency_key_then_the_model_sees_its_result(
    tmp_path: Path,
) -> None:
    # Given a thread whose staging deploy was recorded, its reducer failed for good (escalated), and
    # a person answered the escalation
    h = harness(tmp_path, [intent_json("done_for_now", message="Deployed v1.2.3.")])
    h.append([opening(), deploy_call(), failure_escalated()])
    h.append(replies.respond(h.thread, replies.TextReply(text="please finish"), at=AT))

    # When the loop runs until it pauses
    h.run()

    # Then the deploy ran once more under the key it first ran with, its result was recorded
    # before the model was asked, and the model saw it
    assert h.service.calls == [
        ("deploy_backend", {"tag": "v1.2.3", "environment": "staging"}, "thread-1:call-1")
    ]
    assert [event.type for event in h.thread.events[-2:]] == ["tool_result", "done"]
    assert len(h.model.calls) == 1
    assert "v1.2.3" in h.user_message_seen() and "deployed" in h.user_message_seen()
