"""Interleavings: a cancel that lands while a call is approved or running, and a cancel's execution.

The thread runs in moto's execution of the real state machine, with the real reducer and Api
handlers; the deploy is done by the fake deployment service. The cancel is sent through the Api
function from inside the executor, after the deployment service did the work and before the
reducer records it: the worst moment, reached on every run rather than in 3 of 5 tries.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from agents._service import ServiceClient
from tests.integration.stack import Stack, api_event, intent
from tests.reliability.conftest import Cases
from tests.reliability.support import deploys
from tests.support import poll_until
from twelvefactor import runtime
from twelvefactor.adapters.ports import StorageError
from twelvefactor.adapters.stepfunctions import StepFunctionsError
from twelvefactor.core import state
from twelvefactor.core.events import Cancelled, Error, ToolCall, ToolResult
from twelvefactor.core.state import ThreadStatus

pytestmark = [pytest.mark.scenario("Interleavings"), pytest.mark.integration]

DEPLOY_PRODUCTION = intent("deploy_backend", tag="v1.2.3", environment="production")
DONE = intent("done_for_now", message="Deployed v1.2.3 to production.")


def _waiting_for_approval(stack: Stack) -> str:
    # The tags first (a deploy is offered only then); a deploy that ran ends the turn by code.
    stack.script(intent("list_git_tags"), DEPLOY_PRODUCTION)
    launched = stack.api(api_event("api-launch"))
    assert launched.status == 202, launched.body
    thread_id = str(launched.body["thread_id"])
    stack.wait_for(thread_id, ThreadStatus.AWAITING_APPROVAL)
    return thread_id


def _ended(stack: Stack) -> list[dict[str, Any]]:
    return poll_until(stack.executions, lambda found: all(e["status"] != "RUNNING" for e in found))


@pytest.mark.fixes(
    "Approve then cancel at once (issue 14): both answered 202, the deploy ran, and the thread ended "
    "approval -> cancelled with no tool_result, hiding a production deploy. A cancel now takes effect "
    "after the call already cleared to run has its outcome recorded."
)
def test_a_cancel_while_the_approved_call_runs_is_recorded_after_its_result(
    stack: Stack, cases: Cases, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Approve, then DELETE /threads/{id} while the approved deploy runs: both are 202, the deploy
    is recorded once as the call's tool_result, the cancel takes effect after it, and the
    execution ends."""
    # Given a thread waiting for approval of a production deploy
    thread_id = _waiting_for_approval(stack)
    # And a cancel that arrives while the deployment service is doing the work
    cancels: list[int] = []
    post = ServiceClient.post

    def post_then_cancel(self: ServiceClient, path: str, body: dict[str, Any], **kwargs: Any) -> Any:
        answer = post(self, path, body, **kwargs)
        if path == "/deploys" and not cancels:
            cancels.append(stack.api(api_event("api-cancel", thread_id=thread_id)).status)
        return answer

    monkeypatch.setattr(ServiceClient, "post", post_then_cancel)

    # When the call is approved
    approved = stack.api(api_event("api-respond-approve", thread_id=thread_id))
    executions = _ended(stack)
    cases.add(2)

    # Then both requests were taken
    assert (approved.status, cancels) == (202, [202])
    # And the one deploy is in the thread, once, as the approved call's result, before nothing else
    assert [(d["tag"], d["environment"]) for d in deploys(stack.deploy_service_url)] == [
        ("v1.2.3", "production")
    ]
    events = stack.events(thread_id)
    [call] = [e for e in events if isinstance(e, ToolCall) and e.data.intent == "deploy_backend"]
    outcomes = [
        e for e in events if isinstance(e, ToolResult | Error) and e.data.call_id == call.data.call_id
    ]
    assert [type(o).__name__ for o in outcomes] == ["ToolResult"]
    # And the thread is cancelled, with the cancel recorded once and the model never asked again
    assert state.status(events) is ThreadStatus.CANCELLED
    assert sum(isinstance(event, Cancelled) for event in events) == 1
    assert [event.type for event in events][-2:] in (
        ["cancelled", "tool_result"],
        ["tool_result", "cancelled"],
    )
    assert stack.model.remaining == 0
    # And no execution is left running
    assert [execution["status"] for execution in executions] == ["SUCCEEDED"]


def test_a_cancel_while_a_call_is_approved_lets_it_run_first(stack: Stack, cases: Cases) -> None:
    """DELETE /threads/{id} right after the approval, before the reducer ran the call: the cancel is
    202 and the thread reports `cancelling`; the approved call still runs, is recorded, and only
    then is the thread cancelled. A second cancel, an answer or a message meanwhile is a 409."""
    # Given a thread waiting for approval, and an approval that is recorded but not yet acted on
    thread_id = _waiting_for_approval(stack)
    runtime_ = stack.store  # the store the handlers use
    wait = stack.wait(thread_id)
    stack.store.clear_wait(thread_id)  # so the Api function cannot resume the paused execution yet
    approved = stack.api(api_event("api-respond-approve", thread_id=thread_id))

    # When the thread is cancelled before its execution resumes
    cancelled = stack.api(api_event("api-cancel", thread_id=thread_id))
    meanwhile = [
        stack.api(api_event("api-cancel", thread_id=thread_id)).status,
        stack.api(api_event("api-respond-approve", thread_id=thread_id)).status,
    ]
    status_meanwhile = stack.api(api_event("api-get", thread_id=thread_id)).body["status"]
    cases.add(4)
    assert not deploys(stack.deploy_service_url)
    # And the paused execution is resumed
    stack.sfn.send_task_success(taskToken=wait.task_token, output=json.dumps({"thread_id": thread_id}))
    executions = _ended(stack)

    # Then the approval and the cancel were taken, the rest refused, and the status said so
    assert (approved.status, cancelled.status, meanwhile) == (202, 202, [409, 409])
    assert status_meanwhile == "cancelling"
    # And the approved deploy ran once and is recorded once, after the cancel
    assert len(deploys(stack.deploy_service_url)) == 1
    events = runtime_.load(thread_id)[1].events
    assert [event.type for event in events][-3:] == ["approval", "cancelled", "tool_result"]
    assert state.status(events) is ThreadStatus.CANCELLED
    assert [execution["status"] for execution in executions] == ["SUCCEEDED"]


@pytest.mark.fixes(
    "moto's StopExecution leaves an execution paused on a task token RUNNING, so a local cancel "
    "left every cancelled thread's execution running. The cancel now also resumes the wait's task "
    "token (SendTaskSuccess): the reducer finds the thread cancelled and the execution finishes."
)
def test_a_cancel_during_a_wait_ends_the_execution(stack: Stack, cases: Cases) -> None:
    """DELETE /threads/{id} while the thread waits for approval: the paused execution ends (it is
    not left RUNNING), and the thread ends cancelled with nothing run."""
    # Given a thread waiting for approval
    thread_id = _waiting_for_approval(stack)

    # When it is cancelled
    cancelled = stack.api(api_event("api-cancel", thread_id=thread_id))
    executions = _ended(stack)
    cases.add()

    # Then the execution has ended and the thread is cancelled, with nothing deployed
    assert cancelled.status == 202
    assert [execution["status"] for execution in executions] in (["SUCCEEDED"], ["ABORTED"])
    assert state.status(stack.events(thread_id)) is ThreadStatus.CANCELLED
    assert isinstance(stack.events(thread_id)[-1], Cancelled)
    assert deploys(stack.deploy_service_url) == []


class ThrottledOnce:
    """The real Step Functions adapter, except that the first call of `operation` is throttled
    (after boto3's own retries), as Step Functions does under load."""

    def __init__(self, workflow: Any, operation: str) -> None:
        self._workflow = workflow
        self._operation = operation
        self.throttled = 0

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._workflow, name)
        if name != self._operation:
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            if not self.throttled:
                self.throttled += 1
                raise StepFunctionsError(
                    f"{name} failed with ThrottlingException: Rate exceeded", "ThrottlingException"
                )
            return method(*args, **kwargs)

        return call


@pytest.mark.fixes(
    "An answer whose SendTaskSuccess was throttled was recorded and its wait deleted, so the execution "
    "stayed paused for good and the caller's retry was a 409; a throttle was also taken for a dead "
    "token and started a second execution. Found by the soak."
)
def test_an_answer_whose_hand_over_is_throttled_is_finished_by_the_callers_retry(
    stack: Stack, cases: Cases
) -> None:
    """Approve while Step Functions throttles SendTaskSuccess: the caller gets a 502, the approval
    is recorded once, no second execution starts; the caller's retry (the same request) is a 202
    that hands the approval over, and the thread runs to done in its one execution."""
    # Given a thread waiting for approval, and Step Functions throttling the next resume
    thread_id = _waiting_for_approval(stack)
    flaky = ThrottledOnce(runtime.current().workflow, "resume")
    runtime.reset(llm=stack.model, workflow=flaky)

    # When the approval is sent, and sent again after the error
    first = stack.api(api_event("api-respond-approve", thread_id=thread_id))
    executions_between = [execution["status"] for execution in stack.executions()]
    retry = stack.api(api_event("api-respond-approve", thread_id=thread_id))
    finished = stack.wait_for(thread_id, ThreadStatus.DONE)
    cases.add(2)

    # Then the first attempt failed without starting anything, and the retry finished the job
    assert (flaky.throttled, first.status, retry.status) == (1, 502, 202)
    assert executions_between == ["RUNNING"]
    assert sum(event.type == "approval" for event in finished.events) == 1
    assert [execution["status"] for execution in _ended(stack)] == ["SUCCEEDED"]
    assert len(deploys(stack.deploy_service_url)) == 1


@pytest.mark.fixes(
    "A cancel whose StopExecution was throttled after the cancelled event was written left the "
    "execution running and the retry a 409. Found by the soak."
)
def test_a_cancel_whose_stop_is_throttled_is_finished_by_its_retry(stack: Stack, cases: Cases) -> None:
    """DELETE /threads/{id} while Step Functions throttles StopExecution: 502, the thread is
    cancelled; the retry is a 202 that ends the execution."""
    # Given a thread waiting for approval, and Step Functions throttling the next stop
    thread_id = _waiting_for_approval(stack)
    flaky = ThrottledOnce(runtime.current().workflow, "cancel")
    runtime.reset(llm=stack.model, workflow=flaky)

    # When it is cancelled, and the cancel sent again after the error
    first = stack.api(api_event("api-cancel", thread_id=thread_id))
    retry = stack.api(api_event("api-cancel", thread_id=thread_id))
    again = stack.api(api_event("api-cancel", thread_id=thread_id))
    cases.add(3)

    # Then the retry ended the execution, and only then is a cancel a 409
    assert (first.status, retry.status, again.status) == (502, 202, 409)
    assert state.status(stack.events(thread_id)) is ThreadStatus.CANCELLED
    assert [execution["status"] for execution in _ended(stack)] in (["SUCCEEDED"], ["ABORTED"])


class SaveWaitFailsOnce:
    """The real store, except that the first `save_wait` fails as a throttled DynamoDB write."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.failed = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def save_wait(self, wait: Any) -> None:
        if not self.failed:
            self.failed += 1
            raise StorageError("PutItem failed: ProvisionedThroughputExceededException (throttled)")
        self._store.save_wait(wait)


@pytest.mark.fixes(
    "A cancel took the wait, then put it back when StopExecution was throttled; when the put-back "
    "failed too, the task token was lost: the retry was a 409 and the execution stayed paused on a "
    "cancelled thread. Found by the soak (seed 189569, 150 threads)."
)
def test_a_cancel_whose_stop_and_put_back_fail_is_finished_by_its_retry(stack: Stack, cases: Cases) -> None:
    """DELETE /threads/{id} while StopExecution is throttled and DynamoDB throttles the next wait
    write: the retry still finds the wait, a 202 that ends the execution."""
    # Given a thread waiting for approval, Step Functions throttling the next stop, and DynamoDB
    # throttling the next write of a wait
    thread_id = _waiting_for_approval(stack)
    flaky = ThrottledOnce(runtime.current().workflow, "cancel")
    runtime.reset(llm=stack.model, workflow=flaky, store=SaveWaitFailsOnce(runtime.current().store))

    # When it is cancelled, and the cancel sent again after the error
    first = stack.api(api_event("api-cancel", thread_id=thread_id))
    retry = stack.api(api_event("api-cancel", thread_id=thread_id))
    cases.add(2)

    # Then the retry ended the execution: the wait was not lost with the failed stop
    assert (flaky.throttled, first.status, retry.status) == (1, 502, 202)
    assert state.status(stack.events(thread_id)) is ThreadStatus.CANCELLED
    assert [execution["status"] for execution in _ended(stack)] in (["SUCCEEDED"], ["ABORTED"])
    assert stack.store.get_wait(thread_id) is None


@pytest.mark.fixes(
    "A follow-up to a finished thread whose StartExecution was throttled was recorded with no "
    "execution, and a second message then found the thread runnable and started nothing. Found by "
    "the soak."
)
def test_a_restart_whose_start_is_throttled_is_finished_by_the_next_message(
    stack: Stack, cases: Cases
) -> None:
    """A message to a done thread while Step Functions throttles StartExecution: the message is
    recorded and the call fails; the next message starts the execution the first one named, and
    the thread runs to done again."""
    # Given a finished thread, and Step Functions throttling the next start
    stack.script(DONE, DONE)
    launched = stack.api(api_event("api-launch"))
    thread_id = str(launched.body["thread_id"])
    stack.wait_for(thread_id, ThreadStatus.DONE)
    flaky = ThrottledOnce(runtime.current().workflow, "start")
    runtime.reset(llm=stack.model, workflow=flaky)

    # When two messages follow, the first one's start throttled
    with pytest.raises(StepFunctionsError):
        runtime.current().follow_up(thread_id, "and the frontend?", channel="slack", sender=None)
    runtime.current().follow_up(thread_id, "hello?", channel="slack", sender=None)
    cases.add(2)

    # Then the execution named after the first message ran the thread to done
    finished = stack.wait_for(thread_id, ThreadStatus.DONE)
    assert [event.type for event in finished.events][-3:] == ["user_message", "user_message", "done"]
    names = sorted(execution["name"] for execution in _ended(stack))
    assert names == [f"{thread_id}-0", f"{thread_id}-2"]
