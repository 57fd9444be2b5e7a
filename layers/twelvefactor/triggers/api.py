"""The REST API's contract: request and response models, and the one map from errors to HTTP.

The Api function's routes stay a few lines each because validation happens here (Powertools
validates bodies, paths and headers against these models and answers 422 on a mismatch) and
every typed error becomes its status code in `install_error_handlers`, nowhere else.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from http import HTTPStatus
from typing import Annotated, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyValidationError,
)
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    StringConstraints,
    ValidationError,
    model_validator,
)

from ..adapters.ports import (
    ConcurrentAppend,
    OffloadedEvent,
    StorageError,
    StoredPayload,
    ThreadMeta,
    ThreadStore,
    WorkflowError,
)
from ..adapters.webhook import SignatureRejected, UnknownCallback
from ..core import pricing, state
from ..core.channels import ChannelRef, NoReplyRef, WebhookRef
from ..core.errors import NotWaiting, ThreadNotFound, TwelvefactorError, UnknownAgent
from ..core.events import IntentName, Thread, ThreadId, TokenUsage, dump_event
from ..core.outbound import UnsafeUrl
from ..core.replies import ApprovalReply, TextReply

# A page of events holds this many by default, and at most MAX_PAGE_EVENTS.
PAGE_EVENTS = 100
MAX_PAGE_EVENTS = 500
# About this many bytes of event JSON per page, plus at most one event stored inline (those are under
# the offload threshold, at most 350 KB): even if JSON escaping triples it, and the Lambda proxy
# response escapes it again, the answer stays under Lambda's 6 MB synchronous response limit.
PAGE_BYTES = 1_000_000

# Path and header shapes, checked before anything is looked up.
THREAD_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
CALLBACK_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,160}$"
IdempotencyKey = Annotated[str, StringConstraints(min_length=1, max_length=200)]
HumanReply = Annotated[ApprovalReply | TextReply, Field(discriminator="kind")]


class LaunchRequest(BaseModel):
    """Start a thread. Replies reach the caller on `channel`, or as signed POSTs to `callback_url`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    agent: IntentName
    message: str = Field(min_length=1, max_length=40_000)
    channel: ChannelRef | None = None
    callback_url: HttpUrl | None = None

    @model_validator(mode="after")
    def _one_reply_route(self) -> LaunchRequest:
        if self.channel is not None and self.callback_url is not None:
            raise ValueError("give either channel or callback_url, not both")
        return self

    @property
    def reply_to(self) -> ChannelRef:
        if self.callback_url is not None:
            return WebhookRef(url=str(self.callback_url))
        return self.channel or NoReplyRef()


class Accepted(BaseModel):
    thread_id: ThreadId
    status: str


class ThreadSummary(BaseModel):
    thread_id: ThreadId
    agent: str
    created_at: datetime
    channel: str

    @classmethod
    def of(cls, meta: ThreadMeta) -> ThreadSummary:
        channel = meta.channel.kind if meta.channel is not None else "none"
        return cls(thread_id=meta.thread_id, agent=meta.agent, created_at=meta.created_at, channel=channel)


class EventPointer(BaseModel):
    """An event stored in S3 because it is large, in place of the event itself: GET `payload.url`
    (presigned: no credentials needed, until `payload.expires_at`) answers the event's JSON."""

    model_config = ConfigDict(extra="forbid")
    seq: int
    type: str
    payload: StoredPayload


EVENTS_DESCRIPTION = (
    "The thread's events in order, each with its `seq`: the event itself, or an EventPointer for an "
    "event kept in S3 because it is large."
)
NEXT_AFTER_DESCRIPTION = (
    "More events follow: ask GET /threads/{id}/events?after=<next_after>. Null when this page ends "
    "with the last event stored so far."
)


class EventsPage(BaseModel):
    thread_id: ThreadId
    events: list[EventPointer | dict[str, Any]] = Field(description=EVENTS_DESCRIPTION)
    next_after: int | None = Field(description=NEXT_AFTER_DESCRIPTION)

    @classmethod
    def read(cls, store: ThreadStore, thread_id: str, after: int, limit: int = PAGE_EVENTS) -> EventsPage:
        """A page within Lambda's response limit, however large the thread or its events."""
        found = store.events_page(thread_id, after, limit=limit, max_bytes=PAGE_BYTES)
        events: list[EventPointer | dict[str, Any]] = [
            EventPointer(seq=seq, type=item.type, payload=item.payload)
            if isinstance(item, OffloadedEvent)
            else {"seq": seq, **dump_event(item)}
            for seq, item in found.items
        ]
        next_after = found.items[-1][0] if found.more else None
        return cls(thread_id=thread_id, events=events, next_after=next_after)


class ThreadView(ThreadSummary):
    """A thread's state and its first page of events (the rest: GET /threads/{id}/events)."""

    status: state.ThreadStatus
    total_tokens: int
    usage: TokenUsage = Field(description="every decision's tokens, summed, cache reads and writes included")
    cost_usd: str | None = Field(
        description=f"the model's cost in USD at {pricing.PRICES_SOURCE} prices; null when the model's "
        "price is unknown"
    )
    last_seq: int
    events: list[EventPointer | dict[str, Any]] = Field(description=EVENTS_DESCRIPTION)
    next_after: int | None = Field(description=NEXT_AFTER_DESCRIPTION)

    @classmethod
    def of_thread(
        cls, meta: ThreadMeta, thread: Thread, first_page: EventsPage, price: pricing.ModelPrice | None = None
    ) -> ThreadView:
        """The page is read after the thread, so it may hold events the status does not describe
        yet: those are left to the next page, and the view is one moment of the thread."""
        events = [event for event in first_page.events if _seq_of(event) <= thread.last_seq]
        next_after = thread.last_seq if len(events) < len(first_page.events) else first_page.next_after
        return cls(
            **ThreadSummary.of(meta).model_dump(),
            status=state.status(thread.events),
            total_tokens=state.total_tokens(thread.events),
            usage=pricing.total_usage(thread.events),
            cost_usd=_usd(pricing.cost_of(thread.events, price)),
            last_seq=thread.last_seq,
            events=events,
            next_after=next_after,
        )


def _usd(cost: Decimal | None) -> str | None:
    return None if cost is None else str(cost.quantize(Decimal("0.000001")))


def _seq_of(event: EventPointer | dict[str, Any]) -> int:
    return event.seq if isinstance(event, EventPointer) else int(event["seq"])


class Unauthenticated(TwelvefactorError):
    """A request without an IAM caller: it did not come through API Gateway's IAM authorizer (401)."""


# Routes whose callers prove who they are with an HMAC signature instead of SigV4 (template.yaml
# opts them out of the IAM authorizer); every other route must carry the caller API Gateway verified.
SIGNED_RESOURCES = frozenset({"/callbacks/{callback_id}"})


def unauthenticated(event: Mapping[str, Any], logger: Logger) -> dict[str, Any] | None:
    """The 401 for a request on an IAM route without an IAM caller, or None when it may go on.

    Checked before routing and validation, so an unauthenticated caller learns nothing about the
    API's shapes, and a deployment whose authorizer is missing fails closed rather than open."""
    if event.get("resource") in SIGNED_RESOURCES:
        return None
    identity = (event.get("requestContext") or {}).get("identity") or {}
    caller = identity.get("userArn") if isinstance(identity, Mapping) else None
    if isinstance(caller, str) and caller:
        return None
    reason = "no IAM caller identity: the request did not pass API Gateway's IAM authorizer"
    logger.warning(
        "request rejected", extra={"status": 401, "error": Unauthenticated.__name__, "reason": reason}
    )
    return {
        "statusCode": int(HTTPStatus.UNAUTHORIZED),
        "headers": {"Content-Type": content_types.APPLICATION_JSON},
        "body": json.dumps({"error": Unauthenticated.__name__, "message": reason}),
        "isBase64Encoded": False,
    }


def request_fingerprint(body: str | None) -> str:
    """Ties an Idempotency-Key to its body: the same key with another body is an error, not a replay."""
    return hashlib.sha256((body or "").encode()).hexdigest()


def json_response(status: HTTPStatus, body: BaseModel | dict[str, Any]) -> Response[Any]:
    payload = body.model_dump(mode="json") if isinstance(body, BaseModel) else body
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=payload)


# The one map from a typed error to what the caller sees. Subclasses match their base's entry.
ERROR_STATUS: dict[type[Exception], HTTPStatus] = {
    UnknownAgent: HTTPStatus.BAD_REQUEST,
    json.JSONDecodeError: HTTPStatus.BAD_REQUEST,
    UnicodeDecodeError: HTTPStatus.BAD_REQUEST,  # a body that is not UTF-8 text
    SignatureRejected: HTTPStatus.UNAUTHORIZED,
    ThreadNotFound: HTTPStatus.NOT_FOUND,
    UnknownCallback: HTTPStatus.NOT_FOUND,
    NotWaiting: HTTPStatus.CONFLICT,
    ConcurrentAppend: HTTPStatus.CONFLICT,
    IdempotencyAlreadyInProgressError: HTTPStatus.CONFLICT,
    IdempotencyValidationError: HTTPStatus.UNPROCESSABLE_ENTITY,
    ValidationError: HTTPStatus.UNPROCESSABLE_ENTITY,
    UnsafeUrl: HTTPStatus.UNPROCESSABLE_ENTITY,
    WorkflowError: HTTPStatus.BAD_GATEWAY,
    StorageError: HTTPStatus.SERVICE_UNAVAILABLE,
}


# The error name of a body that is not JSON at all, whichever route parsed it.
MALFORMED_JSON = "MalformedJson"


class FieldProblem(BaseModel):
    loc: list[str | int]
    type: str


class ErrorBody(BaseModel):
    """Every refusal's body, whoever refuses (a route, validation, the content type, auth): the
    error's name, why in words, and for a validation failure the fields that failed."""

    error: str
    message: str
    detail: list[FieldProblem] | None = None


def documented(status: HTTPStatus, model: Any) -> dict[int, OpenAPIResponse]:
    """A route's responses for its OpenAPI document: its success, and every refusal it may answer
    with (the statuses of ERROR_STATUS, 401 and 422), so the document lists what callers really get."""
    refusals = sorted(
        {
            *ERROR_STATUS.values(),
            HTTPStatus.UNAUTHORIZED,
            HTTPStatus.UNPROCESSABLE_ENTITY,
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
        }
    )
    responses: dict[int, OpenAPIResponse] = {
        int(refusal): {
            "description": refusal.phrase,
            "content": {content_types.APPLICATION_JSON: {"model": ErrorBody}},
        }
        for refusal in refusals
    }
    responses[int(status)] = {
        "description": status.phrase,
        "content": {content_types.APPLICATION_JSON: {"model": model}},
    }
    return responses


def status_for(error: Exception) -> HTTPStatus:
    for kind in type(error).__mro__:
        if kind in ERROR_STATUS:
            return ERROR_STATUS[kind]
    return HTTPStatus.INTERNAL_SERVER_ERROR


def install_error_handlers(app: APIGatewayRestResolver, logger: Logger) -> None:
    """Every rejection is logged with its reason and answered with a precise status, in one shape
    (`ErrorBody`): Powertools' own answers for validation and content type are replaced too."""

    def refuse(
        status: HTTPStatus, error: str, message: str, detail: list[Any] | None = None
    ) -> Response[Any]:
        logger.warning("request rejected", extra={"status": int(status), "error": error, "reason": message})
        body = ErrorBody(error=error, message=message, detail=detail)
        return json_response(status, body.model_dump(mode="json", exclude_none=True))

    def rejected(error: Exception) -> Response[Any]:
        if isinstance(error, json.JSONDecodeError):  # a route that parses its own body (callbacks)
            return refuse(status_for(error), MALFORMED_JSON, f"body: not valid JSON ({error.msg})")
        if isinstance(error, ValidationError):
            return refuse(
                status_for(error),
                type(error).__name__,
                describe(error.errors()),
                _field_problems(error.errors()),
            )
        return refuse(status_for(error), type(error).__name__, str(error))

    def invalid(error: RequestValidationError) -> Response[Any]:
        problems = list(error.errors())
        if any(item["type"] == "json_invalid" for item in problems):
            # Not JSON at all is a malformed request (400), as on the callback route, which parses
            # its own body; JSON that breaks the contract is a validation failure (422).
            return refuse(HTTPStatus.BAD_REQUEST, MALFORMED_JSON, describe(problems))
        return refuse(
            HTTPStatus.UNPROCESSABLE_ENTITY,
            "RequestValidationError",
            describe(problems),
            _field_problems(problems),
        )

    def unsupported(_error: RequestUnsupportedContentType) -> Response[Any]:
        return refuse(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedContentType",
            f"body: send it as {content_types.APPLICATION_JSON}",
        )

    def no_route(_error: Exception) -> Response[Any]:
        return refuse(HTTPStatus.NOT_FOUND, "NotFound", "no such route")

    app.exception_handler(list(ERROR_STATUS))(rejected)
    app.exception_handler(RequestValidationError)(invalid)
    app.exception_handler(RequestUnsupportedContentType)(unsupported)
    app.not_found(no_route)


def _field_problems(errors: Iterable[Any]) -> list[dict[str, Any]]:
    return [{"loc": list(item["loc"]), "type": item["type"]} for item in errors]


# What each kind of validation failure says, from the constraint's own values (pydantic's `ctx`).
# Pydantic's messages are not used: some echo the input (a discriminator's tag), and the input is
# the caller's, possibly hostile, text that would land in logs and terminals.
_PROBLEMS = {
    "missing": "required",
    "extra_forbidden": "not a known field",
    "string_too_long": "at most {max_length} characters",
    "string_too_short": "at least {min_length} characters",
    "too_long": "at most {max_length} items",
    "too_short": "at least {min_length} items",
    "string_pattern_mismatch": "must match {pattern}",
    "greater_than": "must be more than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
    "literal_error": "must be one of {expected}",
    "union_tag_invalid": "{discriminator} must be one of {expected_tags}",
    "union_tag_not_found": "needs a {discriminator} field",
    "bool_type": "must be true or false (a JSON boolean)",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "dict_type": "must be a JSON object",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "list_type": "must be a JSON array",
    "url_type": "must be a URL",
    "url_parsing": "must be a valid URL",
    "url_scheme": "the URL scheme must be {expected_schemes}",
    "url_too_long": "at most {max_length} characters",
    "json_invalid": "not valid JSON ({error})",
    "value_error": "{error}",
}


def describe(errors: Iterable[Any]) -> str:
    """ "body.message: at most 40000 characters; body.agent: required": each field and the limit it
    broke, never the input that broke it."""
    return "; ".join(_describe_one(item) for item in errors) or "invalid request"


def _describe_one(item: Mapping[str, Any]) -> str:
    kind = str(item.get("type", "invalid"))
    # A JSON syntax error's location is a character offset, not a field.
    location = item.get("loc", ()) if kind != "json_invalid" else ()
    where = ".".join(str(part) for part in location) or "body"
    template = _PROBLEMS.get(kind)
    context = {key: str(value) for key, value in (item.get("ctx") or {}).items()}
    try:
        problem = template.format(**context) if template is not None else kind
    except (KeyError, IndexError):
        problem = kind
    return f"{where}: {problem}"
