"""The Slack function on moto: every events/slack-*.json through the real handler, and SlackChannel
against the Slack stand-in on loopback.

The sample events carry placeholder signature headers (Slack signs each request with the app's
signing secret, which a file can't know). `deliver` re-signs a copy with this module's test secret at
the current time before handing it to the handler, exactly as Slack would sign it.

Executions run on a small "parking" state machine whose only state is the real waitForTaskToken
contract: its Lambda task is routed (LambdaBridge) to the runtime's Notify service, which stores the
task token and posts the question to the stand-in; a Slack answer must resume that execution.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.util
import json
import logging
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlencode

import boto3
import pytest
from slack_sdk import WebClient

from tests.integration import parking
from tests.integration.conftest import REGION
from tests.integration.parking import item_count, parking_machine_fixture  # noqa: F401 - fixture
from tests.integration.stack import (  # noqa: F401 - fixtures
    Stack,
    intent,
    stack_fixture,
    webhook_receiver_fixture,
)
from tests.support import poll_until
from twelvefactor import runtime
from twelvefactor.adapters.ports import ChannelError, ThreadMeta
from twelvefactor.adapters.slack_channel import SlackChannel
from twelvefactor.core import state
from twelvefactor.core.channels import EmailRef, Notification, SlackRef
from twelvefactor.core.events import (
    Approval,
    ApprovalRequested,
    ApprovalRequestedData,
    Event,
    HumanRequest,
    HumanRequestData,
    HumanResponse,
    ToolCall,
    ToolCallData,
    UserMessage,
    UserMessageData,
)
from twelvefactor.local.lambda_bridge import LambdaContext
from twelvefactor.local.slack_standin import SlackStandIn
from twelvefactor.settings import WorkflowSettings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
SECRET = "test-signing-secret-0123456789abcdef"
ALLOWED = "U0ALICE"
TEAM, CHANNEL = "T0TWELVE", "C0DEPLOYS"
APPROVAL_ROOT, QUESTION_ROOT = "1717399000.000001", "1717400000.000100"
AT = datetime(2024, 6, 3, 9, 0, tzinfo=UTC)


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def standin() -> Iterator[SlackStandIn]:
    with SlackStandIn() as slack:
        yield slack


@pytest.fixture
def rt(
    monkeypatch: pytest.MonkeyPatch,
    threads_table: str,
    idempotency_table: str,
    payload_bucket: str,
    parking_machine: str,
    standin: SlackStandIn,
) -> Iterator[runtime.Runtime]:
    for name, value in {
        "THREADS_TABLE": threads_table,
        "IDEMPOTENCY_TABLE": idempotency_table,
        "PAYLOAD_BUCKET": payload_bucket,
        "STATE_MACHINE_ARN": parking_machine,
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_BOT_TOKEN": "xoxb-test-token",
        "SLACK_API_BASE_URL": standin.base_url,
        "SLACK_ALLOWED_RESPONDERS": ALLOWED,
        "SLACK_DEFAULT_AGENT": "deploybot",
    }.items():
        monkeypatch.setenv(name, value)
    yield runtime.reset()
    runtime.reset()


@pytest.fixture
def app(rt: runtime.Runtime) -> ModuleType:
    """functions/slack/app.py, imported the way Lambda does: after the environment is in place."""
    spec = importlib.util.spec_from_file_location("slack_function_app", ROOT / "functions/slack/app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- helpers -----------------------------------------------------------------------------------


def load(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return event


def sign(event: dict[str, Any], *, secret: str = SECRET, at: float | None = None) -> dict[str, Any]:
    raw = base64.b64decode(event["body"]) if event.get("isBase64Encoded") else event["body"].encode()
    timestamp = str(int(time.time() if at is None else at))
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:".encode() + raw, hashlib.sha256).hexdigest()
    headers = {
        **event["headers"],
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": f"v0={digest}",
    }
    return {**event, "headers": headers}


def deliver(app: ModuleType, event: dict[str, Any], **signing: Any) -> dict[str, Any]:
    response: dict[str, Any] = app.handler(
        sign(event, **signing), LambdaContext(function_name="SlackFunction")
    )
    return response


def click_event(button: dict[str, Any], user: str, action_ts: str, message_ts: str) -> dict[str, Any]:
    """The interactivity request Slack sends when `user` clicks `button` (as we posted it)."""
    base = load("slack-button-approve.json")
    payload = {
        "type": "block_actions",
        "user": {"id": user},
        "team": {"id": TEAM},
        "channel": {"id": CHANNEL},
        "container": {"type": "message", "message_ts": message_ts, "channel_id": CHANNEL},
        "message": {"ts": message_ts, "text": "Approve deploy?"},
        "actions": [{**button, "action_ts": action_ts}],
    }
    return {**base, "body": urlencode({"payload": json.dumps(payload)})}


def events_of(rt: runtime.Runtime, thread_id: str) -> tuple[Event, ...]:
    return rt.store.load(thread_id)[1].events


def executions(rt: runtime.Runtime) -> list[dict[str, Any]]:
    return parking.executions(rt.settings(WorkflowSettings).state_machine_arn)


def slack_thread(rt: runtime.Runtime, thread_id: str, root: str, events: list[Event]) -> None:
    meta = ThreadMeta(
        thread_id=thread_id,
        agent="deploybot",
        created_at=AT,
        channel=SlackRef(team_id=TEAM, channel_id=CHANNEL, thread_ts=root, user_id="U0ALICE"),
    )
    rt.store.create(meta, events)
    rt.store.link(f"SLACK#{TEAM}#{CHANNEL}#{root}", thread_id)


def awaiting_approval(rt: runtime.Runtime, **extra_arguments: str) -> str:
    arguments = {"service": "web", "version": "1.4.2", "environment": "production", **extra_arguments}
    slack_thread(
        rt,
        "slack-sample-approval",
        APPROVAL_ROOT,
        [
            UserMessage(at=AT, data=UserMessageData(text="deploy web to production", channel="slack")),
            ToolCall(at=AT, data=ToolCallData(call_id="call-1", intent="deploy", arguments=arguments)),
            ApprovalRequested(
                at=AT, data=ApprovalRequestedData(call_id="call-1", intent="deploy", arguments=arguments)
            ),
        ],
    )
    return "slack-sample-approval"


def awaiting_question(rt: runtime.Runtime) -> str:
    question = HumanRequestData(
        question="Which rollout strategy?", format="multiple_choice", choices=["blue-green", "canary"]
    )
    slack_thread(
        rt,
        "slack-sample-question",
        QUESTION_ROOT,
        [
            UserMessage(at=AT, data=UserMessageData(text="deploy web to staging", channel="slack")),
            HumanRequest(at=AT, data=question),
        ],
    )
    return "slack-sample-question"


def thread_count(rt: runtime.Runtime) -> int:
    return len(rt.store.list_threads())


# --- the handler on every sample event ---------------------------------------------------------


def test_url_verification_answers_the_challenge_and_writes_nothing(
    app: ModuleType, rt: runtime.Runtime, threads_table: str, idempotency_table: str
) -> None:
    # When Slack verifies the request URL
    response = deliver(app, load("slack-url-verification.json"))
    # Then the challenge comes back and nothing is stored
    assert response["statusCode"] == 200
    assert json.loads(response["body"]) == {
        "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    }
    assert item_count(threads_table) == 0 and item_count(idempotency_table) == 0


def test_an_app_mention_launches_a_thread_that_answers_in_the_slack_thread(
    app: ModuleType, rt: runtime.Runtime, standin: SlackStandIn
) -> None:
    # When someone mentions the bot in a channel
    response = deliver(app, load("slack-app-mention.json"))
    # Then Slack gets its 200 and a thread exists, linked to the Slack conversation rooted at the mention
    assert response["statusCode"] == 200
    thread_id = rt.store.find_linked(f"SLACK#{TEAM}#{CHANNEL}#{QUESTION_ROOT}")
    assert thread_id is not None
    meta, thread = rt.store.load(thread_id)
    assert meta.channel == SlackRef(
        team_id=TEAM, channel_id=CHANNEL, thread_ts=QUESTION_ROOT, user_id="U0ALICE"
    )
    [message] = thread.events
    assert isinstance(message, UserMessage)
    assert (message.data.text, message.data.channel, message.data.sender) == (
        "please deploy web 1.4.2 to staging",
        "slack",
        "U0ALICE",
    )
    # And its execution started with the thread id as its only input
    [execution] = executions(rt)
    assert json.loads(execution["input"]) == {"thread_id": thread_id}


def test_a_mention_with_no_agent_configured_is_told_so_and_writes_nothing(
    app: ModuleType, rt: runtime.Runtime, standin: SlackStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given no SLACK_DEFAULT_AGENT (the framework's own default names no agent)
    monkeypatch.delenv("SLACK_DEFAULT_AGENT")
    rt = runtime.reset()
    # When someone mentions the bot
    response = deliver(app, load("slack-app-mention.json"))
    # Then Slack gets its 200, the person is told, and no thread, link or execution exists
    assert response["statusCode"] == 200
    assert any("No agent is configured" in str(call.arguments.get("text")) for call in standin.calls)
    assert thread_count(rt) == 0
    assert rt.store.find_linked(f"SLACK#{TEAM}#{CHANNEL}#{QUESTION_ROOT}") is None
    assert executions(rt) == []


def test_a_direct_message_launches_a_thread(app: ModuleType, rt: runtime.Runtime) -> None:
    deliver(app, load("slack-direct-message.json"))
    thread_id = rt.store.find_linked(f"SLACK#{TEAM}#D0ALICE#1717400100.000200")
    assert thread_id is not None
    [message] = events_of(rt, thread_id)
    assert isinstance(message, UserMessage) and message.data.text == "what is running on production?"


def test_a_mention_inside_a_known_thread_answers_its_question(app: ModuleType, rt: runtime.Runtime) -> None:
    # Given a thread waiting for an answer in the Slack conversation the reply is posted in
    thread_id = awaiting_question(rt)
    # When the person answers in that Slack thread
    deliver(app, load("slack-thread-reply.json"))
    # Then the answer is the thread's human response, not a new thread
    last = events_of(rt, thread_id)[-1]
    assert isinstance(last, HumanResponse)
    assert (last.data.text, last.data.by) == ("use the blue-green strategy", "U0ALICE")
    assert thread_count(rt) == 1


def test_a_bot_message_changes_nothing(app: ModuleType, rt: runtime.Runtime, idempotency_table: str) -> None:
    response = deliver(app, load("slack-bot-message.json"))
    assert response["statusCode"] == 200
    assert thread_count(rt) == 0 and item_count(idempotency_table) == 0


def test_a_choice_click_answers_the_question(
    app: ModuleType, rt: runtime.Runtime, standin: SlackStandIn
) -> None:
    thread_id = awaiting_question(rt)
    # When anyone in the conversation clicks the "canary" choice
    response = deliver(app, load("slack-button-choice.json"))
    # Then the thread has that answer, and the question's buttons are replaced by who answered what
    assert response["statusCode"] == 200
    last = events_of(rt, thread_id)[-1]
    assert isinstance(last, HumanResponse) and (last.data.text, last.data.by) == ("canary", "U0BOB")
    [update] = [call for call in standin.calls if call.method == "chat.update"]
    assert update.arguments["ts"] == "1717400050.000150"
    assert "canary" in update.arguments["text"] and "<@U0BOB>" in update.arguments["text"]
    assert all(block["type"] != "actions" for block in update.arguments["blocks"])


@pytest.mark.parametrize(
    ("name", "approved"), [("slack-button-approve.json", True), ("slack-button-reject.json", False)]
)
def test_an_allowed_responder_approves_or_rejects(
    app: ModuleType, rt: runtime.Runtime, name: str, approved: bool
) -> None:
    thread_id = awaiting_approval(rt)
    deliver(app, load(name))
    last = events_of(rt, thread_id)[-1]
    assert isinstance(last, Approval)
    assert (last.data.call_id, last.data.approved, last.data.by) == ("call-1", approved, "U0ALICE")


def test_an_approval_click_lands_without_reading_the_payloads_kept_in_s3(
    app: ModuleType, rt: runtime.Runtime, lose_payloads: Callable[[str], int]
) -> None:
    # Given a thread waiting for approval of a call whose arguments are kept in S3, and those
    # payloads unreadable (deleted here), so that reading any of them would fail the click
    thread_id = awaiting_approval(rt, notes="n" * 60_000)
    assert lose_payloads(thread_id) > 0

    # When the approver clicks Approve
    response = deliver(app, load("slack-button-approve.json"))

    # Then the approval lands for that call: the click was checked and decided on DynamoDB alone
    assert response["statusCode"] == 200
    last = rt.store.load_outline(thread_id)[1].events[-1]
    assert isinstance(last, Approval) and (last.data.call_id, last.data.approved) == ("call-1", True)


def test_someone_not_allowed_to_approve_is_refused_privately_and_nothing_is_written(
    app: ModuleType, rt: runtime.Runtime, standin: SlackStandIn, idempotency_table: str
) -> None:
    # Given a thread waiting for approval
    thread_id = awaiting_approval(rt)
    before = events_of(rt, thread_id)
    # When a user who is not an allowed responder clicks Approve
    response = deliver(app, load("slack-button-unauthorized.json"))
    # Then only they see a refusal, and neither the thread nor the idempotency table changed
    assert response["statusCode"] == 200
    assert json.loads(response["body"])["response_type"] == "ephemeral"
    [refusal] = [call for call in standin.calls if call.method == "chat.postEphemeral"]
    assert refusal.arguments["user"] == "U0BOB" and "approvers" in refusal.arguments["text"]
    assert events_of(rt, thread_id) == before
    assert item_count(idempotency_table) == 0


def test_a_second_decision_on_an_answered_approval_is_refused(
    app: ModuleType, rt: runtime.Runtime, standin: SlackStandIn
) -> None:
    # Given an approval already approved with one click
    thread_id = awaiting_approval(rt)
    deliver(app, load("slack-button-approve.json"))
    approved = events_of(rt, thread_id)
    # When the same approver clicks Reject on the old message (a different click)
    deliver(app, load("slack-button-reject.json"))
    # Then the thread is unchanged and the approver is told why
    assert events_of(rt, thread_id) == approved
    [refusal] = [call for call in standin.calls if call.method == "chat.postEphemeral"]
    assert "isn't waiting" in refusal.arguments["text"]


# Per sample: what must exist before it arrives, and which events one delivery adds.
SAMPLES: dict[str, tuple[Any, list[type]]] = {
    "slack-url-verification.json": (None, []),
    "slack-app-mention.json": (None, [UserMessage]),
    "slack-retry.json": (None, [UserMessage]),
    "slack-direct-message.json": (None, [UserMessage]),
    "slack-bot-message.json": (None, []),
    "slack-thread-reply.json": (awaiting_question, [HumanResponse]),
    "slack-button-choice.json": (awaiting_question, [HumanResponse]),
    "slack-button-approve.json": (awaiting_approval, [Approval]),
    "slack-button-reject.json": (awaiting_approval, [Approval]),
    "slack-button-unauthorized.json": (awaiting_approval, []),
}


def all_events(rt: runtime.Runtime) -> list[Event]:
    return [event for meta in rt.store.list_threads() for event in events_of(rt, meta.thread_id)]


def test_every_slack_sample_is_covered() -> None:
    assert sorted(SAMPLES) == sorted(path.name for path in EVENTS.glob("slack-*.json"))


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_slack_delivery_twice_has_one_effect(app: ModuleType, rt: runtime.Runtime, name: str) -> None:
    # Given the state the sample expects
    setup, added = SAMPLES[name]
    if setup is not None:
        setup(rt)
    before = all_events(rt)
    # When Slack delivers it, and then delivers it again
    first = deliver(app, load(name))
    after_first = all_events(rt)
    second = deliver(app, load(name))
    # Then both are acknowledged and only the first one added events
    assert first["statusCode"] == second["statusCode"] == 200
    assert [type(event) for event in after_first[len(before) :]] == added
    assert all_events(rt) == after_first


def test_a_retry_after_the_original_was_processed_takes_the_fast_path(
    app: ModuleType, rt: runtime.Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a mention that was processed (and the handler's logger at INFO, whatever an earlier
    # test in this process configured it with: Powertools loggers are process-wide)
    caplog.set_level(logging.INFO, logger=app.logger.name)
    deliver(app, load("slack-app-mention.json"))
    caplog.clear()
    # When Slack retries it (X-Slack-Retry-Num: 1)
    response = deliver(app, load("slack-retry.json"))
    # Then it is acknowledged from the idempotency record alone: no second event, logged as a retry
    assert response["statusCode"] == 200
    assert "slack retry of a processed delivery" in caplog.messages
    assert len(all_events(rt)) == 1


def test_a_first_delivery_marked_as_retry_is_still_processed(app: ModuleType, rt: runtime.Runtime) -> None:
    # Given the original never got through (a retry is the first copy we see)
    # When the retry arrives, Then it is processed like the original
    deliver(app, load("slack-retry.json"))
    assert [type(event) for event in all_events(rt)] == [UserMessage]


# --- refused requests --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["slack-app-mention.json", "slack-button-approve.json"])
@pytest.mark.parametrize(
    "signing", [{"secret": "someone-elses-secret"}, {"at": time.time() - 6 * 60}], ids=["forged", "stale"]
)
def test_a_bad_or_stale_signature_is_401_and_writes_nothing(
    app: ModuleType,
    rt: runtime.Runtime,
    standin: SlackStandIn,
    threads_table: str,
    idempotency_table: str,
    name: str,
    signing: dict[str, Any],
) -> None:
    # Given a thread an approval click would change
    awaiting_approval(rt)
    threads_before = item_count(threads_table)
    # When a request arrives signed with the wrong secret, or more than five minutes ago
    response = deliver(app, load(name), **signing)
    # Then it is refused as unauthorised and nothing anywhere changed
    assert response["statusCode"] == 401
    assert item_count(threads_table) == threads_before
    assert item_count(idempotency_table) == 0
    assert executions(rt) == [] and standin.calls == []


def test_an_unsigned_request_is_401(app: ModuleType, rt: runtime.Runtime) -> None:
    event = load("slack-app-mention.json")
    response = app.handler(event, LambdaContext(function_name="SlackFunction"))
    assert response["statusCode"] == 401 and thread_count(rt) == 0


def test_a_signed_but_malformed_body_is_400(app: ModuleType, rt: runtime.Runtime) -> None:
    event = {**load("slack-app-mention.json"), "body": '{"type": "event_callback"}'}
    assert deliver(app, event)["statusCode"] == 400
    assert thread_count(rt) == 0


# --- the whole pause/resume round trip through Slack -------------------------------------------


def test_an_approval_posted_by_notify_and_clicked_in_slack_resumes_the_paused_execution(
    app: ModuleType, rt: runtime.Runtime, standin: SlackStandIn
) -> None:
    # Given a thread waiting for approval whose execution paused: Notify stored the token and
    # posted the question with buttons into the Slack thread
    thread_id = awaiting_approval(rt)
    execution_arn = rt.workflow.start(thread_id, 2)
    [posted] = poll_until(lambda: standin.messages(CHANNEL), lambda messages: len(messages) == 1)
    assert posted.arguments["thread_ts"] == APPROVAL_ROOT
    wait = rt.store.get_wait(thread_id)
    assert wait is not None
    [actions] = [block for block in posted.arguments["blocks"] if block["type"] == "actions"]
    approve = next(button for button in actions["elements"] if button["text"]["text"] == "Approve")
    assert wait.task_token not in json.dumps(posted.arguments)
    # When an allowed responder clicks that very button
    deliver(app, click_event(approve, ALLOWED, action_ts="1717400999.000001", message_ts="1717399050.000150"))
    # Then the approval is recorded and the paused execution resumes with the thread id
    assert state.status(events_of(rt, thread_id)) is state.ThreadStatus.TOOL_PENDING
    sfn = boto3.client("stepfunctions", region_name=REGION)
    finished = poll_until(
        lambda: sfn.describe_execution(executionArn=execution_arn),
        lambda described: described["status"] != "RUNNING",
    )
    assert finished["status"] == "SUCCEEDED"
    assert json.loads(finished["output"]) == {"thread_id": thread_id}
    assert rt.store.get_wait(thread_id) is None


# --- SlackChannel against the stand-in ---------------------------------------------------------

REF = SlackRef(team_id=TEAM, channel_id=CHANNEL, thread_ts=APPROVAL_ROOT)


def channel_for(standin: SlackStandIn, operations: str | None = None) -> SlackChannel:
    return SlackChannel(
        WebClient(token="xoxb-test", base_url=standin.base_url), operations_channel=operations
    )


def test_an_approval_request_is_posted_in_thread_with_approve_and_reject_buttons(
    standin: SlackStandIn,
) -> None:
    notification = Notification(
        thread_id="t-1",
        kind="approval",
        text="Approve deploy(web)?",
        format="approve_reject",
        call_id="call-3",
    )
    channel_for(standin).send(REF, notification)
    [message] = standin.messages(CHANNEL)
    assert message.arguments["thread_ts"] == APPROVAL_ROOT and message.token == "xoxb-test"
    [section, actions] = message.arguments["blocks"]
    assert section["text"]["text"] == "Approve deploy(web)?"
    assert [(button["action_id"], json.loads(button["value"])) for button in actions["elements"]] == [
        ("twelvefactor_approve", {"thread_id": "t-1", "call_id": "call-3"}),
        ("twelvefactor_reject", {"thread_id": "t-1", "call_id": "call-3"}),
    ]


@pytest.mark.parametrize(
    ("format_", "choices", "labels"),
    [("yes_no", (), ["Yes", "No"]), ("multiple_choice", ("blue-green", "canary"), ["blue-green", "canary"])],
)
def test_choices_are_buttons_carrying_their_answer(
    standin: SlackStandIn, format_: Any, choices: tuple[str, ...], labels: list[str]
) -> None:
    notification = Notification(
        thread_id="t-2", kind="question", text="Which?", format=format_, choices=choices
    )
    channel_for(standin).send(REF, notification)
    [message] = standin.messages(CHANNEL)
    [actions] = [block for block in message.arguments["blocks"] if block["type"] == "actions"]
    assert [button["text"]["text"] for button in actions["elements"]] == labels
    assert [json.loads(button["value"]) for button in actions["elements"]] == [
        {"thread_id": "t-2", "answer": label} for label in labels
    ]


def test_a_free_text_question_is_plain_text_with_a_hint_to_reply_in_thread(standin: SlackStandIn) -> None:
    channel_for(standin).send(REF, Notification(thread_id="t-3", kind="question", text="Which version?"))
    [message] = standin.messages(CHANNEL)
    assert message.arguments["text"] == "Which version?"
    assert [block["type"] for block in message.arguments["blocks"]] == ["section", "context"]


def test_the_agents_words_cannot_ping_the_channel(standin: SlackStandIn) -> None:
    channel_for(standin).send(REF, Notification(thread_id="t-4", kind="done", text="Done <!channel> & <@U1>"))
    [message] = standin.messages(CHANNEL)
    assert message.arguments["text"] == "Done &lt;!channel&gt; &amp; &lt;@U1&gt;"


def test_an_escalation_also_reaches_the_operations_channel(standin: SlackStandIn) -> None:
    notification = Notification(thread_id="t-5", kind="escalation", text="3 errors in a row")
    channel_for(standin, operations="C0OPS").send(REF, notification)
    assert standin.messages(CHANNEL)[0].arguments["text"] == "3 errors in a row"
    [copy] = standin.messages("C0OPS")
    assert "t-5" in copy.arguments["text"] and "thread_ts" not in copy.arguments


def test_a_done_message_goes_only_to_the_thread(standin: SlackStandIn) -> None:
    channel_for(standin, operations="C0OPS").send(
        REF, Notification(thread_id="t-6", kind="done", text="Deployed.")
    )
    assert [call.arguments["channel"] for call in standin.calls] == [CHANNEL]


def test_a_slack_error_is_a_channel_error(standin: SlackStandIn) -> None:
    # Given a Slack that refuses the call (the stand-in answers an unknown method like Slack does)
    channel = channel_for(standin)
    # When the channel calls it, Then the failure is typed
    with pytest.raises(ChannelError, match="unknown_method"):
        channel._call("reactions.add", channel=CHANNEL)


def test_an_unreachable_slack_is_a_channel_error() -> None:
    # Given a port nothing listens on
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    channel = SlackChannel(WebClient(token="xoxb-test", base_url=f"http://127.0.0.1:{port}/api/", timeout=2))
    with pytest.raises(ChannelError):
        channel.send(REF, Notification(thread_id="t-7", kind="done", text="Deployed."))


def test_another_channels_reference_is_refused(standin: SlackStandIn) -> None:
    ref = EmailRef(address="ann@ops.example.com", message_id="<m@x>")
    with pytest.raises(ChannelError, match="email"):
        channel_for(standin).send(ref, Notification(thread_id="t-8", kind="done", text="Deployed."))
    assert standin.calls == []


# --- the whole loop on the real state machine --------------------------------------------------


def test_a_mention_runs_to_done_with_the_approval_and_the_answer_in_the_slack_thread(
    stack: Stack, standin: SlackStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the real state machine and a model that wants to deploy to production (approval needed)
    for name, value in {
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_BOT_TOKEN": "xoxb-test-token",
        "SLACK_API_BASE_URL": standin.base_url,
        "SLACK_ALLOWED_RESPONDERS": ALLOWED,
    }.items():
        monkeypatch.setenv(name, value)
    stack.script(intent("list_git_tags"), intent("deploy_backend", tag="v1.2.3", environment="production"))
    # When someone mentions the bot in a channel
    response = stack.invoke("SlackFunction", sign(load("slack-app-mention.json")))
    assert response["statusCode"] == 200
    thread_id = stack.store.find_linked(f"SLACK#{TEAM}#{CHANNEL}#{QUESTION_ROOT}")
    stack.wait_for(thread_id, state.ThreadStatus.AWAITING_APPROVAL)
    # Then Notify asked for approval with buttons in that Slack thread
    [question] = poll_until(lambda: standin.messages(CHANNEL), lambda messages: len(messages) == 1)
    assert question.arguments["thread_ts"] == QUESTION_ROOT
    [actions] = [block for block in question.arguments["blocks"] if block["type"] == "actions"]
    approve = next(button for button in actions["elements"] if button["action_id"] == "twelvefactor_approve")
    # When an allowed responder clicks Approve
    click = click_event(approve, ALLOWED, action_ts="1717400070.000001", message_ts="1717400050.000150")
    assert stack.invoke("SlackFunction", sign(click))["statusCode"] == 200
    # Then the deploy runs, the thread is done, and the final message lands in the same Slack thread
    stack.wait_for(thread_id, state.ThreadStatus.DONE)
    messages = poll_until(lambda: standin.messages(CHANNEL), lambda messages: len(messages) == 2)
    assert messages[-1].arguments["thread_ts"] == QUESTION_ROOT
    assert messages[-1].arguments["text"] == "Deployed backend v1.2.3 to production (deployment dep-0001)."
