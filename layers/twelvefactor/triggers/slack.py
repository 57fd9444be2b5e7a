"""Inbound Slack requests: signature verification and parsing (no I/O).

Slack reaches us through API Gateway with two kinds of body: the Events API (JSON: the one-off
``url_verification`` challenge and ``event_callback`` deliveries) and interactivity (a form with one
``payload=`` field holding JSON, e.g. ``block_actions`` when someone clicks a button we posted).
Everything here works on the raw request so the signature is checked over exactly what Slack signed.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from slack_sdk.signature import Clock, SignatureVerifier

from ..core.channels import SlackRef
from ..core.errors import TwelvefactorError
from ..core.events import CallId, ThreadId

# Slack's own replay window: a request older (or newer) than this is refused even if signed.
MAX_SKEW_SECONDS = 5 * 60

# Buttons we post carry one of these action ids; any other action is not ours to handle.
APPROVE_ACTION = "twelvefactor_approve"
REJECT_ACTION = "twelvefactor_reject"
CHOICE_ACTION_PREFIX = "twelvefactor_choice_"

_MENTION = re.compile(r"<@([A-Z0-9]+)(?:\|[^>]*)?>")


class InvalidRequest(TwelvefactorError):
    """Not a request we accept from Slack; `reason` is logged, never echoed to the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidSignature(InvalidRequest):
    """Missing, forged or stale signature: 401, and nothing is written."""


# --- the raw HTTP request --------------------------------------------------------------------


@dataclass(frozen=True)
class SlackRequest:
    """The parts of an API Gateway proxy event that Slack signed or that steer our handling."""

    body: bytes
    headers: Mapping[str, str]  # lower-cased names

    @property
    def retry_num(self) -> int:
        value = self.headers.get("x-slack-retry-num", "0")
        return int(value) if value.isdigit() else 0

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


def request_from_proxy_event(event: Mapping[str, Any]) -> SlackRequest:
    """The raw body (base64-decoded when API Gateway encoded it) and case-insensitive headers."""
    headers = {str(name).lower(): str(value) for name, value in (event.get("headers") or {}).items()}
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequest("body is not valid base64") from exc
    else:
        raw = body.encode("utf-8")
    return SlackRequest(body=raw, headers=headers)


class _FixedClock(Clock):
    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now

    def now(self) -> float:
        return self._now()


def verify(request: SlackRequest, signing_secret: str, *, now: Callable[[], float]) -> None:
    """Raise InvalidSignature unless Slack signed this exact body within the last five minutes.

    slack_sdk's SignatureVerifier does the HMAC and the window; the checks before it only exist to
    name the reason in the log (a stale timestamp and a forged signature look alike to it).
    """
    timestamp = request.headers.get("x-slack-request-timestamp")
    signature = request.headers.get("x-slack-signature")
    if not timestamp or not signature:
        raise InvalidSignature("missing X-Slack-Request-Timestamp or X-Slack-Signature")
    if not timestamp.isdigit():
        raise InvalidSignature("timestamp is not a number")
    if abs(now() - int(timestamp)) > MAX_SKEW_SECONDS:
        raise InvalidSignature("timestamp outside the 5-minute window (stale or replayed request)")
    try:
        request.body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidSignature("body is not UTF-8") from exc
    verifier = SignatureVerifier(signing_secret, clock=_FixedClock(now))
    if not verifier.is_valid(body=request.body, timestamp=timestamp, signature=signature):
        raise InvalidSignature("signature does not match the body")


# --- what a request means ----------------------------------------------------------------------


@dataclass(frozen=True)
class UrlVerification:
    challenge: str


@dataclass(frozen=True)
class Ignored:
    """A delivery we acknowledge and drop: bot echoes, edits, events we did not ask for."""

    reason: str


@dataclass(frozen=True)
class SlackMessage:
    """Someone spoke to the agent: an app mention in a channel or a direct message."""

    delivery_id: str  # Slack's event_id: the same on every retry of one delivery
    ref: SlackRef
    text: str
    user_id: str
    in_thread: bool  # posted as a reply inside an existing Slack thread
    # A plain reply in a channel thread (no mention) may only continue one of our threads.
    may_launch: bool = True


@dataclass(frozen=True)
class ButtonClick:
    """A click on one of the buttons we posted (approve/reject or a choice)."""

    delivery_id: str
    team_id: str
    channel_id: str
    user_id: str
    message_ts: str  # the message carrying the buttons, to mark it answered
    message_text: str  # its text, kept when the buttons are replaced by the answer
    kind: Literal["approve", "reject", "choice"]
    thread_id: str
    call_id: str | None
    answer: str | None


SlackInbound = UrlVerification | Ignored | SlackMessage | ButtonClick


class ButtonValue(BaseModel):
    """What a button's `value` carries: where the answer goes. Never a task token."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    thread_id: ThreadId
    call_id: CallId | None = None
    answer: str | None = Field(default=None, min_length=1, max_length=1_000)


def parse(request: SlackRequest) -> SlackInbound:
    """Interpret a verified request. Raises InvalidRequest for bodies Slack would never send."""
    if request.content_type == "application/x-www-form-urlencoded":
        return _parse_interaction(request.body)
    try:
        body = json.loads(request.body)
    except ValueError as exc:
        raise InvalidRequest("body is neither JSON nor a form") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("JSON body is not an object")
    kind = body.get("type")
    if kind == "url_verification":
        challenge = body.get("challenge")
        if not isinstance(challenge, str):
            raise InvalidRequest("url_verification without a challenge")
        return UrlVerification(challenge)
    if kind == "event_callback":
        return _parse_event_callback(body)
    return Ignored(f"unhandled request type {kind!r}")


# Slack's ids and timestamps are a few dozen characters at most; they become DynamoDB keys, which
# DynamoDB caps at 2,048 bytes, so a longer one is a forged request, refused before any write.
MAX_SLACK_ID_CHARS = 64


def _check_id_lengths(*ids: str) -> None:
    if any(len(value) > MAX_SLACK_ID_CHARS for value in ids):
        raise InvalidRequest(f"a Slack id or timestamp longer than {MAX_SLACK_ID_CHARS} characters")


def _parse_event_callback(body: dict[str, Any]) -> SlackInbound:
    event = body.get("event")
    event_id, team_id = body.get("event_id"), body.get("team_id")
    if not isinstance(event, dict) or not isinstance(event_id, str) or not isinstance(team_id, str):
        raise InvalidRequest("event_callback without event, event_id or team_id")
    if not event_id.strip():
        # The delivery id is what makes a retried delivery a no-op: without one it can't be handled once.
        raise InvalidRequest("event_callback with an empty event_id")
    bot_user_ids = {
        auth["user_id"]
        for auth in body.get("authorizations") or []
        if isinstance(auth, dict) and auth.get("is_bot") and isinstance(auth.get("user_id"), str)
    }
    kind, channel, user = event.get("type"), event.get("channel"), event.get("user")
    if event.get("subtype") or event.get("bot_id") or "edited" in event:
        return Ignored(f"{kind} with subtype {event.get('subtype')!r}, a bot author or an edit")
    if not isinstance(channel, str) or not isinstance(user, str) or not isinstance(event.get("ts"), str):
        return Ignored(f"{kind} without channel, user or ts")
    if user in bot_user_ids:
        return Ignored("our own message")
    text = str(event.get("text") or "")
    ts, thread_ts = event["ts"], event.get("thread_ts")
    _check_id_lengths(team_id, channel, user, ts, thread_ts if isinstance(thread_ts, str) else "")
    in_thread = isinstance(thread_ts, str) and thread_ts != ts
    may_launch = True
    if kind == "app_mention":
        # A mention in a DM also arrives as message.im; that copy is the one we take.
        if channel.startswith("D"):
            return Ignored("app_mention in a direct message (handled as message.im)")
    elif kind == "message" and event.get("channel_type") != "im":
        mentions = {match.group(1) for match in _MENTION.finditer(text)}
        # Without the bot's id we can't tell a mention apart, so app_mention alone carries those.
        if not in_thread or not bot_user_ids or mentions & bot_user_ids:
            return Ignored("channel message outside a thread, or a mention (handled as app_mention)")
        may_launch = False
    elif kind != "message":
        return Ignored(f"unhandled event type {kind!r}")
    text = strip_mentions(text, bot_user_ids)
    if not text:
        return Ignored("empty message after removing the mention")
    return SlackMessage(
        delivery_id=event_id,
        ref=SlackRef(
            team_id=team_id,
            channel_id=channel,
            thread_ts=thread_ts if isinstance(thread_ts, str) else ts,
            user_id=user,
        ),
        text=text,
        user_id=user,
        in_thread=in_thread,
        may_launch=may_launch,
    )


def strip_mentions(text: str, bot_user_ids: set[str]) -> str:
    """Drop mentions of the bot (or, when we don't know its id, a leading mention) from the text."""
    if bot_user_ids:
        stripped = _MENTION.sub(lambda match: "" if match.group(1) in bot_user_ids else match.group(0), text)
    else:
        stripped = re.sub(rf"^\s*{_MENTION.pattern}", "", text)
    return re.sub(r"[ \t]{2,}", " ", stripped).strip()


def _parse_interaction(body: bytes) -> SlackInbound:
    form = parse_qs(body.decode("utf-8"), strict_parsing=False)
    payloads = form.get("payload")
    if not payloads or len(payloads) != 1:
        raise InvalidRequest("interactivity form without exactly one payload field")
    try:
        payload = json.loads(payloads[0])
    except ValueError as exc:
        raise InvalidRequest("interactivity payload is not JSON") from exc
    if not isinstance(payload, dict):
        raise InvalidRequest("interactivity payload is not an object")
    if payload.get("type") != "block_actions":
        return Ignored(f"unhandled interaction {payload.get('type')!r}")
    try:
        return _button_click(payload)
    # A part of the wrong JSON type (`"container": true`) fails as a KeyError, TypeError or
    # AttributeError, depending on how it is read: all of them are a malformed payload.
    except (KeyError, TypeError, IndexError, AttributeError, ValidationError) as exc:
        raise InvalidRequest(f"malformed block_actions payload: {exc}") from exc


def _button_click(payload: dict[str, Any]) -> SlackInbound:
    action = payload["actions"][0]
    action_id = str(action["action_id"])
    kind: Literal["approve", "reject", "choice"]
    if action_id == APPROVE_ACTION:
        kind = "approve"
    elif action_id == REJECT_ACTION:
        kind = "reject"
    elif action_id.startswith(CHOICE_ACTION_PREFIX):
        kind = "choice"
    else:
        return Ignored(f"action {action_id!r} is not one of ours")
    value = ButtonValue.model_validate_json(action["value"])
    if kind == "choice" and not value.answer:
        raise InvalidRequest("choice button without an answer")
    if kind != "choice" and not value.call_id:
        raise InvalidRequest("approval button without a call id")
    team_id = str(payload["team"]["id"])
    user_id = str(payload["user"]["id"])
    container = payload.get("container") or {}
    channel_id = str((payload.get("channel") or {}).get("id") or container["channel_id"])
    message = payload.get("message") or {}
    message_ts = str(container.get("message_ts") or message["ts"])
    _check_id_lengths(team_id, user_id, channel_id, message_ts, str(action["action_ts"]))
    return ButtonClick(
        # Interactivity has no event_id; one click is one (user, action_ts) pair.
        delivery_id=f"action:{team_id}:{user_id}:{action['action_ts']}",
        team_id=team_id,
        channel_id=channel_id,
        user_id=user_id,
        message_ts=message_ts,
        message_text=str(message.get("text") or ""),
        kind=kind,
        thread_id=value.thread_id,
        call_id=value.call_id,
        answer=value.answer,
    )


def parse_allowed(responders: str) -> frozenset[str]:
    """SlackSettings.allowed_responders ("U1,U2") as a set; empty means nobody may approve."""
    return frozenset(part.strip() for part in responders.split(",") if part.strip())
