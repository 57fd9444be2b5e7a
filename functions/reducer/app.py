"""Reducer (factors 8 and 12): the state machine's Reduce task.

Loads the thread, steps until it waits or ends (each move persisted before the next) and returns
a tiny status for the Choice state. With an ``error`` (the state machine's Catch) it records an
escalation instead, so a timed-out or failed wait is never a silent failure.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from twelvefactor import observability, runtime, tracing
from twelvefactor.core import pricing, state
from twelvefactor.core.errors import ThreadNotFound
from twelvefactor.core.events import Error, Escalation, ThreadId
from twelvefactor.runtime import reason
from twelvefactor.settings import AgentSettings, LlmSettings, StoreSettings, WaitSettings

logger = Logger()
tracer = tracing.tracer()
metrics = Metrics(namespace="Twelvefactor")
runtime.current().require(StoreSettings, AgentSettings, LlmSettings, WaitSettings)
# The agents, each validating its own settings (ONCALL_..., DEPLOYBOT_...): a bad value fails the init,
# and SnapStart's snapshot holds the imported agents.
runtime.current().registry  # noqa: B018
# The model's adapter (and its SDK or boto3 client), built now so the snapshot holds it too.
runtime.current().preload_llm()


class ReduceRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    thread_id: ThreadId
    error: dict[str, Any] | None = None  # {"Error", "Cause"} from a Catch
    # The execution's name (``<thread_id>-<launch seq>``): a run whose turn already ended does nothing.
    execution: str | None = Field(default=None, max_length=80)


@logger.inject_lambda_context(correlation_id_path="thread_id", clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, str]:
    # Counted first: an invocation that fails still flushes a metric (and shows up in the count).
    metrics.add_metric(name="Reductions", unit=MetricUnit.Count, value=1)
    rt = runtime.current()
    try:
        request = ReduceRequest.model_validate(event)
        if request.error is not None:
            outcome = rt.record_failure(request.thread_id, request.error, execution=request.execution)
        else:
            outcome = rt.reduce(request.thread_id, execution=request.execution)
    except (ValidationError, ThreadNotFound) as refused:
        # The task fails (the state machine's Catch takes over), and the log says why.
        logger.warning("request rejected", extra={"error": type(refused).__name__, "reason": reason(refused)})
        raise
    new = outcome.new_events
    metrics.add_metric(name="Steps", unit=MetricUnit.Count, value=outcome.moves)
    metrics.add_metric(name="Tokens", unit=MetricUnit.Count, value=state.total_tokens(new))
    usage = pricing.total_usage(new)
    metrics.add_metric(name="CacheReadTokens", unit=MetricUnit.Count, value=usage.cache_read_tokens or 0)
    cost = pricing.cost_of(new, rt.price)
    if cost is not None:  # a model with no known price is not counted as free
        metrics.add_metric(name="LlmCostUsd", unit=MetricUnit.NoUnit, value=float(cost))
    metrics.add_metric(name="Errors", unit=MetricUnit.Count, value=sum(isinstance(e, Error) for e in new))
    metrics.add_metric(
        name="Escalations", unit=MetricUnit.Count, value=sum(isinstance(e, Escalation) for e in new)
    )
    points = observability.reduction_points(outcome.agent, outcome.events, new)
    observability.emit(metrics, [*points, *observability.latency_points(outcome.llm_latencies_ms)])
    logger.info("reduced", extra={"status": outcome.status, "moves": outcome.moves, "events": len(new)})
    return {"thread_id": outcome.thread_id, "status": outcome.status}
