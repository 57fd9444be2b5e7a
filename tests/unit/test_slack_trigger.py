"""Slack requests: signatures over the raw body, and what each kind of payload means.

The sample events in events/slack-*.json carry placeholder signature headers; `signed` re-signs a
copy with a test secret at the test's own clock, the way Slack would have signed it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import pytest

from twelvefactor.triggers import slack

EVENTS = Path(__file__).resolve().parents[2] / "events"
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
NOW = 1_717_400_000.0


def load(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return event


def signed(event: dict[str, Any], *, secret: str = SECRET, at: float = NOW) -> dict[str, Any]:
    """A copy of the event whose signature headers Slack would have sent at `at`."""
    raw = base64.b64decode(event["body"]) if event.get("isBase64Encoded") else event["body"].encode()
    timestamp = str(int(at))
    digest = hmac.new(secret.encode(), b"v0:" + timestamp.encode() + b":" + raw, hashlib.sha256).hexdigest()
    headers = {
        **event["headers"],
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": f"v0={digest}",
    }
    return {**event, "headers": headers}


def verify(event: dict[str, Any], *, now: float = NOW) -> slack.SlackRequest:
    request = slack.request_from_proxy_event(event)
    slack.verify(request, SECRET, now=lambda: now)
    return request


def inbound(name: str) -> slack.SlackInbound:
    return slack.parse(verify(signed(load(name))))


# --- signatures --------------------------------------------------------------------------------


def test_a_request_signed_with_the_secret_verifies() -> None:
    # Given an app mention signed by Slack just now
    event = signed(load("slack-app-mention.json"))
    # When it is verified, Then nothing is raised and the body is the one Slack signed
    request = verify(event)
    assert json.loads(request.body)["event_id"] == "Ev0MENTION0001"


def test_a_base64_encoded_body_is_verified_over_the_decoded_bytes() -> None:
    # Given API Gateway delivered the (signed) body base64-encoded
    event = signed(load("slack-button-approve.json"))
    event = {**event, "body": base64.b64encode(event["body"].encode()).decode(), "isBase64Encoded": True}
    # When it is verified and parsed, Then the signature holds over the raw bytes
    assert isinstance(slack.parse(verify(event)), slack.ButtonClick)


def test_a_forged_signature_is_refused() -> None:
    # Given a request signed with somebody else's secret
    event = signed(load("slack-app-mention.json"), secret="not-the-apps-secret")
    # When it is verified, Then it is refused as a signature mismatch
    with pytest.raises(slack.InvalidSignature, match="does not match"):
        verify(event)


def test_a_body_changed_after_signing_is_refused() -> None:
    # Given a correctly signed request whose body was altered on the way
    event = signed(load("slack-app-mention.json"))
    event["body"] = event["body"].replace("staging", "production")
    # When it is verified, Then the signature no longer matches
    with pytest.raises(slack.InvalidSignature, match="does not match"):
        verify(event)


def test_a_stale_request_is_refused_even_with_a_good_signature() -> None:
    # Given a request Slack signed six minutes ago
    event = signed(load("slack-app-mention.json"), at=NOW - 6 * 60)
    # When it is verified now, Then it is outside the five-minute window
    with pytest.raises(slack.InvalidSignature, match="5-minute window"):
        verify(event)


def test_a_captured_request_replayed_after_the_window_is_refused() -> None:
    # Given a genuine request, accepted when it arrived
    event = signed(load("slack-button-approve.json"))
    verify(event)
    # When an attacker replays the identical bytes and headers five minutes and a second later
    # Then it is refused (replays inside the window are the idempotency layer's job)
    with pytest.raises(slack.InvalidSignature, match="5-minute window"):
        verify(event, now=NOW + 5 * 60 + 1)


def test_a_timestamp_from_the_future_is_refused() -> None:
    event = signed(load("slack-app-mention.json"), at=NOW + 10 * 60)
    with pytest.raises(slack.InvalidSignature, match="5-minute window"):
        verify(event)


@pytest.mark.parametrize(
    ("drop", "overrides"),
    [
        ("X-Slack-Signature", {}),
        ("X-Slack-Request-Timestamp", {}),
        (None, {"X-Slack-Request-Timestamp": "yesterday"}),
    ],
)
def test_missing_or_malformed_signature_headers_are_refused(
    drop: str | None, overrides: dict[str, str]
) -> None:
    # Given a signed request that lost a header or carries a nonsense timestamp
    event = signed(load("slack-app-mention.json"))
    headers = {k: v for k, v in event["headers"].items() if k != drop} | overrides
    # When it is verified, Then it is refused before any HMAC is computed
    with pytest.raises(slack.InvalidSignature):
        verify({**event, "headers": headers})


def test_header_names_are_case_insensitive() -> None:
    # Given API Gateway lower-cased the header names (HTTP/2 clients do)
    event = signed(load("slack-app-mention.json"))
    event["headers"] = {name.lower(): value for name, value in event["headers"].items()}
    # Then the request still verifies
    verify(event)


def test_a_body_that_is_not_base64_is_a_bad_request() -> None:
    event = {**load("slack-app-mention.json"), "body": "%%%", "isBase64Encoded": True}
    with pytest.raises(slack.InvalidRequest):
        slack.request_from_proxy_event(event)


# --- what each payload means -------------------------------------------------------------------


def test_url_verification_returns_the_challenge() -> None:
    parsed = inbound("slack-url-verification.json")
    assert parsed == slack.UrlVerification("3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P")


def test_an_app_mention_is_a_message_without_the_bot_mention() -> None:
    # When the sample mention is parsed
    parsed = inbound("slack-app-mention.json")
    # Then it is a launchable message in a new Slack thread rooted at the mention itself
    assert isinstance(parsed, slack.SlackMessage)
    assert parsed.text == "please deploy web 1.4.2 to staging"
    assert parsed.delivery_id == "Ev0MENTION0001"
    assert (parsed.ref.team_id, parsed.ref.channel_id, parsed.ref.thread_ts) == (
        "T0TWELVE",
        "C0DEPLOYS",
        "1717400000.000100",
    )
    assert parsed.user_id == "U0ALICE" and not parsed.in_thread and parsed.may_launch


def test_a_mention_inside_a_thread_points_at_the_thread_root() -> None:
    parsed = inbound("slack-thread-reply.json")
    assert isinstance(parsed, slack.SlackMessage)
    # The reply's own ts differs; the correlation is the root the conversation hangs from
    assert parsed.ref.thread_ts == "1717400000.000100" and parsed.in_thread
    assert parsed.ref.correlation_key == "SLACK#T0TWELVE#C0DEPLOYS#1717400000.000100"
    assert parsed.text == "use the blue-green strategy"


def test_a_direct_message_is_a_message() -> None:
    parsed = inbound("slack-direct-message.json")
    assert isinstance(parsed, slack.SlackMessage)
    assert parsed.ref.channel_id == "D0ALICE" and parsed.text == "what is running on production?"


def test_a_retry_carries_the_same_delivery_id_and_its_retry_number() -> None:
    original, retry = load("slack-app-mention.json"), load("slack-retry.json")
    request = verify(signed(retry))
    parsed = slack.parse(request)
    assert isinstance(parsed, slack.SlackMessage)
    assert request.retry_num == 1 and slack.request_from_proxy_event(original).retry_num == 0
    assert parsed.delivery_id == json.loads(original["body"])["event_id"]


def _event_callback(**event: Any) -> dict[str, Any]:
    """The sample mention with its inner event replaced (and re-signed by the caller)."""
    base = load("slack-app-mention.json")
    body = json.loads(base["body"])
    body["event"] = {"channel": "C0DEPLOYS", "user": "U0ALICE", "ts": "1717400500.000500", **event}
    return {**base, "body": json.dumps(body)}


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ({"type": "message", "channel_type": "im", "subtype": "message_changed", "text": "x"}, "subtype"),
        ({"type": "message", "channel_type": "im", "bot_id": "B1", "text": "x"}, "bot"),
        ({"type": "message", "channel_type": "im", "text": "x", "edited": {"ts": "1"}}, "edit"),
        ({"type": "message", "channel_type": "im", "user": "U0BOT", "text": "my own words"}, "our own"),
        ({"type": "message", "channel_type": "channel", "text": "chatter"}, "outside a thread"),
        ({"type": "app_mention", "channel": "D0ALICE", "text": "<@U0BOT> hi"}, "direct message"),
        ({"type": "reaction_added", "text": ""}, "unhandled event type"),
        ({"type": "app_mention", "text": "<@U0BOT>"}, "empty"),
    ],
)
def test_deliveries_that_are_not_for_the_agent_are_ignored(event: dict[str, Any], reason: str) -> None:
    # Given a delivery that is an echo, an edit, noise or a duplicate of another event
    parsed = slack.parse(verify(signed(_event_callback(**event))))
    # Then it is acknowledged and dropped, with the reason named
    assert isinstance(parsed, slack.Ignored) and reason in parsed.reason


def test_a_plain_reply_in_a_channel_thread_may_only_continue_a_known_thread() -> None:
    # Given a reply without a mention inside a channel thread
    event = _event_callback(
        type="message", channel_type="channel", text="canary please", thread_ts="1717400000.000100"
    )
    parsed = slack.parse(verify(signed(event)))
    # Then it is a message that cannot launch a new thread by itself
    assert isinstance(parsed, slack.SlackMessage) and not parsed.may_launch
    assert parsed.ref.thread_ts == "1717400000.000100"


def test_only_the_bots_mentions_are_stripped() -> None:
    assert slack.strip_mentions("<@U0BOT> ask <@U0CAROL|carol> to  review", {"U0BOT"}) == (
        "ask <@U0CAROL|carol> to review"
    )
    # Without the bot's id only a leading mention is taken for the bot's
    assert slack.strip_mentions("<@UX> deploy with <@UY>", set()) == "deploy with <@UY>"


def test_an_approve_click_names_the_thread_and_call_but_no_token() -> None:
    parsed = inbound("slack-button-approve.json")
    assert isinstance(parsed, slack.ButtonClick)
    assert (parsed.kind, parsed.thread_id, parsed.call_id, parsed.user_id) == (
        "approve",
        "slack-sample-approval",
        "call-1",
        "U0ALICE",
    )
    assert parsed.message_ts == "1717399050.000150" and parsed.channel_id == "C0DEPLOYS"
    assert parsed.delivery_id == "action:T0TWELVE:U0ALICE:1717400060.000001"


def test_reject_and_choice_clicks() -> None:
    reject, choice = inbound("slack-button-reject.json"), inbound("slack-button-choice.json")
    assert isinstance(reject, slack.ButtonClick) and reject.kind == "reject"
    assert isinstance(choice, slack.ButtonClick)
    assert (choice.kind, choice.thread_id, choice.answer) == ("choice", "slack-sample-question", "canary")


def _with_payload(change: dict[str, Any]) -> dict[str, Any]:
    base = load("slack-button-approve.json")
    payload = json.loads(parse_qs(base["body"])["payload"][0])
    payload.update(change)
    return {**base, "body": urlencode({"payload": json.dumps(payload)})}


def test_a_click_on_someone_elses_button_is_ignored() -> None:
    action = {"action_id": "other_app_button", "value": "x", "action_ts": "1.0"}
    parsed = slack.parse(verify(signed(_with_payload({"actions": [action]}))))
    assert isinstance(parsed, slack.Ignored)


def test_an_approval_button_without_a_call_id_is_a_bad_request() -> None:
    action = {"action_id": slack.APPROVE_ACTION, "value": json.dumps({"thread_id": "t1"}), "action_ts": "1.0"}
    with pytest.raises(slack.InvalidRequest, match="call id"):
        slack.parse(verify(signed(_with_payload({"actions": [action]}))))


def test_a_button_value_with_unknown_fields_is_a_bad_request() -> None:
    # A value we did not write (say, one smuggling a task token) is refused, not half-read
    value = json.dumps({"thread_id": "t1", "call_id": "call-1", "task_token": "AAAA"})
    action = {"action_id": slack.APPROVE_ACTION, "value": value, "action_ts": "1.0"}
    with pytest.raises(slack.InvalidRequest, match="malformed"):
        slack.parse(verify(signed(_with_payload({"actions": [action]}))))


def test_a_button_value_naming_no_valid_thread_is_a_bad_request() -> None:
    value = json.dumps({"thread_id": "../../etc", "call_id": "call-1"})
    action = {"action_id": slack.APPROVE_ACTION, "value": value, "action_ts": "1.0"}
    with pytest.raises(slack.InvalidRequest, match="malformed"):
        slack.parse(verify(signed(_with_payload({"actions": [action]}))))


@pytest.mark.parametrize(
    "change",
    [
        {"container": True},
        {"container": "C123", "channel": None},
        {"channel": 5},
        {"message": 1, "container": {"channel_id": "C123"}},
        {"team": ["T1"]},
        {"actions": ["approve"]},
    ],
    ids=["container-bool", "container-text", "channel-number", "message-number", "team-list", "action-text"],
)
def test_a_block_actions_payload_with_parts_of_the_wrong_type_is_a_bad_request(
    change: dict[str, Any],
) -> None:
    # Given a signed click whose parts have JSON types Slack never sends (found by the hostile fuzz
    # suite: `"container": true` crashed the parser with an AttributeError, a 5xx)
    request = verify(signed(_with_payload(change)))
    # When it is parsed, Then it is refused as malformed, not crashed on
    with pytest.raises(slack.InvalidRequest, match="malformed"):
        slack.parse(request)


def test_other_interactions_are_ignored() -> None:
    parsed = slack.parse(verify(signed(_with_payload({"type": "view_submission"}))))
    assert isinstance(parsed, slack.Ignored)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("not json", "application/json"),
        ("[1, 2]", "application/json"),
        ('{"type": "event_callback"}', "application/json"),
        ("other=1", "application/x-www-form-urlencoded"),
        ("payload=not-json", "application/x-www-form-urlencoded"),
    ],
)
def test_bodies_slack_never_sends_are_bad_requests(body: str, content_type: str) -> None:
    base = load("slack-app-mention.json")
    event = {**base, "body": body, "headers": {**base["headers"], "Content-Type": content_type}}
    with pytest.raises(slack.InvalidRequest):
        slack.parse(verify(signed(event)))


def test_allowed_responders_are_a_comma_separated_list() -> None:
    assert slack.parse_allowed(" U1, U2 ,,") == frozenset({"U1", "U2"})
    assert slack.parse_allowed("") == frozenset()


def test_an_id_longer_than_slack_makes_is_a_bad_request_before_it_becomes_a_key() -> None:
    # Given a mention whose channel id is far longer than any Slack id (found by the hostile fuzz
    # suite: it became a DynamoDB key over the 2,048-byte limit and the handler answered 5xx)
    event = load("slack-app-mention.json")
    body = json.loads(event["body"])
    body["event"]["channel"] = "C" * 3_000
    # When it is parsed, Then it is refused as a bad request
    with pytest.raises(slack.InvalidRequest, match="longer than"):
        slack.parse(slack.request_from_proxy_event({**event, "body": json.dumps(body)}))
