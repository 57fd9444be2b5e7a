"""The Api function on the events/api-*.json samples, against moto and the real state machine.

The reducer and Notify run for real inside moto's execution of template.yaml's ASL; only the
model is scripted. Each test aims a sample event at a thread it created and checks what the
caller sees and what was (or was not) written.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from tests.integration.stack import (  # noqa: F401 - fixtures
    IAM_CALLER,
    WEBHOOK_SECRET,
    Stack,
    api_event,
    intent,
    signed_callback_event,
    stack_fixture,
    usage_reply,
    webhook_receiver_fixture,
)
from tests.support import poll_until
from tests.unit.agent_fixtures import AGENT_NAME, DeployService, build_agent, write_prompts
from twelvefactor.adapters import webhook
from twelvefactor.adapters.ports import ThreadMeta
from twelvefactor.core.agent import AgentRegistry
from twelvefactor.core.events import (
    Approval,
    ApprovalRequested,
    Cancelled,
    CancelledData,
    Done,
    ToolCall,
    ToolResult,
    UserMessage,
    UserMessageData,
)
from twelvefactor.core.prompts import JinjaPrompts
from twelvefactor.core.state import ThreadStatus
from twelvefactor.triggers.api import EventsPage, ThreadView

pytestmark = pytest.mark.integration

DEPLOY_PRODUCTION = intent("deploy_backend", tag="v1.2.3", environment="production")
# deploybot is offered a deploy only once the tags are in the thread.
LIST_TAGS = intent("list_git_tags")


def _launch_waiting_for_approval(stack: Stack, event: dict[str, Any] | None = None) -> str:
    # (The successful deploy ends the turn with a message code writes: no third answer.)
    stack.script(LIST_TAGS, usage_reply(DEPLOY_PRODUCTION, 120, 30))
    launched = stack.api(event or api_event("api-launch"))
    assert launched.status == 202, launched.body
    thread_id: str = launched.body["thread_id"]
    stack.wait_for(thread_id, ThreadStatus.AWAITING_APPROVAL)
    return thread_id


def test_launch_get_approve_runs_the_thread_to_done(stack: Stack) -> None:
    # Given a launch through POST /threads whose model asks to deploy to production
    thread_id = _launch_waiting_for_approval(stack)

    # When the caller reads the thread and its events
    got = stack.api(api_event("api-get", thread_id=thread_id))
    page = stack.api(api_event("api-events", thread_id=thread_id, query={"after": "0"}))
    one = stack.api(api_event("api-events", thread_id=thread_id, query={"after": "0", "limit": "1"}))

    # Then it is paused for approval, with the model's token usage counted
    assert got.status == 200
    assert got.body["status"] == "awaiting_approval"
    assert got.body["total_tokens"] == 150
    assert [event["type"] for event in got.body["events"]] == [
        "user_message",
        "tool_call",
        "tool_result",
        "tool_call",
        "approval_requested",
    ]
    assert [(event["seq"], event["type"]) for event in page.body["events"]] == [
        (1, "tool_call"),
        (2, "tool_result"),
        (3, "tool_call"),
        (4, "approval_requested"),
    ]
    assert got.body["next_after"] is None and page.body["next_after"] is None
    # And a smaller page says where the next one starts
    assert [event["seq"] for event in one.body["events"]] == [1] and one.body["next_after"] == 1

    # When a person approves through POST /threads/{id}/responses
    answered = stack.api(api_event("api-respond-approve", thread_id=thread_id))

    # Then the execution resumes, runs the approved deploy once and finishes
    assert answered.status == 202
    finished = stack.wait_for(thread_id, ThreadStatus.DONE)
    approval = next(event for event in finished.events if isinstance(event, Approval))
    assert approval.data.approved and approval.data.by == IAM_CALLER  # the IAM caller, not the body
    assert any(isinstance(event, ToolResult) for event in finished.events)
    assert isinstance(finished.events[-1], Done)
    deploys = httpx.get(f"{stack.deploy_service_url}/deploys").json()["deploys"]
    assert [(d["service"], d["tag"], d["environment"]) for d in deploys] == [
        ("backend", "v1.2.3", "production")
    ]
    assert stack.store.get_wait(thread_id) is None


def test_a_rejection_is_shown_to_the_model_and_nothing_is_deployed(stack: Stack) -> None:
    # Given a thread waiting for approval of a production deploy
    thread_id = _launch_waiting_for_approval(stack)
    stack.script(intent("done_for_now", message="Understood, no deploy today."))

    # When the person rejects it with a reason
    rejected = stack.api(api_event("api-respond-reject", thread_id=thread_id))

    # Then the model sees the rejection, the deploy never runs and the thread ends
    assert rejected.status == 202
    finished = stack.wait_for(thread_id, ThreadStatus.DONE)
    assert [event.type for event in finished.events][-2:] == ["approval", "done"]
    assert "not on a Friday" in stack.model.last_messages[-1]["content"]
    assert httpx.get(f"{stack.deploy_service_url}/deploys").json() == {"deploys": []}


def test_a_response_the_thread_is_not_waiting_for_is_409_and_changes_nothing(stack: Stack) -> None:
    # Given a thread waiting for an approval
    thread_id = _launch_waiting_for_approval(stack)
    before = stack.events(thread_id)

    # When a free-text answer arrives instead
    refused = stack.api(api_event("api-respond-text", thread_id=thread_id))

    # Then it is a conflict, and the thread and its wait are untouched
    assert refused.status == 409
    assert refused.body["error"] == "NotWaiting"
    assert stack.events(thread_id) == before
    assert stack.store.get_wait(thread_id) is not None


def test_the_same_idempotency_key_launches_one_thread(stack: Stack) -> None:
    # Given a launch that went through
    stack.script(LIST_TAGS, DEPLOY_PRODUCTION)
    first = stack.api(api_event("api-launch"))
    stack.wait_for(first.body["thread_id"], ThreadStatus.AWAITING_APPROVAL)

    # When the client retries with the same Idempotency-Key
    again = stack.api(api_event("api-launch"))

    # Then it gets the same thread back, and nothing ran twice
    assert (first.status, again.status) == (202, 202)
    assert again.body["thread_id"] == first.body["thread_id"]
    assert [meta.thread_id for meta in stack.store.list_threads()] == [first.body["thread_id"]]
    assert len(stack.executions()) == 1
    assert len(stack.events(first.body["thread_id"])) == 5


def test_the_same_idempotency_key_with_another_body_is_422_and_launches_nothing(stack: Stack) -> None:
    # Given a launch under a key
    stack.script(LIST_TAGS, DEPLOY_PRODUCTION)
    first = stack.api(api_event("api-launch"))
    stack.wait_for(first.body["thread_id"], ThreadStatus.AWAITING_APPROVAL)

    # When the key is reused for a different request
    reused = stack.api(api_event("api-launch", body={"agent": "deploybot", "message": "something else"}))

    # Then it is refused instead of answered with the first thread
    assert reused.status == 422
    assert len(stack.store.list_threads()) == 1


def test_an_unknown_agent_is_400_and_writes_nothing(stack: Stack) -> None:
    # When a launch names an agent that does not exist
    refused = stack.api(api_event("api-launch-unknown-agent"))

    # Then it is rejected with the reason, and no thread or execution exists
    assert refused.status == 400
    assert "nosuchbot" in refused.body["message"]
    assert stack.store.list_threads() == []
    assert stack.executions() == []


def test_malformed_requests_are_422(stack: Stack) -> None:
    # When the body or the path does not fit the contract
    no_message = stack.api(api_event("api-launch-unknown-agent", body={"agent": "deploybot"}))
    bad_id = stack.api(api_event("api-get", thread_id="not a thread id!"))

    # Then each is rejected by validation, naming the field
    assert no_message.status == 422
    assert ["body", "message"] in [item["loc"] for item in no_message.body["detail"]]
    assert bad_id.status == 422
    assert stack.store.list_threads() == []


def test_an_unknown_thread_is_404(stack: Stack) -> None:
    missing = "0" * 32
    assert stack.api(api_event("api-get", thread_id=missing)).status == 404
    assert stack.api(api_event("api-events", thread_id=missing)).status == 404
    assert stack.api(api_event("api-respond-approve", thread_id=missing)).status == 404


def test_list_shows_launched_threads(stack: Stack) -> None:
    # Given one launched thread
    thread_id = _launch_waiting_for_approval(stack)

    # When the caller lists threads
    listed = stack.api(api_event("api-list"))

    # Then it is there with its agent and channel
    assert listed.status == 200
    assert [(item["thread_id"], item["agent"], item["channel"]) for item in listed.body] == [
        (thread_id, "deploybot", "none")
    ]


def test_a_thread_view_is_one_moment_even_when_an_event_lands_between_its_two_reads(stack: Stack) -> None:
    # Given a thread waiting for approval, read as GET /threads/{id} reads it: the thread first
    thread_id = _launch_waiting_for_approval(stack)
    meta, thread = stack.store.load(thread_id)

    # When a cancel lands before the first page of events is read
    cancel = Cancelled(at=thread.events[-1].at, data=CancelledData(by="ops"))
    stack.store.append(thread_id, [cancel], expected_last_seq=thread.last_seq)
    view = ThreadView.of_thread(meta, thread, EventsPage.read(stack.store, thread_id, after=-1))

    # Then status, last_seq and events all describe the thread as loaded, and the cursor leads on
    # to the cancel rather than the page showing an event the status does not know
    assert view.status is ThreadStatus.AWAITING_APPROVAL
    assert [event["seq"] for event in view.events] == list(range(thread.last_seq + 1))
    assert view.last_seq == view.next_after == thread.last_seq
    newer = EventsPage.read(stack.store, thread_id, after=view.next_after)
    assert [event["type"] for event in newer.events] == ["cancelled"]


def test_get_thread_answers_without_reading_the_payloads_kept_in_s3(
    stack: Stack, payload_bucket: str
) -> None:
    # Given a thread whose first message is large enough to be kept in S3
    text = "Deploy the backend. " + "Context: " + "x" * 40_000
    created_at = datetime(2026, 1, 2, tzinfo=UTC)
    stack.store.create(
        ThreadMeta(thread_id="t-large", agent="deploybot", created_at=created_at),
        [UserMessage(at=created_at, data=UserMessageData(text=text))],
    )
    # ... and the payload unreadable (deleted here), so that any read of it would fail the request
    s3 = boto3.client("s3")
    (stored,) = s3.list_objects_v2(Bucket=payload_bucket)["Contents"]
    s3.delete_object(Bucket=payload_bucket, Key=stored["Key"])

    # When the caller asks for the thread
    got = stack.api(api_event("api-get", thread_id="t-large"))

    # Then it answers from DynamoDB alone: the status, and the message as a pointer to S3
    assert got.status == 200, got.body
    assert (got.body["status"], got.body["last_seq"]) == ("ready", 0)
    assert got.body["events"][0]["payload"]["size_bytes"] > 40_000


def test_a_bad_callback_signature_is_401_and_writes_nothing(stack: Stack) -> None:
    # Given a thread waiting for approval, whose wait has a callback id
    thread_id = _launch_waiting_for_approval(stack)
    callback_id = stack.wait(thread_id).callback_id
    before = stack.events(thread_id)
    payload = {"approved": True, "comment": "forged"}

    # When callbacks arrive signed with the wrong secret, signed long ago, or as the unsigned sample
    forged = stack.api(signed_callback_event(callback_id, payload, secret="not-the-secret"))
    body = webhook.encode(payload)
    stale_headers = webhook.signed_headers(WEBHOOK_SECRET, body, now=time.time() - 3600)
    stale = stack.api(
        api_event("api-callback", callback_id=callback_id, body=body.decode(), headers=stale_headers)
    )
    unsigned_sample = stack.api(api_event("api-callback", callback_id=callback_id))

    # Then all are 401, and the thread and its wait are exactly as before
    assert (forged.status, stale.status, unsigned_sample.status) == (401, 401, 401)
    assert stack.events(thread_id) == before
    assert stack.wait(thread_id).callback_id == callback_id


def test_a_signed_callback_answers_the_wait_and_an_unknown_one_is_404(stack: Stack) -> None:
    # Given a thread waiting for approval
    thread_id = _launch_waiting_for_approval(stack)
    callback_id = stack.wait(thread_id).callback_id

    # When a correctly signed callback names a wait that does not exist
    unknown = stack.api(signed_callback_event("no-such-callback", {"approved": True}))
    # And then one answers the real wait
    answered = stack.api(signed_callback_event(callback_id, {"approved": True, "comment": "by webhook"}))

    # Then the first is 404 and the second resumes the thread to the end
    assert unknown.status == 404
    assert answered.status == 202 and answered.body["thread_id"] == thread_id
    finished = stack.wait_for(thread_id, ThreadStatus.DONE)
    approvals = [event for event in finished.events if isinstance(event, Approval)]
    assert [(a.data.approved, a.data.comment) for a in approvals] == [(True, "by webhook")]


def test_a_webhook_caller_is_notified_signed_and_answers_through_the_callback(stack: Stack) -> None:
    # Given a launch whose replies go to the caller's webhook
    launch = api_event("api-launch-webhook")
    launch["body"] = json.dumps({**json.loads(launch["body"]), "callback_url": stack.receiver.url})
    thread_id = _launch_waiting_for_approval(stack, launch)

    # Then the approval request reached the webhook, signed, naming the callback to answer
    poll_until(stack.receiver.notifications, lambda received: len(received) == 1)
    headers, body = stack.receiver.received[0]
    webhook.verify(WEBHOOK_SECRET, body, headers)
    notification = stack.receiver.notifications()[0]
    assert notification["kind"] == "approval"
    assert notification["callback_id"] == stack.wait(thread_id).callback_id
    assert stack.wait(thread_id).task_token not in body.decode()

    # When the caller answers at that callback, signed
    stack.api(signed_callback_event(notification["callback_id"], {"approved": True}))

    # Then the thread finishes and its final message goes to the same webhook (factor 11)
    stack.wait_for(thread_id, ThreadStatus.DONE)
    received = poll_until(stack.receiver.notifications, lambda received: len(received) == 2)
    assert [(n["kind"], n["text"]) for n in received][1] == (
        "done",
        "Deployed backend v1.2.3 to production (deployment dep-0001).",
    )
    assert received[0]["kind"] == "approval"


def test_cancel_stops_the_thread_and_a_second_cancel_is_409(stack: Stack) -> None:
    # Given a thread waiting for approval
    thread_id = _launch_waiting_for_approval(stack)

    # When it is cancelled, twice
    first = stack.api(api_event("api-cancel", thread_id=thread_id))
    second = stack.api(api_event("api-cancel", thread_id=thread_id))

    # Then the first cancels it and drops its wait (so no answer can resume it); the second conflicts
    assert first.status == 202
    assert second.status == 409
    events = stack.events(thread_id)
    assert [type(event) for event in events] == [
        type(events[0]),
        ToolCall,
        ToolResult,
        ToolCall,
        ApprovalRequested,
        Cancelled,
    ]
    assert stack.store.get_wait(thread_id) is None


def test_an_async_tools_result_arrives_signed_at_the_callback_named_by_its_idempotency_key(
    stack: Stack, tmp_path: Path
) -> None:
    # Given an agent whose migration tool is async: dispatched now, its result posted back later
    service = DeployService()
    stack.script(
        intent("run_migration", tag="v1.2.3"),
        intent("done_for_now", message="Migration finished."),
        registry=AgentRegistry([build_agent(service)]),
        prompts=JinjaPrompts(write_prompts(tmp_path)),
    )
    launch = api_event("api-launch-unknown-agent", body={"agent": AGENT_NAME, "message": "Migrate to v1.2.3"})
    thread_id = stack.api(launch).body["thread_id"]
    stack.wait_for(thread_id, ThreadStatus.AWAITING_CALLBACK)
    # The executor could only hand its idempotency key to the job system that will call back
    [(_name, _arguments, key)] = service.calls

    # When the job system posts the result there, signed
    answered = stack.api(signed_callback_event(key, {"result": {"migrated": True}}))

    # Then the result joins the thread and the model finishes
    assert answered.status == 202
    finished = stack.wait_for(thread_id, ThreadStatus.DONE)
    results = [event for event in finished.events if isinstance(event, ToolResult)]
    assert [result.data.result for result in results] == [{"migrated": True}]
