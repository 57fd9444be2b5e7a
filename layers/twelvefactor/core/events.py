"""Thread events (factors 5 and 12).

A thread is an append-only list of events. Everything the runtime needs to know about where a
thread stands is derived from this list by `twelvefactor.core.state`; nothing here is a flag.

Every event has the same envelope, ``{"type", "id", "at", "data"}``, where ``data`` is typed per
event type. The union is discriminated on ``type`` and (de)serialised by one module-level
``TypeAdapter``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints, TypeAdapter

ThreadId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
EventId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
CallId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,80}$")]
IntentName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
Channel = Literal["api", "slack", "email", "eventbridge", "cli"]
JsonValue = Any


def new_event_id() -> str:
    return uuid.uuid4().hex


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TokenUsage(_Model):
    prompt_tokens: int = Field(ge=0)
    """All input tokens, cached or not (the cached ones are also counted below)."""
    completion_tokens: int = Field(ge=0)
    cache_read_tokens: int | None = Field(default=None, ge=0)
    """Input tokens read from the provider's prompt cache (billed at a discount); None when unreported.
    Optional, so threads stored before caching was recorded still load."""
    cache_write_tokens: int | None = Field(default=None, ge=0)
    """Input tokens written to the provider's prompt cache (Bedrock bills these at a premium)."""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class _Event(_Model):
    id: EventId = Field(default_factory=new_event_id)
    at: datetime


class _DecisionEvent(_Event):
    """An event that records one answer of the model; its usage lets cost be summed per thread."""

    usage: TokenUsage | None = None


# --- data payloads ----------------------------------------------------------------------------


class UserMessageData(_Model):
    text: str
    channel: Channel = "api"
    sender: str | None = None


class ToolCallData(_Model):
    call_id: CallId
    intent: IntentName
    arguments: dict[str, JsonValue]
    # Who decided the call: the model, or the agent's deterministic prefetch hook (not a model step).
    origin: Literal["model", "prefetch"] = "model"


class ToolResultData(_Model):
    call_id: CallId
    intent: IntentName
    result: JsonValue = None


class ToolDispatchedData(_Model):
    """An async tool accepted the call; its result arrives later through a callback."""

    call_id: CallId
    intent: IntentName


class ApprovalRequestedData(_Model):
    call_id: CallId
    intent: IntentName
    arguments: dict[str, JsonValue]


class ApprovalData(_Model):
    call_id: CallId
    # Strict: it decides whether the call runs, so only a real boolean does ("no" is not False).
    approved: StrictBool
    comment: str = ""
    by: str | None = None


class HumanRequestData(_Model):
    question: str
    context: str = ""
    urgency: Literal["low", "medium", "high"] = "medium"
    format: Literal["free_text", "yes_no", "multiple_choice"] = "free_text"
    choices: list[str] = Field(default_factory=list)


class HumanResponseData(_Model):
    text: str
    by: str | None = None


class ErrorData(_Model):
    source: Literal["llm", "tool", "workflow"]
    message: str
    call_id: CallId | None = None


class EscalationData(_Model):
    reason: Literal["error_budget", "step_budget", "cost_budget", "wait_timeout", "workflow_failure"]
    message: str


class DoneData(_Model):
    message: str
    # Who wrote the message: the model, or code templating a tool's result (deterministic completion).
    origin: Literal["model", "completion"] = "model"


class CancelledData(_Model):
    by: str | None = None
    reason: str = ""


# --- the events -------------------------------------------------------------------------------


class UserMessage(_Event):
    type: Literal["user_message"] = "user_message"
    data: UserMessageData


class ToolCall(_DecisionEvent):
    type: Literal["tool_call"] = "tool_call"
    data: ToolCallData


class ToolResult(_Event):
    type: Literal["tool_result"] = "tool_result"
    data: ToolResultData


class ToolDispatched(_Event):
    type: Literal["tool_dispatched"] = "tool_dispatched"
    data: ToolDispatchedData


class ApprovalRequested(_Event):
    type: Literal["approval_requested"] = "approval_requested"
    data: ApprovalRequestedData


class Approval(_Event):
    type: Literal["approval"] = "approval"
    data: ApprovalData


class HumanRequest(_DecisionEvent):
    type: Literal["human_request"] = "human_request"
    data: HumanRequestData


class HumanResponse(_Event):
    type: Literal["human_response"] = "human_response"
    data: HumanResponseData


class Error(_DecisionEvent):
    type: Literal["error"] = "error"
    data: ErrorData


class Escalation(_Event):
    type: Literal["escalation"] = "escalation"
    data: EscalationData


class Done(_DecisionEvent):
    type: Literal["done"] = "done"
    data: DoneData


class Cancelled(_Event):
    type: Literal["cancelled"] = "cancelled"
    data: CancelledData


Event = Annotated[
    UserMessage
    | ToolCall
    | ToolResult
    | ToolDispatched
    | ApprovalRequested
    | Approval
    | HumanRequest
    | HumanResponse
    | Error
    | Escalation
    | Done
    | Cancelled,
    Field(discriminator="type"),
]
EventType = Literal[
    "user_message",
    "tool_call",
    "tool_result",
    "tool_dispatched",
    "approval_requested",
    "approval",
    "human_request",
    "human_response",
    "error",
    "escalation",
    "done",
    "cancelled",
]

# The events that record one answer of the model, and so may carry its token usage.
DecisionEvent = ToolCall | HumanRequest | Error | Done

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


class Thread(_Model):
    """One conversation: which agent runs it and everything that happened, in order."""

    id: ThreadId
    agent: IntentName
    events: tuple[Event, ...] = ()

    @property
    def last_seq(self) -> int:
        """The last event's sequence number (its position); -1 for a thread with none."""
        return len(self.events) - 1

    def extended(self, new_events: list[Event] | tuple[Event, ...]) -> Thread:
        return self.model_copy(update={"events": (*self.events, *new_events)})


THREAD_ADAPTER: TypeAdapter[Thread] = TypeAdapter(Thread)


def parse_event(raw: dict[str, Any] | str | bytes) -> Event:
    if isinstance(raw, dict):
        return EVENT_ADAPTER.validate_python(raw)
    return EVENT_ADAPTER.validate_json(raw)


def dump_event(event: Event) -> dict[str, Any]:
    dumped: dict[str, Any] = EVENT_ADAPTER.dump_python(event, mode="json", exclude_none=True)
    return dumped


def parse_thread(raw: str | bytes) -> Thread:
    return THREAD_ADAPTER.validate_json(raw)


def dump_thread(thread: Thread) -> str:
    return THREAD_ADAPTER.dump_json(thread, indent=2, exclude_none=True).decode()
