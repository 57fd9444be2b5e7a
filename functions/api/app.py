"""REST API (factor 6): launch, inspect, answer, call back and cancel threads.

Routes only translate HTTP to the runtime's services; models and the error -> status map live in
`twelvefactor.triggers.api`. Callers are authenticated by API Gateway (IAM); webhook callbacks
additionally carry an HMAC signature, checked on the raw body before it is parsed.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Annotated, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from twelvefactor import observability, runtime, tracing
from twelvefactor.adapters import webhook
from twelvefactor.core.outbound import check_callback_url
from twelvefactor.settings import IdempotencySettings, StoreSettings, WebhookSettings, WorkflowSettings
from twelvefactor.triggers.api import (
    CALLBACK_ID_PATTERN,
    MAX_PAGE_EVENTS,
    PAGE_EVENTS,
    THREAD_ID_PATTERN,
    Accepted,
    EventsPage,
    HumanReply,
    IdempotencyKey,
    LaunchRequest,
    ThreadSummary,
    ThreadView,
    documented,
    install_error_handlers,
    json_response,
    request_fingerprint,
    unauthenticated,
)

logger = Logger()
tracer = tracing.tracer()
metrics = Metrics(namespace="Twelvefactor")
app = APIGatewayRestResolver(enable_validation=True)
install_error_handlers(app, logger)
runtime.current().require(StoreSettings, WorkflowSettings, IdempotencySettings, WebhookSettings)

ThreadIdPath = Annotated[str, Path(pattern=THREAD_ID_PATTERN)]


@app.post("/threads", responses=documented(HTTPStatus.ACCEPTED, Accepted))
def launch(
    request: Annotated[LaunchRequest, Body()],
    idempotency_key: Annotated[IdempotencyKey | None, Header(alias="Idempotency-Key")] = None,
) -> Response[Accepted]:
    rt = runtime.current()
    rt.registry.get(request.agent)  # 400 before the idempotency record is written
    if request.callback_url is not None:  # 422 before it, too: the runtime must not POST there
        allow_loopback = rt.settings(WebhookSettings).allow_loopback
        check_callback_url(str(request.callback_url), allow_loopback=allow_loopback)

    def start() -> dict[str, Any]:
        key = f"api:{idempotency_key}" if idempotency_key else None
        launched = rt.launch(
            request.agent, request.message, channel="api", reply_to=request.reply_to, launch_key=key
        )
        metrics.add_metric(name="Launches", unit=MetricUnit.Count, value=1)
        return {"thread_id": launched.thread_id, "status": "accepted"}

    if idempotency_key is None:
        result = start()
    else:
        result = rt.once("api-launch", idempotency_key, start, request_fingerprint(app.current_event.body))
    logger.append_keys(thread_id=result["thread_id"])
    return json_response(HTTPStatus.ACCEPTED, Accepted.model_validate(result))


@app.get("/threads", responses=documented(HTTPStatus.OK, list[ThreadSummary]))
def list_threads(limit: Annotated[int, Query(ge=1, le=100)] = 50) -> list[ThreadSummary]:
    return [ThreadSummary.of(meta) for meta in runtime.current().store.list_threads(limit)]


@app.get("/threads/<thread_id>", responses=documented(HTTPStatus.OK, ThreadView))
def get_thread(thread_id: ThreadIdPath) -> ThreadView:
    logger.append_keys(thread_id=thread_id)
    store = runtime.current().store
    meta, thread = store.load_outline(thread_id)  # status and tokens, without reading S3
    page = EventsPage.read(store, thread_id, after=-1)
    return ThreadView.of_thread(meta, thread, page, runtime.current().price)


@app.get("/threads/<thread_id>/events", responses=documented(HTTPStatus.OK, EventsPage))
def get_events(
    thread_id: ThreadIdPath,
    after: Annotated[int, Query(ge=-1)] = -1,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_EVENTS)] = PAGE_EVENTS,
) -> EventsPage:
    return EventsPage.read(runtime.current().store, thread_id, after, limit)


@app.post("/threads/<thread_id>/responses", responses=documented(HTTPStatus.ACCEPTED, Accepted))
def respond(thread_id: ThreadIdPath, reply: Annotated[HumanReply, Body()]) -> Response[Accepted]:
    logger.append_keys(thread_id=thread_id)
    # The authenticated caller is who answered, whatever the body claims.
    caller = app.current_event.request_context.identity.user_arn
    if caller:
        reply = reply.model_copy(update={"by": caller})
    resumed = runtime.current().resume(thread_id, reply)
    metrics.add_metric(name="Responses", unit=MetricUnit.Count, value=1)
    return json_response(HTTPStatus.ACCEPTED, Accepted(thread_id=thread_id, status=resumed.status))


@app.post("/callbacks/<callback_id>", responses=documented(HTTPStatus.ACCEPTED, Accepted))
def callback(callback_id: Annotated[str, Path(pattern=CALLBACK_ID_PATTERN)]) -> Response[Accepted]:
    rt = runtime.current()
    body = (app.current_event.decoded_body or "").encode()
    webhook.verify(rt.webhook_secret, body, app.current_event.headers)  # before anything is parsed
    payload = json.loads(body or b"{}")
    if not isinstance(payload, dict):
        payload = {"result": payload}
    resumed = rt.callback(callback_id, payload)
    logger.append_keys(thread_id=resumed.thread_id)
    metrics.add_metric(name="Callbacks", unit=MetricUnit.Count, value=1)
    return json_response(HTTPStatus.ACCEPTED, Accepted(thread_id=resumed.thread_id, status=resumed.status))


@app.delete("/threads/<thread_id>", responses=documented(HTTPStatus.ACCEPTED, Accepted))
def cancel(thread_id: ThreadIdPath) -> Response[Accepted]:
    logger.append_keys(thread_id=thread_id)
    caller = app.current_event.request_context.identity.user_arn
    rt = runtime.current()
    cancelled = rt.cancel(thread_id, by=caller, reason="cancelled through the API")
    metrics.add_metric(name="Cancellations", unit=MetricUnit.Count, value=1)
    meta, _thread = rt.store.load_outline(thread_id)  # whose thread, for the by-agent breakdown
    observability.emit(metrics, observability.cancellation_points(meta.agent))
    return json_response(HTTPStatus.ACCEPTED, Accepted(thread_id=thread_id, status=cancelled.status))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    metrics.add_metric(name="ApiRequests", unit=MetricUnit.Count, value=1)
    refused = unauthenticated(event, logger)
    if refused is not None:
        return refused
    runtime.current().bind_invocation(context)
    return app.resolve(event, context)
