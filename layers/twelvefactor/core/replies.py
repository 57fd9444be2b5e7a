"""Launch, resume and cancel (factors 6 and 7): the events a trigger adds to a thread.

Every trigger (Slack, email, API, EventBridge, callbacks) normalises its input to one of these
calls, so the rules for what a thread accepts live in one place: an approval only when an approval
is pending, for that call; a free-text answer only when a person was asked; a callback only for
the async call that waits for it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from . import state
from .errors import NotWaiting
from .events import (
    Approval,
    ApprovalData,
    Cancelled,
    CancelledData,
    Channel,
    Event,
    HumanResponse,
    HumanResponseData,
    JsonValue,
    Thread,
    ToolResult,
    ToolResultData,
    UserMessage,
    UserMessageData,
)


class _Reply(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    by: str | None = None


class ApprovalReply(_Reply):
    kind: Literal["approval"] = "approval"
    # Strict on every route in (API body, signed callback, EventBridge detail): "yes", "false", 1 or
    # "0" are refused rather than coerced, since "false" would otherwise approve a production deploy.
    approved: StrictBool
    comment: str = Field(default="", max_length=4_000)
    # Which pending call this approves; None means "the one that is pending now".
    call_id: str | None = None


class TextReply(_Reply):
    kind: Literal["response"] = "response"
    text: str = Field(min_length=1, max_length=40_000)


# An approval needs an approve/reject answer and a cancelled thread takes nothing more.
_NO_FOLLOW_UP = frozenset(
    {
        state.ThreadStatus.AWAITING_APPROVAL,
        state.ThreadStatus.AWAITING_CALLBACK,
        state.ThreadStatus.CANCELLING,
        state.ThreadStatus.CANCELLED,
    }
)

HumanReply = Annotated[ApprovalReply | TextReply, Field(discriminator="kind")]


def launch(text: str, *, at: datetime, channel: Channel, sender: str | None = None) -> list[Event]:
    return [UserMessage(at=at, data=UserMessageData(text=text, channel=channel, sender=sender))]


def follow_up(
    thread: Thread, text: str, *, at: datetime, channel: Channel, sender: str | None
) -> list[Event]:
    """A new message in a known conversation: an answer if someone was asked, else a new launch."""
    current = state.status(thread.events)
    if current is state.ThreadStatus.AWAITING_HUMAN:
        return [HumanResponse(at=at, data=HumanResponseData(text=text, by=sender))]
    if current in _NO_FOLLOW_UP:
        raise NotWaiting(f"thread {thread.id} is {current.value}")
    return launch(text, at=at, channel=channel, sender=sender)


def respond(thread: Thread, reply: ApprovalReply | TextReply, *, at: datetime) -> list[Event]:
    """A person's answer to what the thread waits for; NotWaiting when it waits for something else."""
    if isinstance(reply, ApprovalReply):
        pending = state.awaiting_approval(thread.events)
        if pending is None:
            raise NotWaiting(f"thread {thread.id} is not waiting for an approval")
        if reply.call_id is not None and reply.call_id != pending.data.call_id:
            raise NotWaiting(f"call {reply.call_id} is not the one waiting for approval")
        data = ApprovalData(
            call_id=pending.data.call_id, approved=reply.approved, comment=reply.comment, by=reply.by
        )
        return [Approval(at=at, data=data)]
    if state.awaiting_human(thread.events) is None:
        raise NotWaiting(f"thread {thread.id} is not waiting for a human response")
    return [HumanResponse(at=at, data=HumanResponseData(text=reply.text, by=reply.by))]


def callback(thread: Thread, call_id: str, result: JsonValue, *, at: datetime) -> list[Event]:
    pending = state.awaiting_callback(thread.events)
    if pending is None or pending.data.call_id != call_id:
        raise NotWaiting(f"thread {thread.id} is not waiting for a callback on {call_id}")
    return [
        ToolResult(at=at, data=ToolResultData(call_id=call_id, intent=pending.data.intent, result=result))
    ]


def cancel(thread: Thread, *, at: datetime, by: str | None = None, reason: str = "") -> list[Event]:
    if state.cancel_requested(thread.events) or state.status(thread.events).is_final:
        raise NotWaiting(f"thread {thread.id} has already ended or is being cancelled")
    return [Cancelled(at=at, data=CancelledData(by=by, reason=reason))]
