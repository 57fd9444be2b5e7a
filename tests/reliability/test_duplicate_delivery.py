"""Duplicate delivery: every trigger's input arrives three times, as at-least-once sources deliver it.

Each delivery goes through the real handler (Slack, Email, EventBridge, Api) and the thread runs
in moto's execution of the real state machine. One input must have exactly one effect: one
thread, one event, one execution, one message to the person, one deploy.
"""

from __future__ import annotations

from typing import Any

import pytest
from moto.ses.models import ses_backends

from tests.integration.conftest import ACCOUNT_ID, REGION
from tests.integration.stack import Stack, api_event, intent, signed_callback_event
from tests.reliability.conftest import Cases
from tests.reliability.support import (
    APPROVER,
    buttons,
    deploys,
    eventbridge_event,
    mime,
    ses_receipt,
    signed_slack,
    slack_click,
    slack_mention,
    store_raw_email,
)
from tests.support import poll_until
from twelvefactor.core.events import Approval, HumanRequest, UserMessage
from twelvefactor.core.state import ThreadStatus
from twelvefactor.local.slack_standin import SlackStandIn

pytestmark = [pytest.mark.scenario("Duplicate delivery"), pytest.mark.integration]

DELIVERIES = 3
QUESTION = intent("request_human_input", question="Which tag should I deploy?")
DEPLOY_PRODUCTION = intent("deploy_backend", tag="v1.2.3", environment="production")
# deploybot deploys only once the tags are in the thread; the deploy's done message is code's.
LIST_TAGS = intent("list_git_tags")


def _one_thread(stack: Stack) -> str:
    [meta] = stack.store.list_threads()
    return str(meta.thread_id)


def test_a_slack_message_retried_by_slack_has_one_effect(
    stack: Stack, slack: SlackStandIn, cases: Cases
) -> None:
    """An app mention delivered, then retried twice with X-Slack-Retry-Num: one thread, one user
    message, one execution, one question posted back to Slack."""
    # Given a model that asks a question
    stack.script(QUESTION)
    mention = slack_mention("deploy the backend", ts="1717400000.000100", event_id="Ev0DUPLICATE01")

    # When Slack delivers the mention, then retries it twice
    responses = [stack.invoke("SlackFunction", signed_slack(mention, retry=n)) for n in range(DELIVERIES)]
    cases.add(DELIVERIES)

    # Then every delivery is acknowledged, and there is one of everything
    assert [response["statusCode"] for response in responses] == [200] * DELIVERIES
    thread = stack.wait_for(_one_thread(stack), ThreadStatus.AWAITING_HUMAN)
    assert [type(event) for event in thread.events] == [UserMessage, HumanRequest]
    assert len(stack.executions()) == 1
    posted = poll_until(slack.messages, bool)
    assert [call.arguments["text"] for call in posted] == ["Which tag should I deploy?"]


def test_an_email_redelivered_by_ses_has_one_effect(
    stack: Stack, slack: SlackStandIn, payload_bucket: str, cases: Cases
) -> None:
    """The same SES messageId invoking the Email function three times: one thread, one execution,
    one question mailed back."""
    # Given a stored email and a model that asks a question
    stack.script(QUESTION)
    _message_id, raw = mime(body="Please deploy the backend.")
    store_raw_email(payload_bucket, "ses-duplicate-0001", raw)

    # When SES invokes the function three times for it
    results = [stack.invoke("EmailFunction", ses_receipt("ses-duplicate-0001")) for _ in range(DELIVERIES)]
    cases.add(DELIVERIES)

    # Then all three name the same thread, which exists once and asked its question once
    thread_id = _one_thread(stack)
    assert [(result["outcome"], result["thread_id"]) for result in results] == [("launched", thread_id)] * 3
    thread = stack.wait_for(thread_id, ThreadStatus.AWAITING_HUMAN)
    assert [type(event) for event in thread.events] == [UserMessage, HumanRequest]
    assert len(stack.executions()) == 1
    # (Notify saves the wait before it sends, so the mail may still be on its way)
    sent = poll_until(lambda: list(ses_backends[ACCOUNT_ID][REGION].sent_messages), bool)
    assert len(sent) == 1


def test_an_eventbridge_event_redelivered_has_one_effect(stack: Stack, cases: Cases) -> None:
    """The same EventBridge event id delivered three times: one launch, one thread, one execution."""
    # Given a model that asks a question
    stack.script(QUESTION)
    event = eventbridge_event("0b9a4e2c-duplicate", {"service": "backend", "tag": "v1.2.3"})

    # When EventBridge delivers the event three times
    results = [stack.invoke("EventBridgeFunction", event) for _ in range(DELIVERIES)]
    cases.add(DELIVERIES)

    # Then each names the one thread, which ran once
    thread_id = _one_thread(stack)
    assert {(result["action"], result["thread_id"]) for result in results} == {("launch", thread_id)}
    stack.wait_for(thread_id, ThreadStatus.AWAITING_HUMAN)
    assert len(stack.events(thread_id)) == 2
    assert len(stack.executions()) == 1


def test_an_api_launch_retried_with_its_idempotency_key_has_one_effect(stack: Stack, cases: Cases) -> None:
    """POST /threads sent three times with one Idempotency-Key: the same 202 and thread id each
    time, one thread, one execution."""
    # Given a model that asks a question
    stack.script(QUESTION)

    # When the client sends its launch three times (a timeout, a retry, a retry)
    responses = [stack.api(api_event("api-launch")) for _ in range(DELIVERIES)]
    cases.add(DELIVERIES)

    # Then it gets the same answer each time, and one thread ran once
    assert {(response.status, response.body["thread_id"]) for response in responses} == {
        (202, _one_thread(stack))
    }
    stack.wait_for(_one_thread(stack), ThreadStatus.AWAITING_HUMAN)
    assert len(stack.executions()) == 1


def _launch_in_slack_waiting_for_approval(stack: Stack, slack: SlackStandIn) -> tuple[str, dict[str, Any]]:
    stack.script(LIST_TAGS, DEPLOY_PRODUCTION)
    mention = slack_mention("deploy v1.2.3 to production", ts="1717400100.000100", event_id="Ev0APPROVAL01")
    assert stack.invoke("SlackFunction", signed_slack(mention))["statusCode"] == 200
    thread_id = _one_thread(stack)
    stack.wait_for(thread_id, ThreadStatus.AWAITING_APPROVAL)
    # (Notify saves the wait before it posts, so the message may still be on its way)
    [question] = poll_until(lambda: [call for call in slack.messages() if call.arguments.get("blocks")], bool)
    return thread_id, buttons(question.arguments["blocks"])["twelvefactor_approve"]


def test_an_approval_button_clicked_three_times_approves_and_deploys_once(
    stack: Stack, slack: SlackStandIn, cases: Cases
) -> None:
    """A double click (and a third) on Approve: one approval event, one production deploy; the
    extra clicks are told privately that the thread is not waiting for that answer."""
    # Given a Slack thread waiting for approval of a production deploy
    thread_id, approve = _launch_in_slack_waiting_for_approval(stack, slack)

    # When the approver clicks Approve three times in quick succession (three distinct clicks)
    responses = [
        stack.invoke(
            "SlackFunction",
            signed_slack(
                slack_click(
                    approve, user=APPROVER, action_ts=f"17174002{n}.000001", message_ts="1717400150.0"
                )
            ),
        )
        for n in range(DELIVERIES)
    ]
    cases.add(DELIVERIES)

    # Then all are acknowledged, the thread finished with one approval and one deploy
    assert [response["statusCode"] for response in responses] == [200] * DELIVERIES
    finished = stack.wait_for(thread_id, ThreadStatus.DONE)
    assert len([event for event in finished.events if isinstance(event, Approval)]) == 1
    assert [(d["tag"], d["environment"]) for d in deploys(stack.deploy_service_url)] == [
        ("v1.2.3", "production")
    ]
    # And the two extra clicks got a private "not waiting for that" instead of a second effect
    ephemeral = [call for call in slack.calls if call.method == "chat.postEphemeral"]
    assert len(ephemeral) == DELIVERIES - 1
    assert all("isn't waiting" in call.arguments["text"] for call in ephemeral)


def _launch_via_api_waiting_for_approval(stack: Stack) -> tuple[str, str]:
    stack.script(LIST_TAGS, DEPLOY_PRODUCTION)
    launched = stack.api(api_event("api-launch"))
    thread_id = str(launched.body["thread_id"])
    stack.wait_for(thread_id, ThreadStatus.AWAITING_APPROVAL)
    return thread_id, stack.wait(thread_id).callback_id


def test_the_same_webhook_callback_three_times_answers_once(stack: Stack, cases: Cases) -> None:
    """A signed POST /callbacks/{id} approving a deploy, sent three times: the first is taken (202),
    the repeats find no wait (404), one approval and one deploy result."""
    # Given a thread waiting for approval, whose wait has a callback id
    thread_id, callback_id = _launch_via_api_waiting_for_approval(stack)

    # When the caller's system sends the same approval three times
    responses = [
        stack.api(signed_callback_event(callback_id, {"approved": True, "comment": "ok"}))
        for _ in range(DELIVERIES)
    ]
    cases.add(DELIVERIES)

    # Then only the first resumed the thread; the others are clear 404s
    assert [response.status for response in responses] == [202, 404, 404]
    finished = stack.wait_for(thread_id, ThreadStatus.DONE)
    assert len([event for event in finished.events if isinstance(event, Approval)]) == 1
    assert len(deploys(stack.deploy_service_url)) == 1


def test_the_same_eventbridge_callback_three_times_answers_once(stack: Stack, cases: Cases) -> None:
    """An EventBridge event carrying a callback (approve) delivered three times with one event id:
    one approval, one deploy, and the repeats are answered from the first delivery's record."""
    # Given a thread waiting for approval
    thread_id, callback_id = _launch_via_api_waiting_for_approval(stack)
    event = eventbridge_event(
        "5e7d1c2a-callback", {"callback_id": callback_id, "approved": True}, detail_type="Approval Given"
    )

    # When EventBridge delivers the event three times
    results = [stack.invoke("EventBridgeFunction", event) for _ in range(DELIVERIES)]
    cases.add(DELIVERIES)

    # Then each reports the same callback, and the thread was approved and deployed once
    assert results == [{"action": "callback", "thread_id": thread_id}] * DELIVERIES
    finished = stack.wait_for(thread_id, ThreadStatus.DONE)
    assert len([event for event in finished.events if isinstance(event, Approval)]) == 1
    assert len(deploys(stack.deploy_service_url)) == 1
