"""The Notify function (the waitForTaskToken task) on events/notify-wait.json, against moto."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.integration.stack import (  # noqa: F401 - fixtures
    WEBHOOK_SECRET,
    Stack,
    api_event,
    intent,
    sample,
    stack_fixture,
    webhook_receiver_fixture,
)
from tests.support import poll_until
from twelvefactor import runtime
from twelvefactor.adapters import webhook
from twelvefactor.adapters.ports import ThreadMeta
from twelvefactor.core.channels import ChannelRef, NoReplyRef, WebhookRef
from twelvefactor.core.events import (
    ApprovalRequested,
    ApprovalRequestedData,
    Cancelled,
    CancelledData,
    Event,
    HumanRequest,
    HumanRequestData,
    ToolCall,
    ToolCallData,
    UserMessage,
    UserMessageData,
)
from twelvefactor.core.replies import ApprovalReply
from twelvefactor.core.state import ThreadStatus

pytestmark = pytest.mark.integration

NOW = datetime(2024, 6, 3, 8, 0, tzinfo=UTC)
ARGUMENTS = {"tag": "v1.2.3", "environment": "production"}


def _thread(stack: Stack, *events: Event, channel: ChannelRef) -> str:
    thread_id = uuid.uuid4().hex
    meta = ThreadMeta(thread_id=thread_id, agent="deploybot", created_at=NOW, channel=channel)
    opening = UserMessage(at=NOW, data=UserMessageData(text="Deploy backend v1.2.3 to production."))
    stack.store.create(meta, [opening, *events])
    return thread_id


def _approval_pending() -> list[Event]:
    return [
        ToolCall(at=NOW, data=ToolCallData(call_id="call-1", intent="deploy_backend", arguments=ARGUMENTS)),
        ApprovalRequested(
            at=NOW, data=ApprovalRequestedData(call_id="call-1", intent="deploy_backend", arguments=ARGUMENTS)
        ),
    ]


def _notify_event(thread_id: str) -> dict[str, Any]:
    return {**sample("notify-wait"), "thread_id": thread_id}


def test_notify_saves_the_wait_and_sends_a_signed_notice_without_the_token(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a webhook caller's thread waiting for approval, and a 10-minute wait timeout
    monkeypatch.setenv("WAIT_TIMEOUT_SECONDS", "600")
    stack.script()
    thread_id = _thread(stack, *_approval_pending(), channel=WebhookRef(url=stack.receiver.url))
    event = _notify_event(thread_id)

    # When the state machine's wait task runs Notify with its task token
    before = datetime.now(UTC)
    result = stack.invoke("NotifyFunction", event)
    after = datetime.now(UTC)

    # Then the token is kept in the wait item, with a random callback id and the deadline
    assert result == {"thread_id": thread_id, "notified": "approval"}
    wait = stack.wait(thread_id)
    assert (wait.kind, wait.task_token) == ("approval", event["task_token"])
    assert len(wait.callback_id) >= 32
    assert before + timedelta(seconds=600) <= wait.deadline <= after + timedelta(seconds=600)
    # And the caller got one signed notice naming that callback, never the token
    assert len(stack.receiver.received) == 1
    headers, body = stack.receiver.received[0]
    webhook.verify(WEBHOOK_SECRET, body, headers)
    notice = stack.receiver.notifications()[0]
    assert (notice["kind"], notice["format"], notice["callback_id"]) == (
        "approval",
        "approve_reject",
        wait.callback_id,
    )
    assert "deploy_backend" in notice["text"]
    assert event["task_token"] not in body.decode()


def test_a_caller_without_a_channel_gets_a_wait_but_no_message(stack: Stack) -> None:
    # Given an API caller without a callback URL whose thread asks a question
    stack.script()
    question = HumanRequest(at=NOW, data=HumanRequestData(question="Which tag?"))
    thread_id = _thread(stack, question, channel=NoReplyRef())

    # When Notify runs
    stack.invoke("NotifyFunction", _notify_event(thread_id))

    # Then the wait is saved for the caller's answer (it polls GET /threads/{id}) and nothing is sent
    assert stack.wait(thread_id).kind == "question"
    assert stack.receiver.received == []


def test_a_cancelled_thread_gets_no_wait_and_no_message(stack: Stack) -> None:
    # Given a thread cancelled between the reducer's pause and Notify
    stack.script()
    cancelled = Cancelled(at=NOW, data=CancelledData(reason="changed my mind"))
    thread_id = _thread(stack, *_approval_pending(), cancelled, channel=WebhookRef(url=stack.receiver.url))

    # When Notify runs
    result = stack.invoke("NotifyFunction", _notify_event(thread_id))

    # Then nobody is asked anything
    assert result["notified"] is None
    assert stack.store.get_wait(thread_id) is None
    assert stack.receiver.received == []


def test_an_answer_that_landed_before_notify_hands_the_token_straight_back(stack: Stack) -> None:
    # Given an execution paused on its task token for an approval
    stack.script(intent("list_git_tags"), intent("deploy_backend", **ARGUMENTS))
    thread_id = stack.api(api_event("api-launch")).body["thread_id"]
    stack.wait_for(thread_id, ThreadStatus.AWAITING_APPROVAL)
    token = stack.wait(thread_id).task_token
    # And the race: the approval was recorded while no wait was saved yet, so nothing resumed
    # (moto drops a SendTaskSuccess sent during the task's own Lambda call when a heartbeat is set,
    # so the race is staged on an execution that is already paused)
    stack.store.clear_wait(thread_id)
    runtime.current().resume(thread_id, ApprovalReply(approved=True, by="ops"))

    # When Notify runs for that wait
    result = stack.invoke("NotifyFunction", {"thread_id": thread_id, "task_token": token})

    # Then it asks nobody, saves no wait, and the execution carries the approved deploy to the end
    assert result == {"thread_id": thread_id, "notified": None}
    finished = stack.wait_for(thread_id, ThreadStatus.DONE)
    assert [event.type for event in finished.events] == [
        "user_message",
        "tool_call",
        "tool_result",
        "tool_call",
        "approval_requested",
        "approval",
        "tool_result",
        "done",
    ]
    assert stack.store.get_wait(thread_id) is None
    assert poll_until(stack.executions, lambda found: found[0]["status"] == "SUCCEEDED")
