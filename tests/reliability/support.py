"""What the reliability scenarios share: requests as Slack, SES and EventBridge send them, the fake
deployment service's record, and measurements of what landed in DynamoDB and Step Functions."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import boto3
import httpx

from tests.integration.conftest import REGION

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"

SLACK_SECRET = "reliability-signing-secret-0123456789"
SLACK_TEAM, SLACK_CHANNEL, SLACK_BOT = "T0TWELVE", "C0DEPLOYS", "U0BOT"
APPROVER, STRANGER = "U0ALICE", "U0MALLORY"
AGENT_ADDRESS = "agent@agents.example.com"
ALLOWED_SENDER, OTHER_SENDER = "ann@ops.example.com", "eve@elsewhere.example.net"

# The service limits the suite measures against.
DYNAMODB_ITEM_LIMIT = 400 * 1024
STEP_FUNCTIONS_PAYLOAD_LIMIT = 256 * 1024


def accepting_state_machine() -> str:
    """The ARN of a state machine that accepts executions and ends them: for suites where what
    runs downstream of the triggers is not under test."""
    machine = boto3.client("stepfunctions", region_name=REGION).create_state_machine(
        name="accepting",
        definition=json.dumps({"StartAt": "Accepted", "States": {"Accepted": {"Type": "Succeed"}}}),
        roleArn="arn:aws:iam::123456789012:role/sfn",
    )
    return machine["stateMachineArn"]


def sample(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return event


# --- Slack ---------------------------------------------------------------------------------------


def slack_signature(secret: str, timestamp: str, body: bytes) -> str:
    return "v0=" + hmac.new(secret.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256).hexdigest()


def signed_slack(
    event: dict[str, Any], *, secret: str = SLACK_SECRET, at: float | None = None, retry: int = 0
) -> dict[str, Any]:
    """The request as Slack sends it: signed over the raw body at `at` (now), maybe a retry."""
    raw = base64.b64decode(event["body"]) if event.get("isBase64Encoded") else str(event["body"]).encode()
    timestamp = str(int(time.time() if at is None else at))
    headers = {
        **{k: v for k, v in event["headers"].items() if not k.lower().startswith("x-slack-retry")},
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": slack_signature(secret, timestamp, raw),
    }
    if retry:
        headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
    return {**event, "headers": headers, "multiValueHeaders": {k: [v] for k, v in headers.items()}}


def slack_mention(text: str, *, ts: str, event_id: str, user: str = APPROVER) -> dict[str, Any]:
    body = {
        "token": "deprecated",
        "team_id": SLACK_TEAM,
        "api_app_id": "A0TWELVE",
        "type": "event_callback",
        "event_id": event_id,
        "event_time": int(float(ts)),
        "event": {
            "type": "app_mention",
            "user": user,
            "text": f"<@{SLACK_BOT}> {text}",
            "ts": ts,
            "channel": SLACK_CHANNEL,
            "event_ts": ts,
        },
        "authorizations": [{"team_id": SLACK_TEAM, "user_id": SLACK_BOT, "is_bot": True}],
    }
    return {**sample("slack-app-mention"), "body": json.dumps(body)}


def slack_click(button: dict[str, Any], *, user: str, action_ts: str, message_ts: str) -> dict[str, Any]:
    """The interactivity request Slack sends when `user` clicks `button` (as we posted it)."""
    payload = {
        "type": "block_actions",
        "user": {"id": user},
        "team": {"id": SLACK_TEAM},
        "channel": {"id": SLACK_CHANNEL},
        "container": {"type": "message", "message_ts": message_ts, "channel_id": SLACK_CHANNEL},
        "message": {"ts": message_ts, "text": "Approve?"},
        "actions": [{**button, "action_ts": action_ts}],
    }
    return {**sample("slack-button-approve"), "body": urlencode({"payload": json.dumps(payload)})}


def buttons(blocks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """action_id -> button, from the Block Kit message we posted."""
    return {
        element["action_id"]: element
        for block in blocks
        if block.get("type") == "actions"
        for element in block["elements"]
    }


# --- SES -----------------------------------------------------------------------------------------


def mime(
    *,
    sender: str = ALLOWED_SENDER,
    subject: str = "Deploy the backend",
    body: str = "Please deploy backend v1.2.3 to staging.",
    message_id: str | None = None,
    references: str | None = None,
) -> tuple[str, bytes]:
    """(Message-ID, raw bytes) of a plain-text email as a mail client writes it."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = AGENT_ADDRESS
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message_id = message_id or make_msgid(domain="mail.example.com")
    message["Message-ID"] = message_id
    if references:
        message["In-Reply-To"] = references.split()[-1]
        message["References"] = references
    message.set_content(body)
    return message_id, message.as_bytes()


def ses_receipt(
    ses_id: str, *, sender: str = ALLOWED_SENDER, verdicts: dict[str, str] | None = None, subject: str = "Hi"
) -> dict[str, Any]:
    """The receipt event SES invokes the Email function with (the raw message is in S3)."""
    event = sample("email-receipt")
    record = event["Records"][0]["ses"]
    record["mail"]["messageId"] = ses_id
    record["mail"]["source"] = sender
    record["mail"]["commonHeaders"]["from"] = [sender]
    record["mail"]["commonHeaders"]["subject"] = subject
    for name, status in (verdicts or {}).items():
        record["receipt"][f"{name}Verdict"] = {"status": status}
    return event


def store_raw_email(bucket: str, ses_id: str, raw: bytes) -> None:
    """What the receipt rule's S3 action does before the Lambda action runs."""
    boto3.client("s3", region_name=REGION).put_object(Bucket=bucket, Key=f"inbound/{ses_id}", Body=raw)


# --- EventBridge ---------------------------------------------------------------------------------


def eventbridge_event(
    event_id: str, detail: dict[str, Any], detail_type: str = "Deployment Requested"
) -> dict[str, Any]:
    return {**sample("eventbridge-launch"), "id": event_id, "detail-type": detail_type, "detail": detail}


# --- the fake deployment service -----------------------------------------------------------------


def deploys(service_url: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = httpx.get(f"{service_url}/deploys").json()["deploys"]
    return found


# --- measurements --------------------------------------------------------------------------------


def _attribute_bytes(value: dict[str, Any]) -> int:
    """DynamoDB's size rules, on the wire format: strings and binaries by length, numbers about one
    byte per two digits, containers 3 bytes plus their content."""
    (kind, inner), *_ = value.items()
    if kind == "S":
        return len(str(inner).encode())
    if kind == "B":
        return len(inner)
    if kind == "N":
        return len(str(inner)) // 2 + 1
    if kind in ("BOOL", "NULL"):
        return 1
    if kind in ("SS", "NS", "BS"):
        return sum(len(str(item).encode()) for item in inner)
    if kind == "L":
        return 3 + sum(_attribute_bytes(item) + 1 for item in inner)
    return 3 + sum(len(name.encode()) + _attribute_bytes(item) + 1 for name, item in inner.items())


def item_bytes(item: dict[str, Any]) -> int:
    return sum(len(name.encode()) + _attribute_bytes(value) for name, value in item.items())


def table_items(table: str) -> Iterator[dict[str, Any]]:
    client = boto3.client("dynamodb", region_name=REGION)
    for page in client.get_paginator("scan").paginate(TableName=table):
        yield from page["Items"]


def largest_item(table: str) -> int:
    return max((item_bytes(item) for item in table_items(table)), default=0)


_PAYLOAD_FIELDS = ("input", "output", "parameters", "cause", "error")


def _payloads(details: Any) -> Iterator[str]:
    if isinstance(details, dict):
        for name, value in details.items():
            if name in _PAYLOAD_FIELDS and isinstance(value, str):
                yield value
            else:
                yield from _payloads(value)


def step_functions_payloads(state_machine_arn: str) -> list[tuple[str, int]]:
    """(where, bytes) of every execution's input and output and every payload in its history."""
    sfn = boto3.client("stepfunctions", region_name=REGION)
    sizes: list[tuple[str, int]] = []
    for execution in sfn.list_executions(stateMachineArn=state_machine_arn)["executions"]:
        arn = execution["executionArn"]
        described = sfn.describe_execution(executionArn=arn)
        for name in ("input", "output"):
            if name in described:
                sizes.append((f"{execution['name']} {name}", len(described[name].encode())))
        history = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
        for event in history:
            details = {key: value for key, value in event.items() if key.endswith("Details")}
            for payload in _payloads(details):
                sizes.append((f"{execution['name']} #{event['id']} {event['type']}", len(payload.encode())))
    return sizes
