"""The on-call agent through the whole local stack: a CloudWatch "Alarm State Change" event invokes
the EventBridge function, the agent reads the recent deploys, asks the on-call channel in Slack
whether to roll back, and rolls back only when an allowed person clicks Approve.

Observed from outside, as an operator would: a Lambda invoke through the moto server (what an
EventBridge rule does), the Slack stand-in's record, the fake deployment service's own rollbacks,
DynamoDB and Step Functions read with boto3.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import ConversationScripts, aws, execution, intent, pending_wait, stored_event_types
from tests.support import poll_until
from twelvefactor.local.fake_openai import FakeOpenAI
from twelvefactor.local.slack_standin import SlackCall
from twelvefactor.local.stack import SLACK_TEAM, LlmEndpoint, LocalStack
from twelvefactor.triggers.slack import APPROVE_ACTION, REJECT_ACTION

pytestmark = pytest.mark.e2e

ONCALL_CHANNEL = "CONCALL"
SAMPLE = Path(__file__).resolve().parents[2] / "events" / "eventbridge-alarm.json"


@pytest.fixture(scope="module")
def stack(fake_llm: FakeOpenAI) -> Iterator[LocalStack]:
    """The stack with the on-call agent's Slack conversation set, as a deploy would set it."""
    endpoint = LlmEndpoint(fake_llm.base_url, fake_llm.model, output_mode="json_object", kind="scripted")
    parameters = {"OncallSlackTeamId": SLACK_TEAM, "OncallSlackChannelId": ONCALL_CHANNEL}
    with LocalStack(endpoint, parameters=parameters) as running:
        yield running


def deploy(stack: LocalStack, tag: str) -> str:
    """A production deploy of the backend, done before the alarm fires; returns its id."""
    response = httpx.post(
        f"{stack.services_url}/deploys",
        json={"service": "backend", "tag": tag, "environment": "production"},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    response.raise_for_status()
    return str(response.json()["deployment_id"])


def rollbacks(stack: LocalStack) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = httpx.get(f"{stack.services_url}/rollbacks").json()["rollbacks"]
    return found


def alarm_fires(stack: LocalStack, alarm: str) -> dict[str, Any]:
    """What an EventBridge rule on the default bus does with an alarm's state change: invoke the
    EventBridge function with the event (through moto's Lambda API, so the real handler runs)."""
    event = json.loads(SAMPLE.read_text(encoding="utf-8"))  # events/eventbridge-alarm.json
    event["id"] = str(uuid.uuid4())
    event["detail"]["alarmName"] = alarm
    answer = aws(stack, "lambda").invoke(
        FunctionName=stack.function_arn("EventBridgeFunction"), Payload=json.dumps(event).encode()
    )
    result: dict[str, Any] = json.loads(answer["Payload"].read())
    return result


def question_in_channel(stack: LocalStack, thread_id: str) -> SlackCall:
    """The approval request posted to the on-call channel for this thread."""

    def for_thread() -> list[SlackCall]:
        return [
            call
            for call in stack.slack.messages(ONCALL_CHANNEL)
            for block in call.arguments.get("blocks") or []
            if block["type"] == "actions"
            and json.loads(block["elements"][0]["value"])["thread_id"] == thread_id
        ]

    return poll_until(for_thread, lambda calls: len(calls) == 1)[0]


def final_message(stack: LocalStack, text: str) -> SlackCall:
    found = poll_until(
        lambda: [c for c in stack.slack.messages(ONCALL_CHANNEL) if c.arguments.get("text") == text],
        lambda calls: len(calls) == 1,
        timeout=60,
    )
    return found[0]


def test_an_alarm_after_a_deploy_asks_the_on_call_channel_and_an_approval_rolls_it_back(
    stack: LocalStack, scripts: ConversationScripts
) -> None:
    # Given two production deploys, the newest of which is the suspect
    deploy(stack, "v1.2.2")
    suspect = deploy(stack, "v1.2.3")
    rollbacks_before = len(rollbacks(stack))
    # ... and the model will propose rolling it back (the rollback's report is code's, not the model's)
    alarm = f"api-5xx-{uuid.uuid4().hex[:8]}"
    scripts.add(
        alarm,
        intent("roll_back", deployment_id=suspect, reason="the 5xx alarm fired right after this deploy"),
    )

    # When the alarm's state change reaches the EventBridge function
    launched = alarm_fires(stack, alarm)

    # Then the on-call agent's thread starts with the recent deploys already looked up (no model call)
    assert launched["action"] == "launch" and launched["agent"] == "oncall", launched
    thread_id = launched["thread_id"]
    poll_until(
        lambda: stored_event_types(stack, thread_id), lambda types: types[-1:] == ["approval_requested"]
    )
    assert stored_event_types(stack, thread_id) == [
        "user_message",
        "tool_call",
        "tool_result",
        "tool_call",
        "approval_requested",
    ]
    # ... the on-call channel is asked yes or no, with this thread's Approve and Reject buttons
    question = question_in_channel(stack, thread_id)
    assert "thread_ts" not in question.arguments  # the agent opened the conversation
    buttons = [e for b in question.arguments["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert [button["action_id"] for button in buttons] == [APPROVE_ACTION, REJECT_ACTION]
    assert "roll_back" in question.arguments["text"] and suspect in question.arguments["text"]
    # ... and nothing is rolled back while the execution waits on its task token
    assert len(rollbacks(stack)) == rollbacks_before
    assert execution(stack, thread_id)["status"] == "RUNNING"

    # When the on-call person clicks Approve
    click = stack.slack_user.click(question, APPROVE_ACTION)

    # Then the rollback runs once, to the tag the suspect deploy replaced, and the thread finishes
    assert click.status_code == 200
    poll_until(
        lambda: execution(stack, thread_id)["status"], lambda status: status == "SUCCEEDED", timeout=60
    )
    assert stored_event_types(stack, thread_id)[5:] == ["approval", "tool_result", "done"]
    assert pending_wait(stack, thread_id) is None
    new = rollbacks(stack)[rollbacks_before:]
    assert [(r["deployment_id"], r["from_tag"], r["to_tag"]) for r in new] == [(suspect, "v1.2.3", "v1.2.2")]
    # ... and the channel hears how it ended, in the agent's own words
    final_message(
        stack, f"Rolled back backend in production from v1.2.3 to v1.2.2 ({new[0]['rollback_id']})."
    )
    assert scripts.remaining(alarm) == 0


def test_a_rejected_rollback_rolls_nothing_back(stack: LocalStack, scripts: ConversationScripts) -> None:
    # Given a suspect deploy and a model that proposes rolling it back, then accepts the answer
    deploy(stack, "v1.2.1")
    suspect = deploy(stack, "v1.2.3")
    rollbacks_before = rollbacks(stack)
    alarm = f"api-latency-{uuid.uuid4().hex[:8]}"
    done = f"Nothing was rolled back for {alarm}."
    scripts.add(
        alarm,
        intent("roll_back", deployment_id=suspect, reason="latency rose right after this deploy"),
        intent("done_for_now", message=done),
    )

    # When the alarm fires and the on-call person clicks Reject
    thread_id = alarm_fires(stack, alarm)["thread_id"]
    question = question_in_channel(stack, thread_id)
    assert stack.slack_user.click(question, REJECT_ACTION).status_code == 200

    # Then the thread ends without a rollback, and the channel is told
    poll_until(
        lambda: execution(stack, thread_id)["status"], lambda status: status == "SUCCEEDED", timeout=60
    )
    assert stored_event_types(stack, thread_id)[5:] == ["approval", "done"]
    assert rollbacks(stack) == rollbacks_before
    final_message(stack, done)
