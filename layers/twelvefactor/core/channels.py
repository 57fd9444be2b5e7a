"""Where a thread came from and what to tell its human (factors 7 and 11).

Replies go out on the channel the thread came from. The reference is stored with the thread (never
rendered into a prompt); `notification_for` derives, from the events alone, what the person must
see now: an approval request, a question, an escalation or the final message.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from . import state
from .events import ApprovalRequested, Done, Escalation, Event, HumanRequest


class _Ref(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SlackRef(_Ref):
    kind: Literal["slack"] = "slack"
    team_id: str
    channel_id: str
    # Empty for a conversation the agent opens itself (an agent's human_channel): each message is
    # then posted to the channel, and its buttons still answer this thread (they carry its id).
    thread_ts: str = ""
    user_id: str | None = None

    @property
    def correlation_key(self) -> str:
        return f"SLACK#{self.team_id}#{self.channel_id}#{self.thread_ts}"


class EmailRef(_Ref):
    kind: Literal["email"] = "email"
    address: str
    subject: str = ""
    # The latest inbound Message-ID and the References chain, for threading replies.
    message_id: str
    references: tuple[str, ...] = ()

    @property
    def correlation_key(self) -> str:
        return f"EMAIL#{self.message_id}"


class WebhookRef(_Ref):
    kind: Literal["webhook"] = "webhook"
    url: str


class NoReplyRef(_Ref):
    """An API or EventBridge caller without a callback URL: it polls GET /threads/{id}."""

    kind: Literal["none"] = "none"


ChannelRef = Annotated[SlackRef | EmailRef | WebhookRef | NoReplyRef, Field(discriminator="kind")]


class Notification(BaseModel):
    """What a person should see now. `callback_id` is filled in by Notify, never by the model."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    thread_id: str
    kind: Literal["approval", "question", "escalation", "done"]
    text: str
    format: Literal["free_text", "yes_no", "multiple_choice", "approve_reject"] = "free_text"
    choices: tuple[str, ...] = ()
    call_id: str | None = None
    callback_id: str | None = None


def notification_for(thread_id: str, events: tuple[Event, ...] | list[Event]) -> Notification | None:
    """The message a person must get for the thread's current state, or None if nobody is asked."""
    if not events:
        return None
    last = events[-1]
    match last:
        case ApprovalRequested(data=data):
            arguments = ", ".join(f"{key}={value}" for key, value in data.arguments.items())
            return Notification(
                thread_id=thread_id,
                kind="approval",
                text=f"Approve {data.intent}({arguments})?",
                format="approve_reject",
                call_id=data.call_id,
            )
        case HumanRequest(data=data):
            text = f"{data.question}\n{data.context}".strip()
            return Notification(
                thread_id=thread_id,
                kind="question",
                text=text,
                format=data.format,
                choices=tuple(data.choices),
            )
        case Escalation(data=data):
            return Notification(thread_id=thread_id, kind="escalation", text=data.message)
        case Done(data=data) if state.status(events) is state.ThreadStatus.DONE:
            return Notification(thread_id=thread_id, kind="done", text=data.message)
    return None
