"""The Reducer function on the events/reducer-*.json samples, against moto.

Threads are written straight to the store, so no execution runs unless a test starts one; the
model is scripted through the runtime (the same port the OpenAI adapter implements).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.integration.stack import (  # noqa: F401 - fixtures
    Stack,
    api_event,
    intent,
    sample,
    stack_fixture,
    usage_reply,
    webhook_receiver_fixture,
)
from tests.support import poll_until
from twelvefactor.adapters.ports import ThreadMeta
from twelvefactor.core.channels import ChannelRef, WebhookRef
from twelvefactor.core.events import (
    ApprovalRequested,
    ApprovalRequestedData,
    Done,
    DoneData,
    Escalation,
    Event,
    ToolCall,
    ToolCallData,
    ToolResult,
    UserMessage,
    UserMessageData,
)
from twelvefactor.core.state import ThreadStatus

pytestmark = pytest.mark.integration

NOW = datetime(2024, 6, 3, 8, 0, tzinfo=UTC)
DEPLOY_ARGUMENTS = {"tag": "v1.2.3", "environment": "production"}


def _thread(stack: Stack, *events: Event, channel: ChannelRef | None = None) -> str:
    thread_id = uuid.uuid4().hex
    meta = ThreadMeta(thread_id=thread_id, agent="deploybot", created_at=NOW, channel=channel)
    opening = UserMessage(at=NOW, data=UserMessageData(text="Deploy the latest backend tag to production."))
    stack.store.create(meta, [opening, *events])
    return thread_id


def _awaiting_approval() -> list[Event]:
    call = ToolCallData(call_id="call-1", intent="deploy_backend", arguments=DEPLOY_ARGUMENTS)
    request = ApprovalRequestedData(call_id="call-1", intent="deploy_backend", arguments=DEPLOY_ARGUMENTS)
    return [ToolCall(at=NOW, data=call), ApprovalRequested(at=NOW, data=request)]


def _reducer_event(name: str, thread_id: str) -> dict[str, Any]:
    return {**sample(name), "thread_id": thread_id}


def _emf(output: str) -> dict[str, float]:
    """The metric values of the EMF lines Powertools printed."""
    values: dict[str, float] = {}
    for line in output.splitlines():
        if line.startswith('{"_aws"'):
            record = json.loads(line)
            for metric in record["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
                values[metric["Name"]] = sum(record[metric["Name"]])
    return values


def test_reducer_runs_to_awaiting_approval_persisting_each_move(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a new thread and a model that lists tags, then asks to deploy to production
    model = stack.script(
        usage_reply(intent("list_git_tags"), 100, 10),
        usage_reply(intent("deploy_backend", **DEPLOY_ARGUMENTS), 200, 20),
    )
    thread_id = _thread(stack)

    # When the state machine's Reduce task runs the reducer
    result = stack.invoke("ReducerFunction", _reducer_event("reducer-run", thread_id))

    # Then it pauses for approval, every event stored in order under its own sequence number
    assert result == {"thread_id": thread_id, "status": "waiting"}
    stored = stack.store.events_after(thread_id, -1)
    assert [(seq, event.type) for seq, event in stored] == [
        (0, "user_message"),
        (1, "tool_call"),
        (2, "tool_result"),
        (3, "tool_call"),
        (4, "approval_requested"),
    ]
    tags = stored[2][1]
    assert isinstance(tags, ToolResult) and "v1.2.3" in json.dumps(tags.data.result)
    # The model saw the real tool result before deciding (its second call)
    assert "v1.2.3" in model.calls[1][-1]["content"]
    # And the metrics say what happened: three moves, the tokens of two model calls
    metrics = _emf(capsys.readouterr().out)
    assert (metrics["Steps"], metrics["Tokens"], metrics["Errors"], metrics["Escalations"]) == (3, 330, 0, 0)
    # ... and their cost at the configured model's price (LLM_MODEL's default, gpt-4o-mini: $0.15 and
    # $0.60 per million input and output tokens): 300 x 0.15 + 30 x 0.60 = 63 millionths of a dollar
    assert metrics["LlmCostUsd"] == pytest.approx(0.000063)
    assert metrics["CacheReadTokens"] == 0


def test_each_move_is_stored_before_the_next_one_is_made(stack: Stack) -> None:
    # Given a model process that dies on the second call (not an LLM error the reducer records)
    stack.script(intent("list_git_tags"), RuntimeError("model worker crashed"))
    thread_id = _thread(stack)

    # When the reducer runs
    with pytest.raises(RuntimeError, match="model worker crashed"):
        stack.invoke("ReducerFunction", _reducer_event("reducer-run", thread_id))

    # Then the moves made before the crash are already stored (the retry resumes from there)
    assert [event.type for event in stack.events(thread_id)] == ["user_message", "tool_call", "tool_result"]


def test_a_timed_out_wait_escalates_once_and_an_answer_starts_a_new_execution(stack: Stack) -> None:
    # Given a thread whose approval wait timed out
    stack.script(intent("done_for_now", message="Understood, not deploying."))
    thread_id = _thread(stack, *_awaiting_approval())
    event = _reducer_event("reducer-wait-timeout", thread_id)

    # When the state machine's Catch hands the timeout to the reducer (and a retry repeats it)
    first = stack.invoke("ReducerFunction", event)
    repeated = stack.invoke("ReducerFunction", event)

    # Then one escalation is recorded and the thread waits for a person, with no live execution
    assert first == repeated == {"thread_id": thread_id, "status": "waiting"}
    events = stack.events(thread_id)
    escalations = [e for e in events if isinstance(e, Escalation)]
    assert len(escalations) == 1 and escalations[0] is events[-1]
    assert escalations[0].data.reason == "wait_timeout"
    assert "States.Timeout" in escalations[0].data.message
    wait = stack.wait(thread_id)
    assert (wait.kind, wait.task_token) == ("escalation", "")

    # When a person answers the escalation
    answered = stack.api(api_event("api-respond-text", thread_id=thread_id))

    # Then a new execution starts at the answer and carries the thread to its end
    assert answered.status == 202
    finished = stack.wait_for(thread_id, ThreadStatus.DONE)
    assert isinstance(finished.events[-1], Done)
    names = [execution["name"] for execution in stack.executions()]
    assert names == [f"{thread_id}-{len(events)}"]


def test_a_failed_task_escalates_on_the_threads_own_channel(stack: Stack) -> None:
    # Given a thread launched by an API caller with a webhook
    stack.script()
    thread_id = _thread(stack, *_awaiting_approval(), channel=WebhookRef(url=stack.receiver.url))

    # When the Notify task failed and the Catch hands its error to the reducer
    result = stack.invoke("ReducerFunction", _reducer_event("reducer-failure", thread_id))

    # Then the failure is an escalation event and the caller is told, with a callback to answer
    assert result["status"] == "waiting"
    escalation = stack.events(thread_id)[-1]
    assert isinstance(escalation, Escalation) and escalation.data.reason == "workflow_failure"
    assert "channel_not_found" in escalation.data.message
    received = poll_until(stack.receiver.notifications, lambda found: len(found) == 1)
    assert received[0]["kind"] == "escalation"
    assert received[0]["callback_id"] == stack.wait(thread_id).callback_id


def test_an_error_for_a_finished_thread_changes_nothing(stack: Stack) -> None:
    # Given a thread that is done
    stack.script()
    thread_id = _thread(stack, Done(at=NOW, data=DoneData(message="All deployed.")))
    before = stack.events(thread_id)

    # When a late timeout reaches the reducer
    result = stack.invoke("ReducerFunction", _reducer_event("reducer-wait-timeout", thread_id))

    # Then it reports the thread as done and records nothing
    assert result == {"thread_id": thread_id, "status": "done"}
    assert stack.events(thread_id) == before
    assert stack.store.get_wait(thread_id) is None


def _done_then_followed_up() -> list[Event]:
    """A turn that ended with a done (seq 1), then a follow-up (seq 2) whose message started the
    thread's next execution, ``<thread_id>-2``."""
    return [
        Done(at=NOW, data=DoneData(message="Deployed v1.2.3 to staging.")),
        UserMessage(at=NOW, data=UserMessageData(text="And production too, please.")),
    ]


def test_an_execution_whose_turn_ended_does_not_run_the_next_turn(stack: Stack) -> None:
    # Given a thread followed up after its done: the follow-up started execution <id>-2, and the
    # launch's execution <id>-0 is still alive (its Reduce crashed after writing the done, and the
    # state machine's Retry runs it again now)
    model = stack.script(intent("list_git_tags"), intent("done_for_now", message="no"))
    thread_id = _thread(stack, *_done_then_followed_up())
    before = stack.events(thread_id)

    # When the retried Reduce of <id>-0 runs
    result = stack.invoke("ReducerFunction", {"thread_id": thread_id, "execution": f"{thread_id}-0"})

    # Then it ends its own execution (done) and leaves the next turn to <id>-2: nothing is written
    # and the model is not asked, so no two executions pause on one thread each with its own token
    assert result == {"thread_id": thread_id, "status": "done"}
    assert stack.events(thread_id) == before
    assert model.calls == []

    # When <id>-2's Reduce runs, it does carry the follow-up on
    stack.invoke("ReducerFunction", {"thread_id": thread_id, "execution": f"{thread_id}-2"})
    assert [event.type for event in stack.events(thread_id)][len(before) :] == [
        "tool_call",
        "tool_result",
        "done",
    ]


def test_a_failure_of_an_execution_whose_turn_ended_is_not_escalated(stack: Stack) -> None:
    # Given a followed-up thread whose launch execution's retried Reduce failed again afterwards
    stack.script()
    thread_id = _thread(stack, *_done_then_followed_up())
    before = stack.events(thread_id)
    event = {**_reducer_event("reducer-failure", thread_id), "execution": f"{thread_id}-0"}

    # When that execution's Catch hands the failure to the reducer
    result = stack.invoke("ReducerFunction", event)

    # Then the thread, which <id>-2 runs now, gets no escalation and no wait
    assert result == {"thread_id": thread_id, "status": "done"}
    assert stack.events(thread_id) == before
    assert stack.store.get_wait(thread_id) is None
