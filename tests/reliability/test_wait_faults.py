"""Wait faults: answers that come too late, twice, to the wrong thing, or to a cancelled thread.

A paused thread is a task token held by Step Functions and a pending-wait item in DynamoDB; every
answer goes through the real Api function and the thread runs in moto's execution of the real
state machine. Each fault must end in a clear 4xx or an escalation event, and leave the thread
consistent: its events unchanged by the refused answer, its wait either intact or replaced.
"""

from __future__ import annotations

import boto3
import pytest

from tests.integration.conftest import REGION
from tests.integration.stack import ROLE_ARN, Stack, api_event, function_arn, intent, signed_callback_event
from tests.moto_requests import AwsRequestLog
from tests.reliability.conftest import Cases
from tests.reliability.support import deploys
from tests.support import poll_until
from twelvefactor.core.events import Approval, Cancelled, Escalation, HumanResponse, ToolResult
from twelvefactor.core.state import ThreadStatus
from twelvefactor.local.template import state_machine_definition

pytestmark = [pytest.mark.scenario("Wait faults"), pytest.mark.integration]

DEPLOY_PRODUCTION = intent("deploy_backend", tag="v1.2.3", environment="production")
DONE = intent("done_for_now", message="Deployed v1.2.3 to production.")
# deploybot deploys only once the tags are in the thread.
LIST_TAGS = intent("list_git_tags")


def _waiting_for_approval(stack: Stack, *after: str) -> str:
    stack.script(LIST_TAGS, DEPLOY_PRODUCTION, *after)
    launched = stack.api(api_event("api-launch"))
    assert launched.status == 202, launched.body
    thread_id = str(launched.body["thread_id"])
    stack.wait_for(thread_id, ThreadStatus.AWAITING_APPROVAL)
    return thread_id


def _deploy_result(event: object) -> bool:
    # (the tags' lookup before the deploy has a result of its own)
    return isinstance(event, ToolResult) and event.data.intent == "deploy_backend"


def _rejections(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [
        (int(getattr(record, "status", 0)), str(getattr(record, "reason", "")))
        for record in caplog.records
        if record.getMessage() == "request rejected"
    ]


def _execution_status(stack: Stack) -> list[str]:
    return [execution["status"] for execution in stack.executions()]


def test_a_wait_that_times_out_escalates_and_a_late_approval_is_refused(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, cases: Cases, caplog: pytest.LogCaptureFixture
) -> None:
    """The approval wait times out (heartbeat 1 s): one wait_timeout escalation, a new wait without
    a task token; the late approval is a 409 that changes nothing, the old callback id a 404; an
    answer to the escalation starts a new execution that finishes the thread."""
    # Given a state machine whose waits time out after a second without a heartbeat
    sfn = boto3.client("stepfunctions", region_name=REGION)
    definition = state_machine_definition(
        stack.template,
        {
            "ReducerFunctionArn": function_arn("ReducerFunction"),
            "NotifyFunctionArn": function_arn("NotifyFunction"),
        },
        {"WaitTimeoutSeconds": "2", "HeartbeatMarginSeconds": "1"},
    )
    machine = sfn.create_state_machine(name="ImpatientMachine", definition=definition, roleArn=ROLE_ARN)
    stack.state_machine_arn = machine["stateMachineArn"]
    monkeypatch.setenv("STATE_MACHINE_ARN", machine["stateMachineArn"])  # read when the script resets
    thread_id = _waiting_for_approval(stack, intent("request_human_input", question="Still deploy?"), DONE)
    first_callback = stack.wait(thread_id).callback_id

    # When nobody answers in time
    escalated = poll_until(lambda: stack.events(thread_id), lambda events: isinstance(events[-1], Escalation))
    poll_until(lambda: _execution_status(stack), lambda statuses: statuses == ["FAILED"])

    # Then the timeout is one escalation event, and the thread waits for a person with a fresh wait
    escalation = escalated[-1]
    assert isinstance(escalation, Escalation) and escalation.data.reason == "wait_timeout"
    replacement = stack.wait(thread_id)
    assert (replacement.kind, replacement.task_token) == ("escalation", "")
    assert replacement.callback_id != first_callback

    # When the approval arrives late, by the API and by the old callback
    late = stack.api(api_event("api-respond-approve", thread_id=thread_id))
    old_callback = stack.api(signed_callback_event(first_callback, {"approved": True}))
    cases.add(3)

    # Then both are refused with a reason and the thread is exactly as the escalation left it
    assert (late.status, old_callback.status) == (409, 404)
    assert [status for status, _ in _rejections(caplog)] == [409, 404]
    assert stack.events(thread_id) == escalated
    assert deploys(stack.deploy_service_url) == []

    # When a person answers the escalation instead
    answered = stack.api(api_event("api-respond-text", thread_id=thread_id))

    # Then a new execution carries the thread on from there
    assert answered.status == 202
    stack.wait_for(thread_id, ThreadStatus.AWAITING_HUMAN)
    assert sorted(_execution_status(stack)) == ["FAILED", "RUNNING"]


def test_an_answer_whose_task_token_is_refused_starts_a_new_execution(stack: Stack, cases: Cases) -> None:
    """The wait's task token no longer works (its execution ended; Step Functions answers
    InvalidToken): the approval is still taken, and a new execution, named after the answer's
    sequence number, runs the approved deploy once."""
    # Given a thread waiting for approval whose stored task token Step Functions no longer knows
    thread_id = _waiting_for_approval(stack, DONE)
    wait = stack.wait(thread_id)
    stack.store.save_wait(wait.model_copy(update={"task_token": "AQCEAAAAKgAAAAMAAAAA-expired"}))
    answer_seq = len(stack.events(thread_id))

    # When the approval arrives
    approved = stack.api(api_event("api-respond-approve", thread_id=thread_id))
    cases.add()

    # Then it is taken, and a second execution starting at the answer finishes the thread
    assert approved.status == 202
    finished = stack.wait_for(thread_id, ThreadStatus.DONE)
    # (The thread is done once the reducer stored its last move; the execution ends just after.)
    names = poll_until(
        lambda: {execution["name"]: execution["status"] for execution in stack.executions()},
        lambda names: names.get(f"{thread_id}-{answer_seq}") != "RUNNING",
    )
    assert names[f"{thread_id}-{answer_seq}"] == "SUCCEEDED"
    assert len([event for event in finished.events if isinstance(event, Approval)]) == 1
    assert len([event for event in finished.events if _deploy_result(event)]) == 1
    assert len(deploys(stack.deploy_service_url)) == 1


def test_unknown_and_used_callback_ids_are_404_and_change_nothing(
    stack: Stack, cases: Cases, caplog: pytest.LogCaptureFixture
) -> None:
    """A correctly signed callback naming no wait, and one naming a wait already answered: 404 with
    the reason logged, and neither adds an event."""
    # Given a thread that was approved through its callback, and ran to the end
    thread_id = _waiting_for_approval(stack, DONE)
    callback_id = stack.wait(thread_id).callback_id
    assert stack.api(signed_callback_event(callback_id, {"approved": True})).status == 202
    finished = stack.wait_for(thread_id, ThreadStatus.DONE)

    # When callbacks arrive for a wait that never existed, and for the one already used
    unknown = stack.api(signed_callback_event("no-such-callback-id", {"approved": True}))
    used = stack.api(signed_callback_event(callback_id, {"approved": False}))
    cases.add(2)

    # Then both are 404 with the reason logged, and the thread is as it was
    assert (unknown.status, used.status) == (404, 404)
    reasons = _rejections(caplog)
    assert [status for status, _ in reasons] == [404, 404]
    assert all("no pending wait" in reason for _, reason in reasons)
    assert stack.events(thread_id) == finished.events


def test_answers_the_thread_is_not_waiting_for_are_409_and_change_nothing(
    stack: Stack, cases: Cases, caplog: pytest.LogCaptureFixture
) -> None:
    """A text answer to a thread waiting for an approval, an approval naming another call, and an
    approval for a finished thread: 409 each, the reason logged, no event added, the wait intact."""
    # Given a thread waiting for approval
    thread_id = _waiting_for_approval(stack, DONE)
    before, wait = stack.events(thread_id), stack.wait(thread_id)

    # When answers arrive that do not fit what it waits for
    text = stack.api(api_event("api-respond-text", thread_id=thread_id))
    other_call = stack.api(
        api_event(
            "api-respond-approve",
            thread_id=thread_id,
            body={"kind": "approval", "approved": True, "call_id": "call-99"},
        )
    )

    # Then they are conflicts, and nothing changed
    assert (text.status, other_call.status) == (409, 409)
    assert stack.events(thread_id) == before and stack.wait(thread_id) == wait

    # When the thread has finished and an approval arrives anyway
    assert stack.api(api_event("api-respond-approve", thread_id=thread_id)).status == 202
    finished = stack.wait_for(thread_id, ThreadStatus.DONE)
    after_end = stack.api(api_event("api-respond-approve", thread_id=thread_id))
    cases.add(3)

    # Then it is a conflict too, and the finished thread is untouched
    assert after_end.status == 409
    assert stack.events(thread_id) == finished.events
    assert [status for status, _ in _rejections(caplog)] == [409, 409, 409]
    assert all(reason for _, reason in _rejections(caplog))


def test_cancel_during_a_wait_stops_everything_and_late_answers_are_refused(
    stack: Stack, cases: Cases, caplog: pytest.LogCaptureFixture, aws_requests: AwsRequestLog
) -> None:
    """DELETE /threads/{id} while it waits for approval: the thread ends cancelled, its wait is gone,
    StopExecution is sent for its execution; the late approval (409), its callback (404) and a
    second cancel (409) are refused, and nothing was deployed."""
    # Given a thread waiting for approval
    thread_id = _waiting_for_approval(stack, DONE)
    callback_id = stack.wait(thread_id).callback_id

    # When it is cancelled, and answers arrive afterwards
    cancelled = stack.api(api_event("api-cancel", thread_id=thread_id))
    late = stack.api(api_event("api-respond-approve", thread_id=thread_id))
    late_callback = stack.api(signed_callback_event(callback_id, {"approved": True}))
    again = stack.api(api_event("api-cancel", thread_id=thread_id))
    cases.add(4)

    # Then the cancel is taken and every later answer refused
    assert (cancelled.status, late.status, late_callback.status, again.status) == (202, 409, 404, 409)
    assert [status for status, _ in _rejections(caplog)] == [409, 404, 409]
    # And the thread ends with the cancellation, nothing ran, the wait is gone, the execution stopped
    events = stack.events(thread_id)
    assert isinstance(events[-1], Cancelled)
    assert not [
        event for event in events if isinstance(event, Approval | HumanResponse) or _deploy_result(event)
    ]
    assert stack.store.get_wait(thread_id) is None
    assert deploys(stack.deploy_service_url) == []
    # (moto keeps an execution paused on a task token running after StopExecution, so the check is
    # that the stop was asked for, once, for this thread's execution)
    [execution] = stack.executions()
    stops = [request for request in aws_requests.requests if request.operation == "StopExecution"]
    assert [request.target for request in stops] == [execution["executionArn"]]
