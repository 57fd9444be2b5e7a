"""The Slack stand-in answers the real slack_sdk client and records what Slack would show."""

from __future__ import annotations

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from twelvefactor.local.slack_standin import SlackStandIn


def test_the_real_web_client_posts_to_the_standin_and_the_message_is_recorded() -> None:
    # Given the stand-in and slack_sdk's client pointed at it
    with SlackStandIn() as slack:
        client = WebClient(token="xoxb-test", base_url=slack.base_url)
        # When a threaded message with buttons is posted
        blocks = [
            {
                "type": "actions",
                "elements": [{"type": "button", "text": {"type": "plain_text", "text": "OK"}}],
            }
        ]
        response = client.chat_postMessage(channel="C1", thread_ts="1.0", text="Approve?", blocks=blocks)
        # Then Slack's answer shape came back and the call was recorded with its blocks and token
        assert response["ok"] is True and response["channel"] == "C1"
        [message] = slack.messages("C1")
    assert message.arguments["thread_ts"] == "1.0"
    assert message.arguments["blocks"] == blocks
    assert message.token == "xoxb-test"


def test_an_unknown_method_fails_like_slack_does() -> None:
    with SlackStandIn() as slack:
        client = WebClient(token="xoxb-test", base_url=slack.base_url)
        with pytest.raises(SlackApiError, match="unknown_method"):
            client.api_call("reactions.add", json={"channel": "C1"})
