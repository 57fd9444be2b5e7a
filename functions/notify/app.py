"""Notify (factor 7): the state machine's waitForTaskToken task.

Saves the task token in the thread's pending-wait item (never in the thread, never in a prompt),
tells the person on the thread's own channel what is needed, and returns at once; the execution
stays paused until a reply sends the token back.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from twelvefactor import runtime, tracing
from twelvefactor.adapters.ports import WorkflowError
from twelvefactor.core.errors import ThreadNotFound
from twelvefactor.core.events import ThreadId
from twelvefactor.runtime import reason
from twelvefactor.settings import StoreSettings, WaitSettings, WorkflowSettings

logger = Logger()
tracer = tracing.tracer()
metrics = Metrics(namespace="Twelvefactor")
# WorkflowSettings: an answer that beat the saved wait is handed back on this task's token, and if
# that token is refused a new execution carries the thread on.
runtime.current().require(StoreSettings, WaitSettings, WorkflowSettings)


class NotifyRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    thread_id: ThreadId
    task_token: str = Field(min_length=1, max_length=8192, repr=False)


@logger.inject_lambda_context(correlation_id_path="thread_id", clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    metrics.add_metric(name="NotifyInvocations", unit=MetricUnit.Count, value=1)  # first: see reducer
    try:
        request = NotifyRequest.model_validate(event)
        notification = runtime.current().notify(request.thread_id, request.task_token)
    except (ValidationError, ThreadNotFound, WorkflowError) as refused:
        # The task fails (the state machine's Catch takes over), and the log says why.
        logger.warning("request rejected", extra={"error": type(refused).__name__, "reason": reason(refused)})
        raise
    metrics.add_metric(name="Notifications", unit=MetricUnit.Count, value=int(notification is not None))
    kind = notification.kind if notification is not None else None
    logger.info("notified" if kind else "nothing to tell; execution resumed or ended", extra={"kind": kind})
    return {"thread_id": request.thread_id, "notified": kind}
