"""The Email function on moto: every events/email-*.json through the real handler (the raw MIME in
S3 where the receipt rule's S3 action puts it), and EmailChannel through moto's SES.

events/email-receipt.eml and events/email-reply.eml are the raw messages behind the two receipts;
`arrive` uploads one to ``inbound/<messageId>`` before the receipt reaches the handler.
"""

from __future__ import annotations

import copy
import email
import email.policy
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto.ses.models import ses_backends

from tests.integration.conftest import ACCOUNT_ID, REGION
from tests.integration.parking import executions, item_count, parking_machine_fixture  # noqa: F401 - fixture
from tests.integration.stack import (  # noqa: F401 - fixtures
    Stack,
    intent,
    stack_fixture,
    webhook_receiver_fixture,
)
from tests.support import poll_until
from twelvefactor import runtime
from twelvefactor.adapters.email_channel import EmailChannel
from twelvefactor.adapters.ports import ChannelError, ThreadMeta
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
from twelvefactor.local.handlers import load_module
from twelvefactor.local.lambda_bridge import LambdaContext

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
AGENT = "agent@agents.example.com"
ANN = "ann@ops.example.com"
LAUNCH_ID = "<CAF-launch-0001@mail.example.com>"
AT = datetime(2024, 6, 3, 9, 0, tzinfo=UTC)
SAMPLE_MIME = {"email-receipt.json": "email-receipt.eml", "email-reply.json": "email-reply.eml"}


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def ses(aws: None) -> Any:
    """SES with our sending address verified; `sent()` reads what moto recorded as sent."""
    boto3.client("ses", region_name=REGION).verify_email_identity(EmailAddress=AGENT)
    return boto3.client("sesv2", region_name=REGION)


def text_of(message: EmailMessage) -> str:
    """The body as a reader sees it (SMTP line endings normalised)."""
    content = message.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def sent() -> list[EmailMessage]:
    backend = ses_backends[ACCOUNT_ID][REGION]
    messages = []
    for message in backend.sent_messages:
        parsed = email.message_from_string(message.raw_data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        messages.append(parsed)
    return messages


@pytest.fixture
def rt(
    monkeypatch: pytest.MonkeyPatch,
    threads_table: str,
    idempotency_table: str,
    payload_bucket: str,
    parking_machine: str,
    ses: Any,
) -> Iterator[runtime.Runtime]:
    for name, value in {
        "THREADS_TABLE": threads_table,
        "IDEMPOTENCY_TABLE": idempotency_table,
        "PAYLOAD_BUCKET": payload_bucket,
        "STATE_MACHINE_ARN": parking_machine,
        "EMAIL_ALLOWED_SENDERS": "@ops.example.com,boss@example.org",
        "EMAIL_FROM_ADDRESS": AGENT,
        "EMAIL_DEFAULT_AGENT": "deploybot",
    }.items():
        monkeypatch.setenv(name, value)
    yield runtime.reset()
    runtime.reset()


@pytest.fixture
def app(rt: runtime.Runtime) -> ModuleType:
    """functions/email/app.py, imported the way Lambda does: after the environment is in place."""
    return load_module(ROOT / "functions/email/app.py", "email_function_app_under_test")


# --- helpers -----------------------------------------------------------------------------------


def receipt(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return event


def ses_id(event: dict[str, Any]) -> str:
    return str(event["Records"][0]["ses"]["mail"]["messageId"])


def arrive(app: ModuleType, event: dict[str, Any], raw: bytes | None) -> dict[str, Any]:
    """What SES does: store the raw message under inbound/<messageId>, then invoke the function."""
    if raw is not None:
        bucket = runtime.current().settings(runtime.StoreSettings).payload_bucket
        boto3.client("s3", region_name=REGION).put_object(
            Bucket=bucket, Key=f"inbound/{ses_id(event)}", Body=raw
        )
    result: dict[str, Any] = app.handler(copy.deepcopy(event), LambdaContext(function_name="EmailFunction"))
    return result


def sample_mime(name: str) -> bytes | None:
    mime = SAMPLE_MIME.get(name)
    return (EVENTS / mime).read_bytes() if mime else None


def reply_to(
    message: EmailMessage, body: str, *, ses_message_id: str, sender: str = ANN
) -> tuple[dict[str, Any], bytes]:
    """Ann's answer to one of our emails, as her mail client would thread it, and its SES receipt."""
    answer = EmailMessage()
    answer["From"] = f"Ann Operator <{sender}>"
    answer["To"] = AGENT
    answer["Subject"] = f"Re: {message['Subject']}"
    answer["Message-ID"] = f"<answer-{ses_message_id}@mail.example.com>"
    answer["In-Reply-To"] = message["Message-ID"]
    answer["References"] = f"{message['References']} {message['Message-ID']}"
    answer.set_content(f"{body}\n\nOn Mon, 3 Jun 2024, Agent <{AGENT}> wrote:\n> {text_of(message)}")
    event = receipt("email-reply.json")
    mail = event["Records"][0]["ses"]["mail"]
    mail["messageId"] = ses_message_id
    mail["commonHeaders"]["from"] = [f"Ann Operator <{sender}>"]
    return event, answer.as_bytes()


def email_thread(rt: runtime.Runtime, thread_id: str, events: list[Event]) -> str:
    ref = EmailRef(address=ANN, subject="Deploy web 1.4.2 to staging", message_id=LAUNCH_ID)
    rt.store.create(ThreadMeta(thread_id=thread_id, agent="deploybot", created_at=AT, channel=ref), events)
    rt.store.link(ref.correlation_key, thread_id)
    return thread_id


def awaiting_approval(rt: runtime.Runtime, **extra_arguments: str) -> str:
    arguments = {"service": "web", "version": "1.4.2", "environment": "staging", **extra_arguments}
    return email_thread(
        rt,
        "email-sample-approval",
        [
            UserMessage(at=AT, data=UserMessageData(text="Please deploy web 1.4.2", channel="email")),
            ToolCall(at=AT, data=ToolCallData(call_id="call-1", intent="deploy", arguments=arguments)),
            ApprovalRequested(
                at=AT, data=ApprovalRequestedData(call_id="call-1", intent="deploy", arguments=arguments)
            ),
        ],
    )


def awaiting_question(rt: runtime.Runtime) -> str:
    return email_thread(
        rt,
        "email-sample-question",
        [
            UserMessage(at=AT, data=UserMessageData(text="Please deploy web", channel="email")),
            HumanRequest(at=AT, data=HumanRequestData(question="Which version?")),
        ],
    )


def events_of(rt: runtime.Runtime, thread_id: str) -> tuple[Event, ...]:
    return rt.store.load(thread_id)[1].events


def all_events(rt: runtime.Runtime) -> list[Event]:
    return [event for meta in rt.store.list_threads() for event in events_of(rt, meta.thread_id)]


# --- the handler on every sample event ---------------------------------------------------------


def test_a_new_email_launches_a_thread_that_replies_by_email(app: ModuleType, rt: runtime.Runtime) -> None:
    # When an allowed sender writes to the agent (the SAM-shaped receipt, without dmarcVerdict)
    result = arrive(app, receipt("email-receipt.json"), sample_mime("email-receipt.json"))
    # Then a thread holds only the new text, and remembers how to reply in the conversation
    assert result["outcome"] == "launched"
    thread_id = rt.store.find_linked(f"EMAIL#{LAUNCH_ID}")
    assert thread_id == result["thread_id"]
    meta, thread = rt.store.load(thread_id)
    assert meta.channel == EmailRef(address=ANN, subject="Deploy web 1.4.2 to staging", message_id=LAUNCH_ID)
    [message] = thread.events
    assert isinstance(message, UserMessage)
    assert (message.data.text, message.data.channel, message.data.sender) == (
        "Please deploy web 1.4.2 to staging.\n\nThanks,",
        "email",
        ANN,
    )
    # And its execution started with the thread id as its only input
    [execution] = executions(rt.settings(runtime.WorkflowSettings).state_machine_arn)
    assert json.loads(execution["input"]) == {"thread_id": thread_id}


def test_an_approve_reply_approves_and_the_thread_replies_to_it_next(
    app: ModuleType, rt: runtime.Runtime
) -> None:
    # Given a thread started by email and waiting for approval
    thread_id = awaiting_approval(rt)
    # When Ann replies "APPROVE go ahead..." (quoting our message, with her signature)
    result = arrive(app, receipt("email-reply.json"), sample_mime("email-reply.json"))
    # Then the approval is recorded with her comment, and later answers thread under her reply
    assert result["outcome"] == "answered"
    last = events_of(rt, thread_id)[-1]
    assert isinstance(last, Approval)
    assert (last.data.call_id, last.data.approved, last.data.comment, last.data.by) == (
        "call-1",
        True,
        "go ahead, the change window is open.",
        ANN,
    )
    meta, _ = rt.store.load(thread_id)
    assert isinstance(meta.channel, EmailRef)
    assert meta.channel.message_id == "<CAF-reply-0002@mail.example.com>"
    assert rt.store.find_linked("EMAIL#<CAF-reply-0002@mail.example.com>") == thread_id


def test_an_approve_reply_lands_without_reading_the_payloads_kept_in_s3(
    app: ModuleType, rt: runtime.Runtime, lose_payloads: Callable[[str], int]
) -> None:
    # Given a thread waiting for approval of a call whose arguments are kept in S3, and those
    # payloads unreadable (deleted here), so that reading any of them would fail the reply
    thread_id = awaiting_approval(rt, notes="n" * 60_000)
    assert lose_payloads(thread_id) > 0

    # When Ann replies APPROVE
    result = arrive(app, receipt("email-reply.json"), sample_mime("email-reply.json"))

    # Then the approval lands for that call: the reply was decided on DynamoDB alone
    assert result["outcome"] == "answered"
    last = rt.store.load_outline(thread_id)[1].events[-1]
    assert isinstance(last, Approval) and (last.data.call_id, last.data.approved) == ("call-1", True)


def test_a_reply_to_a_question_is_the_answer(app: ModuleType, rt: runtime.Runtime) -> None:
    thread_id = awaiting_question(rt)
    event, raw = reply_to(_our_first_message(), "1.4.2 please", ses_message_id="questionanswer0001")
    arrive(app, event, raw)
    last = events_of(rt, thread_id)[-1]
    assert isinstance(last, HumanResponse) and (last.data.text, last.data.by) == ("1.4.2 please", ANN)


def _our_first_message() -> EmailMessage:
    """An email from the agent in the sample conversation (what Ann's client replies to)."""
    message = EmailMessage()
    message["Subject"] = "Re: Deploy web 1.4.2 to staging"
    message["Message-ID"] = "<agent-0001@agents.example.com>"
    message["References"] = LAUNCH_ID
    message.set_content("Which version?")
    return message


def test_an_unclear_reply_to_an_approval_changes_nothing_and_says_how_to_answer(
    app: ModuleType, rt: runtime.Runtime
) -> None:
    # Given a thread waiting for approval
    thread_id = awaiting_approval(rt)
    before = events_of(rt, thread_id)
    # When the reply neither approves nor rejects
    event, raw = reply_to(_our_first_message(), "Let me check with the team", ses_message_id="unclear0001")
    result = arrive(app, event, raw)
    # Then the thread is unchanged and Ann gets a reply in the same conversation explaining what to send
    assert result["outcome"] == "refused"
    assert events_of(rt, thread_id) == before
    [explanation] = sent()
    assert explanation["To"] == ANN and "APPROVE or REJECT" in text_of(explanation)
    assert explanation["In-Reply-To"] == "<answer-unclear0001@mail.example.com>"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"spamVerdict": {"status": "FAIL"}}, "spam"),
        ({"virusVerdict": {"status": "FAIL"}}, "virus"),
        ({"spfVerdict": {"status": "FAIL"}}, "SPF"),
        ({"dkimVerdict": {"status": "FAIL"}}, "DKIM"),
        ({"dmarcVerdict": {"status": "FAIL"}}, "DMARC"),
    ],
)
def test_mail_that_fails_a_verdict_is_dropped_unread_and_unanswered(
    app: ModuleType,
    rt: runtime.Runtime,
    threads_table: str,
    idempotency_table: str,
    change: dict[str, Any],
    reason: str,
) -> None:
    event = receipt("email-receipt.json")
    event["Records"][0]["ses"]["receipt"].update(change)
    result = arrive(app, event, sample_mime("email-receipt.json"))
    assert result["outcome"] == "rejected" and reason in result["reason"]
    assert item_count(threads_table) == 0 and item_count(idempotency_table) == 0 and sent() == []


def test_mail_from_a_sender_not_on_the_allowlist_is_dropped(
    app: ModuleType, rt: runtime.Runtime, threads_table: str, idempotency_table: str
) -> None:
    event = receipt("email-receipt.json")
    event["Records"][0]["ses"]["mail"]["commonHeaders"]["from"] = ["Eve <eve@evil.example.net>"]
    result = arrive(app, event, sample_mime("email-receipt.json"))
    assert result["outcome"] == "rejected" and "not allowed" in result["reason"]
    assert item_count(threads_table) == 0 and item_count(idempotency_table) == 0 and sent() == []


def test_a_mime_from_that_differs_from_an_allowed_envelope_is_dropped(
    app: ModuleType, rt: runtime.Runtime
) -> None:
    # Given a receipt whose headers name an allowed sender but whose stored message is from someone else
    raw = sample_mime("email-receipt.json")
    assert raw is not None
    forged = raw.replace(b"From: Ann Operator <ann@ops.example.com>", b"From: Eve <eve@evil.example.net>")
    # When it arrives, Then nothing is launched
    result = arrive(app, receipt("email-receipt.json"), forged)
    assert result["outcome"] == "rejected" and all_events(rt) == []


def test_an_automatic_reply_starts_nothing(app: ModuleType, rt: runtime.Runtime) -> None:
    raw = sample_mime("email-receipt.json")
    assert raw is not None
    vacation = raw.replace(b"MIME-Version: 1.0", b"Auto-Submitted: auto-replied\nMIME-Version: 1.0")
    result = arrive(app, receipt("email-receipt.json"), vacation)
    assert result["outcome"] == "ignored" and all_events(rt) == [] and sent() == []


def test_a_huge_email_adds_a_capped_text(app: ModuleType, rt: runtime.Runtime) -> None:
    # Given a 5 MB plain-text email
    message = EmailMessage()
    message["From"] = ANN
    message["Subject"] = "logs"
    message["Message-ID"] = "<huge-1@mail.example.com>"
    message.set_content("line of log output\n" * 260_000)
    # When it arrives
    arrive(app, receipt("email-receipt.json"), message.as_bytes())
    # Then the thread's message is capped with a visible marker
    [launch] = all_events(rt)
    assert isinstance(launch, UserMessage)
    assert len(launch.data.text) < 20_100 and "characters left out here" in launch.data.text
    assert launch.data.text.endswith("line of log output")


SAMPLES: dict[str, tuple[Any, list[type]]] = {
    "email-receipt.json": (None, [UserMessage]),
    "email-reply.json": (awaiting_approval, [Approval]),
    "email-spam.json": (None, []),
}


def test_every_email_sample_is_covered() -> None:
    assert sorted(SAMPLES) == sorted(path.name for path in EVENTS.glob("email-*.json"))


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_ses_delivery_twice_has_one_effect(app: ModuleType, rt: runtime.Runtime, name: str) -> None:
    # Given the state the sample expects
    setup, added = SAMPLES[name]
    if setup is not None:
        setup(rt)
    before = all_events(rt)
    # When SES (or Lambda's async retry) delivers the same receipt twice
    arrive(app, receipt(name), sample_mime(name))
    after_first = all_events(rt)
    arrive(app, receipt(name), sample_mime(name))
    # Then only the first delivery added events
    assert [type(event) for event in after_first[len(before) :]] == added
    assert all_events(rt) == after_first


# --- EmailChannel through moto's SES -----------------------------------------------------------

REF = EmailRef(
    address=ANN,
    subject="Re: Deploy web 1.4.2 to staging",
    message_id="<CAF-reply-0002@mail.example.com>",
    references=(LAUNCH_ID, "<agent-0001@agents.example.com>"),
)


def test_an_approval_request_is_a_threaded_reply_with_instructions(ses: Any) -> None:
    # When the channel asks for an approval in an email conversation
    notification = Notification(
        thread_id="t-1",
        kind="approval",
        text="Approve deploy(web, 1.4.2)?",
        format="approve_reject",
        call_id="c1",
    )
    EmailChannel(ses, from_address=AGENT).send(REF, notification)
    # Then SES sent one reply, threaded under the last message, with how to answer
    [message] = sent()
    assert (message["From"], message["To"]) == (AGENT, ANN)
    assert message["Subject"] == "Re: Deploy web 1.4.2 to staging"  # no "Re: Re:"
    assert message["In-Reply-To"] == "<CAF-reply-0002@mail.example.com>"
    assert message["References"].split() == [
        LAUNCH_ID,
        "<agent-0001@agents.example.com>",
        "<CAF-reply-0002@mail.example.com>",
    ]
    assert message["Message-ID"].endswith("@agents.example.com>")
    assert message["Auto-Submitted"] == "auto-replied"
    body = text_of(message)
    assert "Approve deploy(web, 1.4.2)?" in body and "APPROVE or REJECT" in body


def test_a_multiple_choice_question_lists_the_choices(ses: Any) -> None:
    notification = Notification(
        thread_id="t-2",
        kind="question",
        text="Which strategy?",
        format="multiple_choice",
        choices=("blue", "canary"),
    )
    EmailChannel(ses, from_address=AGENT).send(REF, notification)
    [message] = sent()
    assert "  - blue\n  - canary" in text_of(message)


def test_a_done_message_carries_no_instructions(ses: Any) -> None:
    EmailChannel(ses, from_address=AGENT).send(
        REF, Notification(thread_id="t-3", kind="done", text="Deployed.")
    )
    [message] = sent()
    assert text_of(message).startswith("Deployed.") and "Reply" not in text_of(message)


def test_an_unverified_sender_is_a_channel_error(ses: Any) -> None:
    with pytest.raises(ChannelError, match="SES SendEmail"):
        EmailChannel(ses, from_address="nobody@unverified.example.com").send(
            REF, Notification(thread_id="t-4", kind="done", text="Deployed.")
        )


def test_another_channels_reference_is_refused(ses: Any) -> None:
    ref = SlackRef(team_id="T", channel_id="C", thread_ts="1.0")
    with pytest.raises(ChannelError, match="slack"):
        EmailChannel(ses, from_address=AGENT).send(ref, Notification(thread_id="t-5", kind="done", text="x"))
    assert sent() == []


# --- the whole loop on the real state machine --------------------------------------------------


def test_an_email_runs_to_done_with_the_approval_and_the_answer_in_the_mail_thread(
    stack: Stack, ses: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the real state machine and a model that wants to deploy to production (approval needed)
    monkeypatch.setenv("EMAIL_ALLOWED_SENDERS", "@ops.example.com")
    monkeypatch.setenv("EMAIL_FROM_ADDRESS", AGENT)
    stack.script(intent("list_git_tags"), intent("deploy_backend", tag="v1.2.3", environment="production"))
    bucket = runtime.current().settings(runtime.StoreSettings).payload_bucket
    s3 = boto3.client("s3", region_name=REGION)
    # When Ann emails the agent
    launch = receipt("email-receipt.json")
    s3.put_object(
        Bucket=bucket, Key=f"inbound/{ses_id(launch)}", Body=sample_mime("email-receipt.json") or b""
    )
    thread_id = stack.invoke("EmailFunction", launch)["thread_id"]
    stack.wait_for(thread_id, state.ThreadStatus.AWAITING_APPROVAL)
    # Then the approval request reaches her as a reply in her conversation
    [request] = poll_until(sent, lambda messages: len(messages) == 1)
    assert request["In-Reply-To"] == LAUNCH_ID and "APPROVE or REJECT" in text_of(request)
    # When she answers that email with APPROVE
    answer, raw = reply_to(request, "APPROVE ship it", ses_message_id="loopapprove0001")
    s3.put_object(Bucket=bucket, Key="inbound/loopapprove0001", Body=raw)
    assert stack.invoke("EmailFunction", answer)["outcome"] == "answered"
    # Then the deploy runs, and the final message is a reply to her approval
    stack.wait_for(thread_id, state.ThreadStatus.DONE)
    done = poll_until(sent, lambda messages: len(messages) == 2)[-1]
    assert text_of(done).startswith("Deployed backend v1.2.3 to production (deployment dep-0001).")
    assert done["In-Reply-To"] == "<answer-loopapprove0001@mail.example.com>"
    approval = next(event for event in stack.events(thread_id) if isinstance(event, Approval))
    assert (approval.data.approved, approval.data.comment, approval.data.by) == (True, "ship it", ANN)
