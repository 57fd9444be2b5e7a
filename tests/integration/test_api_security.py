"""Issue 14's security and contract defects, each held by a test on the real handlers and moto.

- a `callback_url` aimed at the runtime's own network is refused at launch, and nothing is written;
- an approval is a JSON boolean on every route that can approve (API, signed callback, EventBridge);
- every refusal has one body shape, and a 422 says which limit was broken;
- a log line carries only its own request's keys, never the previous request's thread id.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.stack import (  # noqa: F401 - fixtures
    SAMPLE_CALLBACK_ID,
    Stack,
    api_event,
    intent,
    sample,
    signed_callback_event,
    stack_fixture,
    webhook_receiver_fixture,
)
from twelvefactor import runtime
from twelvefactor.core import state
from twelvefactor.core.events import Approval, ToolResult
from twelvefactor.core.state import ThreadStatus

pytestmark = pytest.mark.integration

DEPLOY_PRODUCTION = intent("deploy_backend", tag="v1.2.3", environment="production")


def _launch_waiting_for_approval(stack: Stack) -> str:
    stack.script(intent("list_git_tags"), DEPLOY_PRODUCTION)
    launched = stack.api(api_event("api-launch"))
    assert launched.status == 202, launched.body
    thread_id: str = launched.body["thread_id"]
    stack.wait_for(thread_id, ThreadStatus.AWAITING_APPROVAL)
    return thread_id


def _webhook_launch(url: str) -> dict[str, Any]:
    event = api_event("api-launch-webhook")
    event["body"] = json.dumps({**json.loads(event["body"]), "callback_url": url})
    return event


def _nothing_written(stack: Stack) -> None:
    assert stack.store.list_threads() == []
    assert stack.executions() == []


# --- callback_url: no SSRF ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "https://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "https://[fd00:ec2::254]/latest/meta-data/",
        "https://[fe80::a9fe:a9fe]/",
        "https://10.1.2.3/hook",
        "https://[fd12::1]/hook",
        "https://2852039166/",  # 169.254.169.254 as one number
    ],
)
def test_a_callback_url_aimed_at_metadata_or_private_addresses_is_422_and_writes_nothing(
    stack: Stack, url: str
) -> None:
    # Given the stack in local mode (loopback callbacks allowed, as `twelvefactor local up` runs it)
    stack.script(intent("list_git_tags"), DEPLOY_PRODUCTION)

    # When a launch asks for callbacks at an internal address
    refused = stack.api(_webhook_launch(url))

    # Then it is refused with the reason, and no thread, execution or idempotency record exists
    assert refused.status == 422, refused.body
    assert refused.body["error"] == "UnsafeUrl"
    assert refused.body["message"].startswith("callback_url refused: ")
    _nothing_written(stack)
    # ... so the same Idempotency-Key with an acceptable URL still launches (no record was kept)
    accepted = stack.api(_webhook_launch(stack.receiver.url))
    assert accepted.status == 202, accepted.body
    stack.wait_for(accepted.body["thread_id"], ThreadStatus.AWAITING_APPROVAL)


@pytest.mark.parametrize("where", ["receiver", "https://127.0.0.1:8443/hook", "https://localhost/hook"])
def test_loopback_callbacks_are_refused_outside_local_mode(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    # Given a deployed runtime's settings: no WEBHOOK_ALLOW_LOOPBACK
    monkeypatch.delenv("WEBHOOK_ALLOW_LOOPBACK")
    runtime.reset()
    url = stack.receiver.url if where == "receiver" else where

    # When a launch asks for callbacks on loopback
    refused = stack.api(_webhook_launch(url))

    # Then it is refused and nothing is written
    assert refused.status == 422, refused.body
    assert "refused" in refused.body["message"]
    _nothing_written(stack)


# --- approvals are JSON booleans ------------------------------------------------------------------


def _unchanged_and_still_waiting(stack: Stack, thread_id: str, before: tuple[Any, ...]) -> None:
    events = stack.events(thread_id)
    assert events == before
    assert state.status(events) is ThreadStatus.AWAITING_APPROVAL
    deployed = [e for e in events if isinstance(e, ToolResult) and e.data.intent == "deploy_backend"]
    assert not [event for event in events if isinstance(event, Approval)] and not deployed


@pytest.mark.parametrize("approved", ["yes", "true", "false", 1, 0, None])
def test_an_approval_that_is_not_a_json_boolean_is_422_and_changes_nothing(
    stack: Stack, approved: Any
) -> None:
    # Given a production deploy waiting for approval
    thread_id = _launch_waiting_for_approval(stack)
    before = stack.events(thread_id)

    # When the answer's `approved` is not true or false
    body = {"kind": "approval", "approved": approved}
    refused = stack.api(api_event("api-respond-approve", thread_id=thread_id, body=body))

    # Then it is refused, naming the field, and the thread still waits with nothing run
    assert refused.status == 422, refused.body
    assert "approved: must be true or false" in refused.body["message"]
    _unchanged_and_still_waiting(stack, thread_id, before)


def test_a_signed_callback_approval_that_is_not_a_boolean_is_422_and_changes_nothing(stack: Stack) -> None:
    # Given a thread waiting for approval, answered through its callback
    thread_id = _launch_waiting_for_approval(stack)
    callback_id = stack.wait(thread_id).callback_id
    before = stack.events(thread_id)

    # When a correctly signed callback says "yes" instead of true
    refused = stack.api(signed_callback_event(callback_id, {"approved": "yes"}))

    # Then it is refused and the wait is still there to be answered properly
    assert refused.status == 422, refused.body
    assert "approved: must be true or false" in refused.body["message"]
    _unchanged_and_still_waiting(stack, thread_id, before)
    assert stack.wait(thread_id).callback_id == callback_id


def test_an_eventbridge_approval_that_is_not_a_boolean_is_ignored_and_changes_nothing(stack: Stack) -> None:
    # Given a thread waiting for approval
    thread_id = _launch_waiting_for_approval(stack)
    before = stack.events(thread_id)
    event = json.loads(
        json.dumps(sample("eventbridge-callback")).replace(
            SAMPLE_CALLBACK_ID, stack.wait(thread_id).callback_id
        )
    )
    event["detail"]["approved"] = "true"

    # When an EventBridge callback carries the string "true"
    result = stack.invoke("EventBridgeFunction", event)

    # Then it is dropped with the reason, and nothing changed
    assert result["action"] == "ignored"
    assert "approved" in result["reason"]
    _unchanged_and_still_waiting(stack, thread_id, before)


# --- one error body shape -------------------------------------------------------------------------


def test_every_refusal_answers_the_same_body_shape(stack: Stack) -> None:
    # Given requests refused by each layer: content type, JSON syntax, validation, routes, auth
    launch = api_event("api-launch-unknown-agent")
    text_plain = api_event("api-launch-unknown-agent", headers={"Content-Type": "text/plain"})
    not_json = api_event("api-launch-unknown-agent", body="{not json")
    too_long = api_event("api-launch-unknown-agent", body={"agent": "deploybot", "message": "x" * 40_001})
    unauthenticated = api_event("api-list")
    unauthenticated["requestContext"]["identity"]["userArn"] = None
    missing = api_event("api-get", thread_id="0" * 32)
    no_route = api_event("api-list")
    no_route["path"] = no_route["resource"] = no_route["requestContext"]["resourcePath"] = "/nowhere"

    # When each is sent
    answers = {
        name: stack.api(event)
        for name, event in {
            "unknown agent": launch,
            "text/plain": text_plain,
            "not json": not_json,
            "too long": too_long,
            "unauthenticated": unauthenticated,
            "missing": missing,
            "no route": no_route,
        }.items()
    }

    # Then each has its precise status and the same body shape: {"error", "message"[, "detail"]}
    statuses = {name: answer.status for name, answer in answers.items()}
    assert statuses == {
        "unknown agent": 400,
        "text/plain": 415,
        "not json": 400,
        "too long": 422,
        "unauthenticated": 401,
        "missing": 404,
        "no route": 404,
    }
    for name, answer in answers.items():
        assert set(answer.body) <= {"error", "message", "detail"}, (name, answer.body)
        assert isinstance(answer.body["error"], str) and answer.body["message"], (name, answer.body)
    # ... and a 422 says which limit was broken, without echoing the input
    assert answers["too long"].body["message"] == "body.message: at most 40000 characters"
    assert answers["not json"].body["error"] == "MalformedJson"
    _nothing_written(stack)


# --- logging: no state carried between invocations -------------------------------------------------


class _Lines(logging.Handler):
    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(formatter)
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def api_log_lines(stack: Stack) -> Iterator[list[dict[str, Any]]]:
    """Every line the Api function logs, as Powertools formats it (keys included)."""
    stack.handler("ApiFunction")
    logger = sys.modules["twelvefactor_functions.ApiFunction.app"].logger
    lines = _Lines(logger.registered_formatter)
    logger.addHandler(lines)
    try:
        yield lines.lines
    finally:
        logger.removeHandler(lines)


def test_a_log_line_does_not_carry_the_previous_requests_thread_id(
    stack: Stack, api_log_lines: list[dict[str, Any]]
) -> None:
    # Given an invocation about one thread, whose log line names it
    missing = "0" * 32
    assert stack.api(api_event("api-get", thread_id=missing)).status == 404
    [first] = [line for line in api_log_lines if line["message"] == "request rejected"]
    assert first["thread_id"] == missing

    # When the same warm function handles a request about no thread
    too_long = api_event("api-launch-unknown-agent", body={"agent": "deploybot", "message": "x" * 40_001})
    assert stack.api(too_long).status == 422

    # Then its log line has no thread_id: the first invocation's keys were cleared
    second = [line for line in api_log_lines if line["message"] == "request rejected"][1]
    assert "thread_id" not in second
