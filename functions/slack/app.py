"""Slack trigger (factor 11): Events API and interactivity behind API Gateway.

Verify the signature on the raw body, answer within Slack's three seconds (the slow work runs in
the state machine), turn a message into launch/follow-up and a button click into an answer.
A delivery is processed once per Slack id, however often Slack retries it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError
from aws_lambda_powertools.utilities.typing import LambdaContext

from twelvefactor import runtime, tracing
from twelvefactor.adapters.ports import ChannelError, ConcurrentAppend
from twelvefactor.core.channels import SlackRef
from twelvefactor.core.errors import NotWaiting, ThreadNotFound, TwelvefactorError, UnknownAgent
from twelvefactor.core.replies import ApprovalReply, TextReply
from twelvefactor.settings import IdempotencySettings, SlackSettings, StoreSettings, WorkflowSettings
from twelvefactor.triggers import slack

logger = Logger(service="slack")
tracer = tracing.tracer(service="slack")
metrics = Metrics(namespace="Twelvefactor")

runtime.current().require(SlackSettings, StoreSettings, WorkflowSettings, IdempotencySettings)

Result = dict[str, Any]


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    rt = runtime.current()
    rt.bind_invocation(context)
    settings = rt.settings(SlackSettings)
    metrics.add_metric(name="SlackRequests", unit=MetricUnit.Count, value=1)
    try:
        request = slack.request_from_proxy_event(event)
        slack.verify(request, _signing_secret(rt, settings), now=lambda: rt.clock().timestamp())
        inbound = slack.parse(request)
    except slack.InvalidSignature as refused:
        logger.warning("slack request refused", extra={"reason": refused.reason})
        return _http(401, {"error": "invalid signature"})
    except slack.InvalidRequest as bad:
        logger.warning("malformed slack request", extra={"reason": bad.reason})
        return _http(400, {"error": "malformed request"})

    match inbound:
        case slack.UrlVerification(challenge=challenge):
            return _http(200, {"challenge": challenge})
        case slack.Ignored(reason=reason):
            logger.info("slack delivery ignored", extra={"reason": reason})
            return _http(200, {})
        case slack.ButtonClick() if not _may_answer(inbound, settings):
            return _refuse(rt, inbound, "Only the listed approvers can approve or reject this.")
    if request.retry_num and rt.processed("slack", inbound.delivery_id):
        # Slack retries after 3 s without an answer; the first delivery already did the work.
        logger.info("slack retry of a processed delivery", extra={"delivery_id": inbound.delivery_id})
        return _http(200, {})
    try:
        result: Result = rt.once("slack", inbound.delivery_id, lambda: _process(rt, inbound))
    except IdempotencyAlreadyInProgressError:
        logger.info("slack retry while the first delivery runs", extra={"delivery_id": inbound.delivery_id})
        return _http(200, {})
    logger.info("slack delivery processed", extra=result)
    return _http(200, {})


def _process(rt: runtime.Runtime, inbound: slack.SlackMessage | slack.ButtonClick) -> Result:
    """The one delivery's effect; domain errors become a Slack reply here, in one place."""
    try:
        if isinstance(inbound, slack.SlackMessage):
            return _message(rt, inbound)
        return _click(rt, inbound)
    except (NotWaiting, ThreadNotFound, UnknownAgent, ConcurrentAppend) as error:
        logger.info("slack delivery refused", extra={"reason": str(error), "error": type(error).__name__})
        _tell(rt, inbound, _explain(error))
        return {"outcome": "refused", "error": type(error).__name__}


def _message(rt: runtime.Runtime, message: slack.SlackMessage) -> Result:
    thread_id = rt.store.find_linked(message.ref.correlation_key)
    if thread_id is None:
        if not message.may_launch:
            return {"outcome": "ignored", "reason": "reply in a thread that is not ours"}
        launched = rt.launch(
            rt.settings(SlackSettings).default_agent,
            message.text,
            channel="slack",
            reply_to=message.ref,
            sender=message.user_id,
            # One Slack conversation, one thread: even a redelivery past idempotency finds it.
            launch_key=message.ref.correlation_key,
        )
        logger.set_correlation_id(launched.thread_id)
        return {"outcome": "launched", "thread_id": launched.thread_id}
    logger.set_correlation_id(thread_id)
    resumed = rt.follow_up(thread_id, message.text, channel="slack", sender=message.user_id)
    return {"outcome": "followed_up", "thread_id": thread_id, "status": resumed.status.value}


def _click(rt: runtime.Runtime, click: slack.ButtonClick) -> Result:
    logger.set_correlation_id(click.thread_id)
    meta, _outline = rt.store.load_outline(click.thread_id)  # no S3 payload is needed to check it
    # A button only answers the thread that lives in the conversation where it was clicked.
    if not (
        isinstance(meta.channel, SlackRef)
        and (meta.channel.team_id, meta.channel.channel_id) == (click.team_id, click.channel_id)
    ):
        raise ThreadNotFound(click.thread_id)
    reply: ApprovalReply | TextReply
    if click.kind == "choice":
        reply = TextReply(text=click.answer or "", by=click.user_id)
        answer = f"Answered “{click.answer}”"
    else:
        reply = ApprovalReply(approved=click.kind == "approve", call_id=click.call_id, by=click.user_id)
        answer = "Approved" if click.kind == "approve" else "Rejected"
    resumed = rt.resume(click.thread_id, reply)
    channel = rt.slack
    if channel is not None:
        _best_effort(
            lambda: channel.mark_answered(
                click.channel_id, click.message_ts, click.message_text, answer, click.user_id
            )
        )
    return {"outcome": click.kind, "thread_id": click.thread_id, "status": resumed.status.value}


def _may_answer(click: slack.ButtonClick, settings: SlackSettings) -> bool:
    return click.kind == "choice" or click.user_id in slack.parse_allowed(settings.allowed_responders)


def _refuse(rt: runtime.Runtime, click: slack.ButtonClick, text: str) -> dict[str, Any]:
    reason = f"{click.user_id} is not an allowed approver (SLACK_ALLOWED_RESPONDERS)"
    logger.warning(
        "slack click refused",
        extra={"user_id": click.user_id, "thread_id": click.thread_id, "reason": reason},
    )
    _tell(rt, click, text)
    return _http(200, {"response_type": "ephemeral", "replace_original": False, "text": text})


def _explain(error: TwelvefactorError) -> str:
    match error:
        case NotWaiting():
            return "This conversation isn't waiting for that answer (it may already have one)."
        case ThreadNotFound():
            return "I can't find the conversation this belongs to."
        case UnknownAgent():
            return "No agent is configured to answer here."
        case _:
            return "Someone else answered at the same moment; have a look and try again."


def _tell(rt: runtime.Runtime, inbound: slack.SlackMessage | slack.ButtonClick, text: str) -> None:
    channel = rt.slack
    if channel is None:
        return
    if isinstance(inbound, slack.SlackMessage):
        _best_effort(lambda: channel.say(inbound.ref, text))
    else:
        _best_effort(lambda: channel.say_privately(inbound.channel_id, inbound.user_id, text))


def _best_effort(send: Callable[[], None]) -> None:
    """A courtesy message must not turn a processed delivery into a failure Slack would retry."""
    try:
        send()
    except ChannelError:
        logger.exception("slack reply not delivered")


def _signing_secret(rt: runtime.Runtime, settings: SlackSettings) -> str:
    secret = rt.secret(settings.signing_secret, settings.signing_secret_arn)
    if not secret:
        raise RuntimeError("SLACK_SIGNING_SECRET or SLACK_SIGNING_SECRET_ARN must be set")
    return secret


def _http(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"statusCode": status, "headers": {"Content-Type": "application/json"}, "body": json.dumps(body)}
