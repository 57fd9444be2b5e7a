"""Email trigger (factor 11): an SES receipt rule stores the mail in S3, then invokes this function.

Refuse what SES flagged or whoever is not on the allowlist (without answering: no backscatter),
read the raw MIME, keep only the new text, and launch a thread or continue the one the reply's
`In-Reply-To`/`References` point to. One SES messageId has one effect, however often it arrives.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError
from aws_lambda_powertools.utilities.typing import LambdaContext

from twelvefactor import runtime, tracing
from twelvefactor.adapters.email_channel import EmailChannel
from twelvefactor.adapters.ports import ChannelError
from twelvefactor.core import state
from twelvefactor.core.channels import EmailRef
from twelvefactor.core.errors import NotWaiting, ThreadNotFound, TwelvefactorError
from twelvefactor.settings import EmailSettings, IdempotencySettings, StoreSettings, WorkflowSettings
from twelvefactor.triggers import email as inbound_email

logger = Logger(service="email")
tracer = tracing.tracer(service="email")
metrics = Metrics(namespace="Twelvefactor")

runtime.current().require(EmailSettings, StoreSettings, WorkflowSettings, IdempotencySettings)

Result = dict[str, Any]


class UnclearApproval(TwelvefactorError):
    """A reply to an approval request that neither approves nor rejects."""


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> Result:
    rt = runtime.current()
    rt.bind_invocation(context)
    metrics.add_metric(name="EmailsReceived", unit=MetricUnit.Count, value=1)
    allowlist = inbound_email.parse_allowlist(rt.settings(EmailSettings).allowed_senders)
    try:
        receipt = inbound_email.parse_receipt(event)
        inbound_email.check_verdicts(receipt.receipt)
        headers = receipt.mail.common_headers
        inbound_email.check_sender(
            inbound_email.sender_address(headers.sender or [receipt.mail.source]), allowlist
        )
    except inbound_email.RejectedEmail as rejected:
        logger.warning("email rejected", extra={"reason": rejected.reason})
        metrics.add_metric(name="EmailsRejected", unit=MetricUnit.Count, value=1)
        return {"outcome": "rejected", "reason": rejected.reason}
    message_id = receipt.mail.message_id
    logger.append_keys(ses_message_id=message_id)
    try:
        result: Result = rt.once("email", message_id, lambda: _process(rt, message_id, allowlist))
    except IdempotencyAlreadyInProgressError:
        return {"outcome": "in_progress"}
    logger.info("email processed", extra=result)
    return result


def _process(rt: runtime.Runtime, message_id: str, allowlist: frozenset[str]) -> Result:
    try:
        mail = inbound_email.parse_mime(_raw_message(rt, message_id))
        # The MIME From is the address we answer, so it must be allowed too (not just the envelope's).
        inbound_email.check_sender(mail.sender, allowlist)
    except inbound_email.RejectedEmail as rejected:
        logger.warning("email rejected", extra={"reason": rejected.reason})
        return {"outcome": "rejected", "reason": rejected.reason}
    if mail.auto_submitted or not mail.text:
        logger.info("email ignored", extra={"auto_submitted": mail.auto_submitted})
        return {"outcome": "ignored", "reason": "automatic reply or no new text"}
    ref = EmailRef(
        address=mail.sender, subject=mail.subject, message_id=mail.message_id, references=mail.references
    )
    thread_id = _known_thread(rt, mail)
    if thread_id is None:
        launched = rt.launch(
            rt.settings(EmailSettings).default_agent,
            mail.text,
            channel="email",
            reply_to=ref,
            sender=mail.sender,
            launch_key=ref.correlation_key,
        )
        logger.set_correlation_id(launched.thread_id)
        return {"outcome": "launched", "thread_id": launched.thread_id}
    logger.set_correlation_id(thread_id)
    try:
        status = _answer(rt, thread_id, mail)
    except (NotWaiting, UnclearApproval, ThreadNotFound) as error:
        logger.info("email reply refused", extra={"reason": str(error), "error": type(error).__name__})
        _tell(rt, ref, _explain(error))
        return {"outcome": "refused", "thread_id": thread_id, "error": type(error).__name__}
    # Later answers reply to this message, and a reply to it finds the thread again.
    rt.store.link(ref.correlation_key, thread_id)
    rt.store.set_channel(thread_id, ref)
    return {"outcome": "answered", "thread_id": thread_id, "status": status.value}


def _answer(rt: runtime.Runtime, thread_id: str, mail: inbound_email.InboundEmail) -> state.ThreadStatus:
    _meta, outline = rt.store.load_outline(thread_id)  # the status alone: no S3 payload read
    if state.status(outline.events) is state.ThreadStatus.AWAITING_APPROVAL:
        approval = inbound_email.parse_approval(mail.text, by=mail.sender)
        if approval is None:
            raise UnclearApproval(f"thread {thread_id} waits for APPROVE or REJECT")
        return rt.resume(thread_id, approval).status
    return rt.follow_up(thread_id, mail.text, channel="email", sender=mail.sender).status


def _known_thread(rt: runtime.Runtime, mail: inbound_email.InboundEmail) -> str | None:
    for candidate in mail.thread_candidates:
        thread_id = rt.store.find_linked(f"EMAIL#{candidate}")
        if thread_id is not None:
            return thread_id
    return None


def _raw_message(rt: runtime.Runtime, message_id: str) -> bytes:
    bucket = rt.settings(StoreSettings).payload_bucket
    s3 = rt.client("s3")
    try:
        stored = s3.get_object(Bucket=bucket, Key=inbound_email.s3_key(message_id))
    except s3.exceptions.NoSuchKey:
        # The receipt rule stores the message before it invokes us: a receipt without one is not
        # SES's, and retrying it would not make the message appear.
        raise inbound_email.RejectedEmail(f"no stored message for {message_id}") from None
    if stored["ContentLength"] > inbound_email.MAX_RAW_BYTES:
        raise inbound_email.RejectedEmail(f"message of {stored['ContentLength']} bytes is too large")
    raw: bytes = stored["Body"].read()
    return raw


def _explain(error: TwelvefactorError) -> str:
    match error:
        case UnclearApproval():
            return "I am waiting for a decision: reply with APPROVE or REJECT first, then any comment."
        case NotWaiting():
            return "This conversation isn't waiting for a reply from you right now, so I left it unchanged."
        case _:
            return "I can't find the conversation this reply belongs to. Write a new email to start one."


def _tell(rt: runtime.Runtime, ref: EmailRef, text: str) -> None:
    channel = rt.channel("email")
    if not isinstance(channel, EmailChannel):
        return
    try:
        channel.say(ref, text)
    except ChannelError:
        # The refusal is logged and recorded; a lost courtesy email must not re-run the delivery.
        logger.exception("email reply not delivered")
