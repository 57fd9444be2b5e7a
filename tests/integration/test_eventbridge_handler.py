"""The EventBridge function on the events/eventbridge-*.json samples, against moto."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from tests.integration.conftest import REGION
from tests.integration.stack import (  # noqa: F401 - fixtures
    SAMPLE_CALLBACK_ID,
    Stack,
    intent,
    sample,
    stack_fixture,
    webhook_receiver_fixture,
)
from twelvefactor.core.events import Approval, UserMessage
from twelvefactor.core.state import ThreadStatus

pytestmark = pytest.mark.integration


def _idempotency_records(table: str) -> int:
    return int(boto3.client("dynamodb", region_name=REGION).scan(TableName=table, Select="COUNT")["Count"])


def _launch(stack: Stack) -> tuple[dict[str, Any], str]:
    stack.script(intent("list_git_tags"), intent("deploy_backend", tag="v1.2.3", environment="production"))
    event = sample("eventbridge-launch")
    result = stack.invoke("EventBridgeFunction", event)
    return result, result["thread_id"]


def test_a_configured_detail_type_launches_its_agent_with_the_detail_as_message(stack: Stack) -> None:
    # When a "Deployment Requested" event arrives
    result, thread_id = _launch(stack)

    # Then deploybot runs with the event's detail as its first message
    assert (result["action"], result["agent"]) == ("launch", "deploybot")
    thread = stack.wait_for(thread_id, ThreadStatus.AWAITING_APPROVAL)
    opening = thread.events[0]
    assert isinstance(opening, UserMessage)
    assert (opening.data.channel, opening.data.sender) == ("eventbridge", "com.example.deployments")
    assert json.loads(opening.data.text) == sample("eventbridge-launch")["detail"]


def test_the_same_event_delivered_twice_launches_once(stack: Stack) -> None:
    # Given an event that launched a thread
    first, thread_id = _launch(stack)
    stack.wait_for(thread_id, ThreadStatus.AWAITING_APPROVAL)

    # When EventBridge delivers the same event (same id) again
    again = stack.invoke("EventBridgeFunction", sample("eventbridge-launch"))

    # Then the answer is the first one and there is still one thread and one execution
    assert again == first
    assert [meta.thread_id for meta in stack.store.list_threads()] == [thread_id]
    assert len(stack.executions()) == 1


def test_an_event_with_a_callback_id_answers_that_wait_once(stack: Stack, idempotency_table: str) -> None:
    # Given a thread waiting for approval
    _result, thread_id = _launch(stack)
    stack.wait_for(thread_id, ThreadStatus.AWAITING_APPROVAL)
    callback_event = json.loads(
        json.dumps(sample("eventbridge-callback")).replace(
            SAMPLE_CALLBACK_ID, stack.wait(thread_id).callback_id
        )
    )

    # When an event carrying its callback id arrives, and is redelivered
    answered = stack.invoke("EventBridgeFunction", callback_event)
    redelivered = stack.invoke("EventBridgeFunction", callback_event)

    # Then the approval is recorded once and the thread runs to the end
    assert answered == redelivered == {"action": "callback", "thread_id": thread_id}
    finished = stack.wait_for(thread_id, ThreadStatus.DONE)
    approvals = [event for event in finished.events if isinstance(event, Approval)]
    assert [(a.data.approved, a.data.comment) for a in approvals] == [(True, "approved by the change board")]


def test_an_unknown_detail_type_is_ignored_and_writes_nothing(stack: Stack, idempotency_table: str) -> None:
    # When an event arrives that no launch rule names
    stack.script()
    result = stack.invoke("EventBridgeFunction", sample("eventbridge-unknown"))

    # Then it is ignored with the reason, and no thread, execution or idempotency record exists
    assert result["action"] == "ignored"
    assert "Invoice Paid" in result["reason"]
    assert stack.store.list_threads() == []
    assert stack.executions() == []
    assert _idempotency_records(idempotency_table) == 0


def test_a_callback_for_no_pending_wait_is_ignored_and_writes_nothing(
    stack: Stack, idempotency_table: str
) -> None:
    # When the callback sample names a wait that does not exist
    stack.script()
    result = stack.invoke("EventBridgeFunction", sample("eventbridge-callback"))

    # Then it is ignored (a retry could not help) and nothing is remembered or written
    assert result["action"] == "ignored"
    assert "callback" in result["reason"]
    assert stack.store.list_threads() == []
    assert _idempotency_records(idempotency_table) == 0


def test_an_event_that_is_not_eventbridges_is_ignored_naming_what_is_wrong(
    stack: Stack, idempotency_table: str
) -> None:
    # Given the launch sample without its detail-type and with a time that is not a time
    event = sample("eventbridge-launch")
    del event["detail-type"]
    event["time"] = "yesterday"

    # When it arrives
    stack.script()
    result = stack.invoke("EventBridgeFunction", event)

    # Then it is ignored, the reason naming the missing field and the bad one, and nothing is written
    assert result["action"] == "ignored"
    assert result["reason"].startswith("not an EventBridge event: ")
    assert "missing 'detail-type'" in result["reason"]
    assert "'time': Input should be a valid datetime" in result["reason"]
    assert stack.store.list_threads() == []
    assert _idempotency_records(idempotency_table) == 0
