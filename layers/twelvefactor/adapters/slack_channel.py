"""Slack as a human channel (factors 7 and 11): replies go into the Slack thread the work came from.

Approvals and choices are Block Kit buttons whose `value` names the thread and the call they answer;
the task token stays in the pending-wait item, so a leaked button value resumes nothing on its own
(the click must still come signed from Slack, by an allowed responder).
"""

from __future__ import annotations

from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from ..core.channels import ChannelRef, Notification, SlackRef
from ..settings import SlackSettings
from ..triggers.slack import APPROVE_ACTION, CHOICE_ACTION_PREFIX, REJECT_ACTION, ButtonValue
from .ports import ChannelError

# Slack's limits: section text 3,000 characters, button text 75, an actions block 25 elements.
_SECTION_CHARS = 3_000
_BUTTON_CHARS = 75
_MAX_CHOICES = 25
# A button's value holds at most 2,000 characters; the answer leaves room for the thread id.
_ANSWER_CHARS = 1_000
_WEB_API_TIMEOUT_SECONDS = 10


def escape(text: str) -> str:
    """Slack's mrkdwn escaping: the agent's words can't @channel anyone or forge a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(escape(text), _SECTION_CHARS)}}


def _button(label: str, action_id: str, value: ButtonValue, style: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": _clip(label, _BUTTON_CHARS)},
        "value": value.model_dump_json(exclude_none=True),
    }
    if style:
        button["style"] = style
    return button


def blocks_for(notification: Notification) -> list[dict[str, Any]]:
    """The Block Kit message for a notification: buttons wherever the answer is a click."""
    thread_id = notification.thread_id
    if notification.format == "approve_reject":
        value = ButtonValue(thread_id=thread_id, call_id=notification.call_id)
        buttons = [
            _button("Approve", APPROVE_ACTION, value, "primary"),
            _button("Reject", REJECT_ACTION, value, "danger"),
        ]
        return [_section(notification.text), {"type": "actions", "elements": buttons}]
    if notification.format in ("yes_no", "multiple_choice"):
        choices = notification.choices or (("Yes", "No") if notification.format == "yes_no" else ())
        if choices:
            buttons = [
                _button(
                    choice,
                    f"{CHOICE_ACTION_PREFIX}{index}",
                    ButtonValue(thread_id=thread_id, answer=choice[:_ANSWER_CHARS]),
                )
                for index, choice in enumerate(choices[:_MAX_CHOICES])
            ]
            return [_section(notification.text), {"type": "actions", "elements": buttons}]
    if notification.kind == "question":
        return [_section(notification.text), _context("Reply in this thread to answer.")]
    return [_section(notification.text)]


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(text, _SECTION_CHARS)}]}


def _in_thread(ref: SlackRef) -> dict[str, str]:
    """Reply in the Slack thread, or post to the channel when the agent opened the conversation."""
    return {"thread_ts": ref.thread_ts} if ref.thread_ts else {}


class SlackChannel:
    """Implements `HumanChannel` with slack_sdk's WebClient (pointed elsewhere by `api_base_url`)."""

    def __init__(self, client: WebClient, *, operations_channel: str | None = None) -> None:
        self._client = client
        self._operations_channel = operations_channel

    @classmethod
    def connect(cls, settings: SlackSettings, bot_token: str) -> SlackChannel:
        client = WebClient(token=bot_token, base_url=settings.api_base_url, timeout=_WEB_API_TIMEOUT_SECONDS)
        return cls(client, operations_channel=settings.operations_channel)

    def send(self, ref: ChannelRef, notification: Notification) -> None:
        if not isinstance(ref, SlackRef):
            raise ChannelError(f"SlackChannel cannot deliver to a {ref.kind} channel")
        self._call(
            "chat.postMessage",
            channel=ref.channel_id,
            text=escape(notification.text),
            blocks=blocks_for(notification),
            **_in_thread(ref),
        )
        if notification.kind == "escalation" and self._operations_channel not in (None, ref.channel_id):
            self.notify_operations(notification)

    def notify_operations(self, notification: Notification) -> bool:
        """Copy an escalation to the operations channel, if one is configured; False when none is."""
        if self._operations_channel is None:
            return False
        text = f"Escalation in thread {notification.thread_id}: {notification.text}"
        self._call("chat.postMessage", channel=self._operations_channel, text=escape(text))
        return True

    def say(self, ref: SlackRef, text: str) -> None:
        """A plain reply in the thread (e.g. why a message could not be taken)."""
        self._call("chat.postMessage", channel=ref.channel_id, text=escape(text), **_in_thread(ref))

    def say_privately(self, channel_id: str, user_id: str, text: str) -> None:
        """An ephemeral message only `user_id` sees, e.g. "you may not approve this"."""
        self._call("chat.postEphemeral", channel=channel_id, user=user_id, text=escape(text))

    def mark_answered(
        self, channel_id: str, message_ts: str, question: str, answer: str, by_user: str
    ) -> None:
        """Replace the buttons of an answered message with who answered what, so nobody clicks twice."""
        outcome = f"{escape(answer)} by <@{escape(by_user)}>"
        self._call(
            "chat.update",
            channel=channel_id,
            ts=message_ts,
            text=f"{escape(question)}\n{outcome}",
            blocks=[_section(question), _context(outcome)],
        )

    def _call(self, method: str, **arguments: Any) -> None:
        try:
            self._client.api_call(method, json=arguments)
        except SlackApiError as exc:
            raise ChannelError(f"Slack {method} failed: {exc.response.get('error')}") from exc
        except (SlackClientError, OSError) as exc:
            raise ChannelError(f"Slack {method} failed: {exc}") from exc
