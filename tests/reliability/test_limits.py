"""Limits: inputs far larger than usual must stay inside AWS's hard limits and the agent's budget.

DynamoDB refuses an item over 400 KB, Step Functions a payload (input, output, state data) over
256 KB, and a model has a context window. Each test pushes something big through the real
handlers and the real state machine, then measures what was written: every item of both tables,
every execution's input, output and history payloads, and the thread as rendered for the model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
import requests  # moto answers the presigned URLs it is sent (httpx would go to the network)

from tests.integration.conftest import REGION
from tests.integration.stack import Stack, api_event, intent
from tests.reliability.conftest import Cases
from tests.reliability.support import (
    DYNAMODB_ITEM_LIMIT,
    STEP_FUNCTIONS_PAYLOAD_LIMIT,
    deploys,
    largest_item,
    mime,
    ses_receipt,
    step_functions_payloads,
    store_raw_email,
)
from tests.support import poll_until
from twelvefactor import runtime
from twelvefactor.adapters.ports import ThreadMeta
from twelvefactor.core.agent import Agent
from twelvefactor.core.events import (
    Event,
    ToolResult,
    ToolResultData,
    UserMessage,
    UserMessageData,
    dump_event,
)
from twelvefactor.core.state import ThreadStatus
from twelvefactor.local import fake_services
from twelvefactor.local.slack_standin import SlackStandIn
from twelvefactor.triggers.email import MAX_TEXT_CHARS

pytestmark = [pytest.mark.scenario("Limits"), pytest.mark.integration]

AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
QUESTION = intent("request_human_input", question="Which tag should I deploy?")


def _deploybot() -> Agent:
    return runtime.current().registry.get("deploybot")


def _assert_within_limits(stack: Stack, tables: Sequence[str]) -> None:
    for table in tables:
        assert largest_item(table) < DYNAMODB_ITEM_LIMIT, table
    payloads = step_functions_payloads(stack.state_machine_arn)
    assert payloads, "no execution to measure"
    where, size = max(payloads, key=lambda found: found[1])
    assert size < STEP_FUNCTIONS_PAYLOAD_LIMIT, where


def _assert_context_bounded(stack: Stack, call: int, events: Sequence[Event]) -> str:
    """The thread as the model saw it on its `call`-th call: within deploybot's budget, and in the
    prompt it got."""
    agent = _deploybot()
    rendered = agent.context.render(tuple(events))
    assert len(rendered) <= agent.context_budget_chars
    assert rendered in stack.model.calls[call][-1]["content"]
    return rendered


@pytest.mark.fixes(
    "An email with a huge Subject or References header (or Message-ID) crashed the Email function: "
    "the header was stored whole with the thread's reply channel and its item passed DynamoDB's "
    "400 KB. The trigger now keeps at most 998 characters of a header and the last 20 references."
)
def test_a_5_mb_email_stays_within_every_limit(
    stack: Stack,
    slack: SlackStandIn,
    threads_table: str,
    idempotency_table: str,
    payload_bucket: str,
    cases: Cases,
) -> None:
    """A 5 MB email with a 100 KB subject and a References header of 12,000 message ids (350 KB): the thread
    starts, the text is cut to the trigger's limit, no DynamoDB item nears 400 KB, no Step Functions
    payload 256 KB, and the context the model sees stays within the agent's budget."""
    # Given a very large email from an allowed sender
    references = " ".join(f"<old-{n:05d}@mail.example.com>" for n in range(12_000))
    body = "\n".join(f"Line {n}: " + "x" * 90 for n in range(52_000))
    _message_id, raw = mime(subject="Deploy " + "please " * 14_000, body=body, references=references)
    assert len(raw) > 5 * 1024 * 1024
    store_raw_email(payload_bucket, "ses-big-0001", raw)
    stack.script(QUESTION)

    # When SES hands it to the Email function
    result = stack.invoke("EmailFunction", ses_receipt("ses-big-0001", subject="Deploy please please"))
    cases.add()

    # Then a thread started with the text cut to the limit, and it ran to its question
    assert result["outcome"] == "launched", result
    thread = stack.wait_for(result["thread_id"], ThreadStatus.AWAITING_HUMAN)
    opening = thread.events[0]
    assert isinstance(opening, UserMessage)
    assert len(opening.data.text) <= MAX_TEXT_CHARS + 100 and "characters left out" in opening.data.text
    # And nothing written came near a service limit, and the model's context kept to the budget
    _assert_within_limits(stack, [threads_table, idempotency_table])
    _assert_context_bounded(stack, 0, thread.events[:1])


@pytest.fixture
def many_tags(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, str]]:
    """The deployment service knows 3,000 tags: list_git_tags answers with about 300 KB of JSON."""
    tags = [
        {"name": f"v3.{n // 100}.{n % 100}", "commit": f"{n:040x}", "date": "2025-02-28T10:00:00Z"}
        for n in range(3_000, 0, -1)
    ]
    monkeypatch.setattr(fake_services, "TAGS", tuple(tags))
    return tags


@pytest.mark.fixes(
    "A tool result larger than the context budget was dropped from the prompt whole: the model saw "
    "neither the call nor its result, called the tool again and looped until the step budget. The "
    "newest event is now cut to fit the budget, with a visible marker, instead of left out."
)
def test_a_300_kb_tool_result_is_offloaded_and_shown_cut_to_the_budget(
    stack: Stack,
    many_tags: list[dict[str, str]],
    threads_table: str,
    idempotency_table: str,
    payload_bucket: str,
    cases: Cases,
) -> None:
    """list_git_tags answers 300 KB: the event goes to S3 behind a pointer, no item or payload nears
    its limit, and the model's next prompt stays within budget yet still shows the (cut) result, so
    it deploys the newest tag instead of listing the tags again."""
    # Given a model that lists the tags, then deploys the newest one it sees, then finishes
    newest = many_tags[0]["name"]
    stack.script(
        intent("list_git_tags"),
        intent("deploy_backend", tag=newest, environment="staging"),
        intent("done_for_now", message=f"Deployed {newest} to staging."),
    )
    launched = stack.api(
        api_event("api-launch", body={"agent": "deploybot", "message": "deploy the newest tag"})
    )
    thread_id = str(launched.body["thread_id"])

    # When the thread runs
    finished = stack.wait_for(thread_id, ThreadStatus.DONE)
    cases.add()

    # Then the result was stored whole in S3, and the item only points at it
    result = finished.events[2]
    assert isinstance(result, ToolResult) and len(result.data.result["tags"]) == 3_000
    assert len(json.dumps(dump_event(result))) > 300_000
    objects = boto3.client("s3", region_name=REGION).list_objects_v2(Bucket=payload_bucket, Prefix="threads/")
    assert [obj["Size"] > 300_000 for obj in objects.get("Contents", [])] == [True]
    _assert_within_limits(stack, [threads_table, idempotency_table])
    # And the model's prompt after the result kept to the budget and showed the result's beginning
    seen = _assert_context_bounded(stack, 1, finished.events[:3])
    assert "<list_git_tags_result>" in seen and newest in seen
    assert [d["tag"] for d in deploys(stack.deploy_service_url)] == [newest]


def _long_thread(threads_table: str, thread_id: str, length: int) -> None:
    """A thread of `length` events, written as the store lays them out (see dynamodb_store): the
    first by the store itself, the rest in bulk, since in-process moto copies the whole table on
    every transaction and 50 appends of 99 events would take minutes."""
    runtime.current().store.create(
        ThreadMeta(thread_id=thread_id, agent="deploybot", created_at=AT),
        [UserMessage(at=AT, data=UserMessageData(text="Deploy the backend, please."))],
    )
    table = boto3.resource("dynamodb", region_name=REGION).Table(threads_table)
    with table.batch_writer() as batch:
        for seq in range(1, length):
            event = UserMessage(at=AT, data=UserMessageData(text=f"Message {seq}: is it deployed yet?"))
            batch.put_item(
                Item={
                    "pk": f"THREAD#{thread_id}",
                    "sk": f"EVENT#{seq:010d}",
                    "type": event.type,
                    "event": json.dumps(dump_event(event), separators=(",", ":")),
                }
            )


def test_a_5000_event_thread_steps_within_every_limit(
    stack: Stack, threads_table: str, idempotency_table: str, cases: Cases
) -> None:
    """A thread of 5,000 events gets one more step from the real state machine: the step is written,
    no item or payload grows with the thread, and the model sees the first message, an elision
    marker and the latest events, within the budget."""
    # Given a thread of 5,000 events and a model that asks a question
    stack.script(QUESTION)
    _long_thread(threads_table, "long-thread", 5_000)

    # When its execution runs
    runtime.current().workflow.start("long-thread", 4_999)
    # (polled on the wait item: loading 5,000 events in moto takes seconds, reading one item does not)
    poll_until(lambda: stack.store.get_wait("long-thread"), lambda wait: wait is not None, timeout=60)
    thread = stack.thread("long-thread")
    cases.add(5_000)

    # Then one step was added, and nothing written grew with the thread's length
    assert len(thread.events) == 5_001 and stack.executions()[0]["status"] == "RUNNING"
    _assert_within_limits(stack, [threads_table, idempotency_table])
    # And the model saw the opening request, the marker and the newest messages, within budget
    seen = _assert_context_bounded(stack, 0, thread.events[:5_000])
    assert seen.startswith("<user_message>Deploy the backend, please.</user_message>")
    assert "earlier events left out to fit the context budget</elided>" in seen
    assert "Message 4999: is it deployed yet?" in seen


LAMBDA_RESPONSE_LIMIT = 6 * 1024 * 1024


def _read_whole_thread(stack: Stack, thread_id: str) -> tuple[list[dict[str, Any]], list[int]]:
    """What a client does: GET the thread, follow `next_after` through /events, and fetch every
    pointed-at event from its presigned URL. Returns the events read and each response's size."""
    sizes: list[int] = []

    def call(event: dict[str, Any]) -> dict[str, Any]:
        result = stack.invoke("ApiFunction", event)
        assert result["statusCode"] == 200, result
        sizes.append(len(json.dumps(result).encode()))  # what Lambda returns: the whole proxy response
        body: dict[str, Any] = json.loads(result["body"])
        return body

    page = call(api_event("api-get", thread_id=thread_id))
    read = list(page["events"])
    while page["next_after"] is not None:
        page = call(api_event("api-events", thread_id=thread_id, query={"after": str(page["next_after"])}))
        read += page["events"]
    return [_fetched_if_pointer(item) for item in read], sizes


def _fetched_if_pointer(item: dict[str, Any]) -> dict[str, Any]:
    if "data" in item:
        return item
    fetched = requests.get(item["payload"]["url"], timeout=30)
    assert fetched.status_code == 200
    assert len(fetched.content) == item["payload"]["size_bytes"]
    assert hashlib.sha256(fetched.content).hexdigest() == item["payload"]["sha256"]
    return {"seq": item["seq"], **fetched.json()}


@pytest.mark.fixes(
    "GET /threads/{id} (and /events) answered with every event, offloaded payloads read back from S3 "
    "and inlined: a thread with a few large tool results passed Lambda's 6 MB response limit and API "
    "Gateway answered 502. Pages are now cut at a count and a byte budget with a next_after cursor, "
    "and an event stored in S3 is answered as a pointer with a presigned URL."
)
def test_reading_a_thread_with_large_results_stays_within_lambdas_response_limit(
    stack: Stack, cases: Cases
) -> None:
    """A thread holding 21 tool results of 300 KB each (each offloaded to S3) and 60 of 26 KB (kept
    inline): every answer of the Api function fits in Lambda's 6 MB synchronous response limit, and a
    client following the cursor and the pointers reads the whole thread."""
    # Given a thread with 21 large results and 60 medium ones in it
    stack.script()
    tags = {"tags": [{"name": f"v{n}", "commit": f"{n:0300x}"} for n in range(1_000)]}
    medium = {"tags": [{"name": f"v{n}", "commit": f"{n:0300x}"} for n in range(80)]}
    events: list[Event] = [UserMessage(at=AT, data=UserMessageData(text="list the tags, again and again"))]
    events += [
        ToolResult(at=AT, data=ToolResultData(call_id=f"call-{n}", intent="list_git_tags", result=tags))
        for n in range(21)
    ]
    events += [
        ToolResult(at=AT, data=ToolResultData(call_id=f"call-m{n}", intent="list_git_tags", result=medium))
        for n in range(60)
    ]
    stack.store.create(ThreadMeta(thread_id="heavy", agent="deploybot", created_at=AT), events)
    assert sum(len(json.dumps(dump_event(event))) for event in events) > LAMBDA_RESPONSE_LIMIT

    # When a caller reads all of it
    read, sizes = _read_whole_thread(stack, "heavy")
    cases.add()

    # Then every answer fits in a Lambda response, the thread took more than one page,
    assert max(sizes) < LAMBDA_RESPONSE_LIMIT
    assert len(sizes) > 1
    # and the client got every event, whole and in order
    assert [item["seq"] for item in read] == list(range(len(events)))
    assert [{k: v for k, v in item.items() if k != "seq"} for item in read] == [
        dump_event(event) for event in stack.thread("heavy").events
    ]
