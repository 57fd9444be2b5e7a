"""EventBridge trigger (factor 11): configured detail-types launch an agent; callbacks resume.

Each event is handled once per EventBridge ``id`` (Powertools idempotency), so a redelivered
event never launches a second thread or answers a wait twice. Events we have no rule for are
logged and ignored rather than failed, which would only make EventBridge retry them.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from twelvefactor import runtime, tracing
from twelvefactor.adapters.webhook import UnknownCallback
from twelvefactor.core.errors import NotWaiting
from twelvefactor.settings import EventBridgeSettings, IdempotencySettings, StoreSettings, WorkflowSettings
from twelvefactor.triggers.eventbridge import (
    CallbackDetail,
    describe_invalid,
    launch_message,
    parse_launch_rules,
)

logger = Logger()
tracer = tracing.tracer()
metrics = Metrics(namespace="Twelvefactor")
runtime.current().require(StoreSettings, WorkflowSettings, IdempotencySettings, EventBridgeSettings)
LAUNCH_RULES = parse_launch_rules(runtime.current().settings(EventBridgeSettings).launch_rules)


@logger.inject_lambda_context(correlation_id_path="id", clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    metrics.add_metric(name="EventBridgeEvents", unit=MetricUnit.Count, value=1)  # first: see reducer
    try:
        received = parse(event=event, model=EventBridgeModel)
    except ValidationError as error:
        # Failing would only make EventBridge retry it for a day: it will never parse.
        return _ignored(f"not an EventBridge event: {describe_invalid(error)}", metric="EventsIgnored")
    if not received.id.strip():
        return _ignored("an event without an id cannot be handled once", metric="EventsIgnored")
    rt = runtime.current()
    rt.bind_invocation(context)
    detail: dict[str, Any] = received.detail if isinstance(received.detail, dict) else {}
    if "callback_id" in detail:

        def answer() -> dict[str, Any]:
            callback = CallbackDetail.model_validate(detail)
            return {"thread_id": rt.callback(callback.callback_id, callback.payload).thread_id}

        try:
            result = rt.once("eventbridge", received.id, answer)
        except (UnknownCallback, NotWaiting, ValidationError) as error:
            # Retrying cannot help these, and failing would make EventBridge retry: log and drop.
            return _ignored(f"callback rejected: {error}", metric="CallbacksRejected")
        metrics.add_metric(name="Callbacks", unit=MetricUnit.Count, value=1)
        return {"action": "callback", **result}
    agent = LAUNCH_RULES.get(received.detail_type)
    if agent is None:
        return _ignored(f"no launch rule for detail-type {received.detail_type!r}", metric="EventsIgnored")

    def launch() -> dict[str, Any]:
        launched = rt.launch(
            agent,
            launch_message(detail),
            channel="eventbridge",
            sender=received.source,
            launch_key=f"eventbridge:{received.id}",
        )
        return {"thread_id": launched.thread_id}

    result = rt.once("eventbridge", received.id, launch)
    logger.append_keys(thread_id=result["thread_id"])
    metrics.add_metric(name="Launches", unit=MetricUnit.Count, value=1)
    return {"action": "launch", "agent": agent, **result}


def _ignored(reason: str, *, metric: str) -> dict[str, Any]:
    logger.warning("event ignored", extra={"reason": reason})
    metrics.add_metric(name=metric, unit=MetricUnit.Count, value=1)
    return {"action": "ignored", "reason": reason}
