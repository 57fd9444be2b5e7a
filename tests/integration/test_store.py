"""The DynamoDB thread store against moto: appends, contention, offloading, waits, links, retention."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import requests  # moto answers the presigned URLs it is sent
from botocore.awsrequest import AWSResponse

from tests.integration.conftest import REGION
from tests.moto_requests import atomic_requests_fixture  # noqa: F401 - fixture
from tests.unit.agent_fixtures import (
    AGENT_NAME,
    DeployService,
    StepClock,
    build_agent,
    intent_json,
    write_prompts,
)
from twelvefactor import runtime
from twelvefactor.adapters.dynamodb_store import OUTLINE_MAX_BYTES, AwsStorageError, DynamoThreadStore
from twelvefactor.adapters.ports import (
    ConcurrentAppend,
    OffloadedEvent,
    PendingWait,
    StorageError,
    ThreadExists,
    ThreadMeta,
)
from twelvefactor.core import replies, state
from twelvefactor.core.channels import SlackRef
from twelvefactor.core.errors import ThreadNotFound
from twelvefactor.core.events import (
    Approval,
    ApprovalData,
    ApprovalRequested,
    ApprovalRequestedData,
    Cancelled,
    CancelledData,
    Done,
    DoneData,
    Event,
    Thread,
    TokenUsage,
    ToolCall,
    ToolCallData,
    ToolResult,
    ToolResultData,
    UserMessage,
    UserMessageData,
    parse_event,
)
from twelvefactor.core.ports import Ports
from twelvefactor.core.prompts import JinjaPrompts
from twelvefactor.core.reducer import run_until_paused
from twelvefactor.local.scripted import ScriptedModel
from twelvefactor.settings import StoreSettings

pytestmark = pytest.mark.integration

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TTL_DAYS = 30
DYNAMODB_ITEM_LIMIT = 400 * 1024


def message(text: str, at: datetime = T0) -> UserMessage:
    return UserMessage(at=at, data=UserMessageData(text=text))


def meta(thread_id: str, created_at: datetime = T0, agent: str = AGENT_NAME) -> ThreadMeta:
    return ThreadMeta(thread_id=thread_id, agent=agent, created_at=created_at)


@pytest.fixture
def settings(threads_table: str, payload_bucket: str) -> StoreSettings:
    return StoreSettings(
        THREADS_TABLE=threads_table,
        PAYLOAD_BUCKET=payload_bucket,
        OFFLOAD_THRESHOLD_BYTES=32_000,
        FINISHED_THREAD_TTL_DAYS=TTL_DAYS,
    )


def make_store(settings: StoreSettings) -> DynamoThreadStore:
    # A session per store: boto3 resources must not be shared between threads.
    session = boto3.session.Session(region_name=REGION)
    table = session.resource("dynamodb").Table(settings.threads_table)
    return DynamoThreadStore(table, settings.payload_bucket, session.client("s3"), settings)


@pytest.fixture
def store(settings: StoreSettings) -> DynamoThreadStore:
    return make_store(settings)


@pytest.fixture
def raw_items(threads_table: str) -> Any:
    """Every item of the table as DynamoDB stores it (wire format), to check what really got written."""
    client = boto3.client("dynamodb", region_name=REGION)

    def scan() -> list[dict[str, Any]]:
        pages = client.get_paginator("scan").paginate(TableName=threads_table)
        return [item for page in pages for item in page["Items"]]

    return scan


@pytest.fixture
def payload_keys(payload_bucket: str) -> Any:
    s3 = boto3.client("s3", region_name=REGION)

    def list_keys() -> list[str]:
        return [obj["Key"] for obj in s3.list_objects_v2(Bucket=payload_bucket).get("Contents", [])]

    return list_keys


class RequestCounter:
    """Counts the DynamoDB operations a client sends, through botocore's own event hooks."""

    def __init__(self, store_client: Any) -> None:
        self.calls: Counter[str] = Counter()
        store_client.meta.events.register("before-call.dynamodb", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self.calls[model.name] += 1

    def take(self) -> Counter[str]:
        calls, self.calls = self.calls, Counter()
        return calls


# --- create and load --------------------------------------------------------------------------


def test_create_then_load_returns_meta_channel_and_events_in_order(store: DynamoThreadStore) -> None:
    # Given a thread created with two events and a Slack channel
    channel = SlackRef(team_id="T1", channel_id="C1", thread_ts="1700000000.000100", user_id="U1")
    first, second = message("deploy v1.2.3"), message("to staging", at=T0 + timedelta(seconds=1))
    store.create(meta("t-1").model_copy(update={"channel": channel}), [first, second])

    # When it is loaded
    loaded_meta, thread = store.load("t-1")

    # Then everything comes back as written, and last_seq points at the second event
    assert thread == Thread(id="t-1", agent=AGENT_NAME, events=(first, second))
    assert thread.last_seq == 1
    assert loaded_meta == ThreadMeta(thread_id="t-1", agent=AGENT_NAME, created_at=T0, channel=channel)


def test_create_refuses_an_existing_thread_and_changes_nothing(store: DynamoThreadStore) -> None:
    # Given an existing thread
    original = message("original")
    store.create(meta("t-dup"), [original])

    # When another create uses the same id
    with pytest.raises(ThreadExists):
        store.create(meta("t-dup", agent="someone_else"), [message("impostor"), message("second")])

    # Then the thread is exactly what the first create wrote
    loaded_meta, thread = store.load("t-dup")
    assert loaded_meta.agent == AGENT_NAME
    assert thread.events == (original,)


def test_unknown_thread_raises_thread_not_found_everywhere(store: DynamoThreadStore, raw_items: Any) -> None:
    # Given an empty table; when any per-thread operation names a thread that does not exist, then
    # each raises ThreadNotFound and writes nothing
    calls = [
        lambda: store.load("nope"),
        lambda: store.append("nope", [message("hi")]),
        lambda: store.append("nope", []),
        lambda: store.events_after("nope", -1),
        lambda: store.set_channel("nope", SlackRef(team_id="T", channel_id="C", thread_ts="1.2")),
        lambda: store.link("SLACK#T#C#1.2", "nope"),
    ]
    for call in calls:
        with pytest.raises(ThreadNotFound):
            call()
    assert raw_items() == []


def test_aws_failures_become_storage_errors_carrying_the_aws_code(settings: StoreSettings) -> None:
    # Given a store pointed at a table that does not exist (a misconfigured stack, say)
    store = make_store(settings.model_copy(update={"threads_table": "no-such-table"}))

    # When it is used, then the caller gets a StorageError with DynamoDB's own error code
    with pytest.raises(AwsStorageError) as raised:
        store.load("t-any")
    assert isinstance(raised.value, StorageError)
    assert raised.value.code == "ResourceNotFoundException"


# --- appends ----------------------------------------------------------------------------------


def test_append_assigns_consecutive_sequence_numbers(store: DynamoThreadStore) -> None:
    # Given a thread with one event
    store.create(meta("t-seq"), [message("m0")])

    # When two moves are appended, one with and one without an expectation
    assert store.append("t-seq", [message("m1"), message("m2")], expected_last_seq=0) == 2
    assert store.append("t-seq", [message("m3")]) == 3

    # Then the events come back in order, and events_after returns only the newer ones with their seq
    _, thread = store.load("t-seq")
    assert [event.data.text for event in thread.events if isinstance(event, UserMessage)] == [
        "m0",
        "m1",
        "m2",
        "m3",
    ]
    assert thread.last_seq == 3
    after = store.events_after("t-seq", 1)
    assert [(seq, event.data.text) for seq, event in after if isinstance(event, UserMessage)] == [
        (2, "m2"),
        (3, "m3"),
    ]
    assert store.events_after("t-seq", 3) == []


@pytest.mark.parametrize(
    "move_size", [1, 2], ids=["one-event move (PutItem)", "two-event move (transaction)"]
)
def test_stale_expected_last_seq_raises_concurrent_append_and_writes_nothing(
    store: DynamoThreadStore, raw_items: Any, payload_keys: Any, move_size: int
) -> None:
    # Given a thread that another writer moved on to last_seq 1 after we read it at 0
    store.create(meta("t-stale"), [message("m0")])
    store.append("t-stale", [message("theirs")], expected_last_seq=0)
    before = sorted(raw_items(), key=lambda item: item["sk"]["S"])

    # When we append our move, including a payload big enough to be offloaded, expecting last_seq 0
    big = ToolResult(
        at=T0, data=ToolResultData(call_id="call-1", intent="list_git_tags", result="x" * 100_000)
    )
    with pytest.raises(ConcurrentAppend) as raised:
        store.append("t-stale", [message("ours"), big][-move_size:], expected_last_seq=0)

    # Then nothing of the move is in the table or in the bucket, and the error names the stale view
    assert sorted(raw_items(), key=lambda item: item["sk"]["S"]) == before
    assert payload_keys() == []
    assert "moved past the expected last_seq 0" in str(raised.value)


def test_a_retried_put_that_had_committed_is_success_and_keeps_its_payload(
    store: DynamoThreadStore, payload_keys: Any
) -> None:
    # Given a one-event move with an offloaded payload, already written once: what botocore's retry
    # of a PutItem whose answer was lost (a timeout, a 500) sends again
    store.create(meta("t-retry"), [message("go")])
    big = ToolResult(
        at=T0, data=ToolResultData(call_id="call-1", intent="list_git_tags", result="r" * 40_000)
    )
    assert store.append("t-retry", [big], expected_last_seq=0) == 1

    # When the same put arrives again and finds its own event holding the slot
    assert store.append("t-retry", [big], expected_last_seq=0) == 1

    # Then it succeeds, the event is there once, and its payload was not deleted as a loser's
    _, thread = store.load("t-retry")
    assert thread.events[1:] == (big,)
    assert len(payload_keys()) == 1


@pytest.mark.parametrize("conflicts", [1, 99], ids=["once, then through", "every time"])
def test_a_put_refused_for_another_writers_transaction_in_flight_is_retried_then_stale(
    store: DynamoThreadStore, raw_items: Any, payload_keys: Any, conflicts: int
) -> None:
    # Given a one-event move whose PutItem DynamoDB refuses with TransactionConflict, because
    # another writer's transaction holds the item (moto never answers this: it is injected here)
    store.create(meta("t-conflict"), [message("go")])
    refused = TransactionConflictAnswers(store, conflicts)
    big = ToolResult(
        at=T0, data=ToolResultData(call_id="call-1", intent="list_git_tags", result="c" * 40_000)
    )
    before = raw_items()

    # When it is appended
    if conflicts == 1:
        store.append("t-conflict", [big], expected_last_seq=0)
        # Then a conflict that clears is retried and the move lands
        assert refused.answered == 1
        assert store.load("t-conflict")[1].events[1:] == (big,)
    else:
        # Then one that does not clears is a lost race the caller reloads after (not a storage
        # failure), and the move left nothing behind: no item, no payload
        with pytest.raises(ConcurrentAppend):
            store.append("t-conflict", [big], expected_last_seq=0)
        assert raw_items() == before
        assert payload_keys() == []


class TransactionConflictAnswers:
    """Answers the store's next `count` PutItem requests as DynamoDB does when a transaction holds
    the item, before they reach moto (botocore's before-call hook may answer in the service's place)."""

    def __init__(self, store: DynamoThreadStore, count: int) -> None:
        self.remaining, self.answered = count, 0
        store._client.meta.events.register("before-call.dynamodb.PutItem", self._answer)

    def _answer(self, **_: Any) -> tuple[Any, dict[str, Any]] | None:
        if self.remaining == 0:
            return None
        self.remaining -= 1
        self.answered += 1
        error = {"Code": "TransactionConflictException", "Message": "Transaction is ongoing for the item"}
        return AWSResponse("https://dynamodb", 400, {}, None), {"Error": error, "ResponseMetadata": {}}


def test_twenty_concurrent_appenders_lose_and_duplicate_nothing(
    settings: StoreSettings, atomic_requests: None
) -> None:
    # Given one thread and 20 writers, each with its own store, released at the same moment
    writers, moves_per_writer = 20, 2
    make_store(settings).create(meta("t-busy"), [message("start")])
    barrier = threading.Barrier(writers)
    failures: list[BaseException] = []

    def write(writer: int) -> None:
        store = make_store(settings)
        barrier.wait()
        try:
            for move in range(moves_per_writer):
                # A move of two events: they must land together and next to each other.
                store.append("t-busy", [message(f"w{writer}-m{move}-a"), message(f"w{writer}-m{move}-b")])
        except BaseException as error:
            failures.append(error)

    # When they all append without an expectation, contending for the same sequence numbers
    workers = [threading.Thread(target=write, args=(writer,)) for writer in range(writers)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    # Then every event is there exactly once, the sequence has no gap, and each move is contiguous
    assert failures == []
    _, thread = make_store(settings).load("t-busy")
    texts = [event.data.text for event in thread.events if isinstance(event, UserMessage)]
    expected = {f"w{w}-m{m}-{part}" for w in range(writers) for m in range(moves_per_writer) for part in "ab"}
    assert len(texts) == len(thread.events) == 1 + len(expected)
    assert sorted(texts[1:]) == sorted(expected)
    assert [seq for seq, _ in make_store(settings).events_after("t-busy", -1)] == list(range(len(texts)))
    position = {text: index for index, text in enumerate(texts)}
    for w in range(writers):
        for m in range(moves_per_writer):
            assert position[f"w{w}-m{m}-b"] == position[f"w{w}-m{m}-a"] + 1
            if m:
                assert position[f"w{w}-m{m}-a"] > position[f"w{w}-m{m - 1}-b"]


def test_a_reducer_move_costs_one_request_whatever_the_thread_length(
    store: DynamoThreadStore, tmp_path: Path
) -> None:
    # Given a long thread (200 events) and an agent scripted to list tags, then ask for approval
    service = DeployService()
    agent = build_agent(service)
    model = ScriptedModel(
        [intent_json("list_git_tags"), intent_json("deploy_backend", tag="v1.2.3", environment="production")]
    )
    ports = Ports(llm=model, prompts=JinjaPrompts(write_prompts(tmp_path)), clock=StepClock())
    history: list[Event] = [message(f"old {n}") for n in range(200)]
    store.create(meta("t-long"), history[:99])
    store.append("t-long", history[99:198])
    store.append("t-long", [*history[198:], *replies.launch("deploy", at=T0, channel="api")])
    counter = RequestCounter(store._client)

    # When the reducer Lambda's work is done: one load, then run until paused, persisting each move
    _, thread = store.load("t-long")
    after_load = counter.take()
    moves: list[Counter[str]] = []

    def persist(before: Thread, new_events: list[Event]) -> None:
        store.append(before.id, new_events, expected_last_seq=len(before.events) - 1)
        moves.append(counter.take())

    paused = run_until_paused(agent, thread, ports, persist)

    # Then loading is one query, and each of the three moves (call, result, call + approval request)
    # is exactly one write, although the thread holds 200 events: a one-event move is a plain
    # conditional PutItem (one write unit), only the two-event move needs a transaction
    assert after_load == Counter({"Query": 1})
    assert moves == [Counter({"PutItem": 1}), Counter({"PutItem": 1}), Counter({"TransactWriteItems": 1})]
    assert state.status(paused.events) is state.ThreadStatus.AWAITING_APPROVAL
    assert store.load("t-long")[1] == paused


# --- payload offloading -----------------------------------------------------------------------


def test_a_300_kb_tool_result_goes_to_s3_and_comes_back_intact(
    store: DynamoThreadStore, raw_items: Any, payload_keys: Any
) -> None:
    # Given a tool result of about 300 KB (non-ASCII included, to count bytes rather than characters)
    rows = [{"line": n, "text": "log line ✓ " + "y" * 280} for n in range(1_000)]
    result = ToolResult(at=T0, data=ToolResultData(call_id="call-1", intent="list_git_tags", result=rows))
    assert len(json.dumps(rows, ensure_ascii=False).encode()) > 300_000
    store.create(meta("t-big"), [message("fetch the logs")])

    # When it is appended
    store.append("t-big", [result, message("thanks")])

    # Then it loads back equal, its body lives in S3 under the thread's prefix, and no item is large
    _, thread = store.load("t-big")
    assert thread.events[1] == result
    assert [key.split("/")[:2] for key in payload_keys()] == [["threads", "t-big"]]
    sizes = {item["sk"]["S"]: len(json.dumps(item).encode()) for item in raw_items()}
    assert max(sizes.values()) < DYNAMODB_ITEM_LIMIT
    assert sizes["EVENT#0000000001"] < OUTLINE_MAX_BYTES + 1_000  # the pointer and the outline


def test_an_outline_load_reads_no_payload_yet_keeps_status_sequence_and_tokens(
    store: DynamoThreadStore, payload_bucket: str, payload_keys: Any
) -> None:
    # Given a thread whose large events live in S3: a call with huge arguments (and the model's
    # usage) and its huge result, which is what settles the call
    usage = TokenUsage(prompt_tokens=1_200, completion_tokens=80)
    big_call = ToolCall(
        at=T0,
        usage=usage,
        data=ToolCallData(call_id="call-1", intent="list_git_tags", arguments={"filter": "x" * 60_000}),
    )
    rows = [{"tag": f"v1.{n}", "notes": "z" * 500} for n in range(200)]
    big_result = ToolResult(at=T0, data=ToolResultData(call_id="call-1", intent="list_git_tags", result=rows))
    store.create(meta("t-outline"), [message("which tags?")])
    store.append("t-outline", [big_call], expected_last_seq=0)
    store.append("t-outline", [big_result], expected_last_seq=1)
    _, whole = store.load("t-outline")
    assert len(payload_keys()) == 2

    # When the payloads are gone from the bucket, so that reading any of them would fail
    s3 = boto3.client("s3", region_name=REGION)
    for key in payload_keys():
        s3.delete_object(Bucket=payload_bucket, Key=key)
    with pytest.raises(StorageError):
        store.load("t-outline")
    _, outline = store.load_outline("t-outline")

    # Then the outline still says what the whole thread says: the call settled, its tokens, its length
    assert state.status(outline.events) is state.status(whole.events) is state.ThreadStatus.READY
    assert state.total_tokens(outline.events) == state.total_tokens(whole.events) == 1_280
    assert outline.last_seq == whole.last_seq == 2
    assert [event.id for event in outline.events] == [event.id for event in whole.events]


class _BetweenReducerAndNotify:
    """A workflow whose execution of the thread runs and has not paused yet: nothing is resumed."""

    def running(self, thread_id: str) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the answer must leave the execution to Notify, not call {name}")


def test_a_persons_answer_lands_without_reading_the_payloads_kept_in_s3(
    store: DynamoThreadStore, payload_bucket: str, payload_keys: Any
) -> None:
    # Given a thread waiting for approval of a call whose arguments are large enough to be kept in S3
    arguments = {"tag": "v1.2.3", "environment": "production", "notes": "n" * 60_000}
    big_call = ToolCall(
        at=T0, data=ToolCallData(call_id="call-7", intent="deploy_backend", arguments=arguments)
    )
    asked = ApprovalRequested(
        at=T0, data=ApprovalRequestedData(call_id="call-7", intent="deploy_backend", arguments=arguments)
    )
    store.create(meta("t-answer"), [message("deploy it"), big_call, asked])
    # ... and those payloads unreadable (deleted here), so that reading any of them would fail
    s3 = boto3.client("s3", region_name=REGION)
    for key in payload_keys():
        s3.delete_object(Bucket=payload_bucket, Key=key)

    # When a person approves through the runtime, as the API, Slack and email triggers do (with no
    # wait saved yet: its execution is between the reducer and Notify, which resumes it)
    resumed = runtime.Runtime(store=store, workflow=_BetweenReducerAndNotify()).resume(
        "t-answer", replies.ApprovalReply(approved=True, by="alice@example.com")
    )

    # Then the approval lands for that call, decided from the thread's outline alone, and the
    # approved call is next to run
    assert resumed.status is state.ThreadStatus.TOOL_PENDING
    _, thread = store.load_outline("t-answer")
    assert thread.events[-1] == Approval(
        id=thread.events[-1].id,
        at=thread.events[-1].at,
        data=ApprovalData(call_id="call-7", approved=True, by="alice@example.com"),
    )


def test_payload_links_of_the_runtimes_store_are_sigv4_on_the_buckets_own_host(
    monkeypatch: pytest.MonkeyPatch, settings: StoreSettings
) -> None:
    # Given the store the functions use (built by the runtime), holding an event kept in S3
    monkeypatch.setenv("THREADS_TABLE", settings.threads_table)
    monkeypatch.setenv("PAYLOAD_BUCKET", settings.payload_bucket)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    runtime.reset()
    try:
        store = runtime.current().store
        big = ToolResult(
            at=T0, data=ToolResultData(call_id="call-1", intent="list_git_tags", result="z" * 300_000)
        )
        store.create(meta("t-link"), [message("fetch the logs"), big])

        # When a page points at it
        [_, (_, pointer)] = store.events_page("t-link", -1, limit=10, max_bytes=10_000_000).items
    finally:
        runtime.reset()

    # Then the link is signed with SigV4 (the old default, SigV2, is refused by newer regions and
    # KMS-encrypted objects) and names the bucket's own host rather than a path on a global one
    assert isinstance(pointer, OffloadedEvent)
    link = urlsplit(pointer.payload.url)
    assert parse_qs(link.query)["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert link.hostname is not None and link.hostname.startswith(f"{settings.payload_bucket}.s3.")


def test_a_page_of_events_points_at_payloads_in_s3_and_stops_at_its_limits(store: DynamoThreadStore) -> None:
    # Given a thread of a message, a 300 KB result (kept in S3), and 30 results of 20 KB (kept inline)
    big = ToolResult(
        at=T0, data=ToolResultData(call_id="call-1", intent="list_git_tags", result="z" * 300_000)
    )
    inline = [
        ToolResult(
            at=T0, data=ToolResultData(call_id=f"call-{n}", intent="list_git_tags", result="y" * 20_000)
        )
        for n in range(2, 32)
    ]
    store.create(meta("t-page"), [message("fetch the logs"), big, *inline])

    # When it is read a page at a time, with a count limit and a byte budget of 100 KB
    first = store.events_page("t-page", -1, limit=3, max_bytes=10_000_000)
    second = store.events_page("t-page", 2, limit=100, max_bytes=100_000)
    last = store.events_page("t-page", 31, limit=100, max_bytes=100_000)

    # Then the first page stops at its count, and points at the S3 copy instead of reading it
    assert [seq for seq, _ in first.items] == [0, 1, 2] and first.more
    _, pointer = first.items[1]
    assert isinstance(pointer, OffloadedEvent) and pointer.type == "tool_result"
    body = requests.get(pointer.payload.url, timeout=30).content
    assert (
        len(body) == pointer.payload.size_bytes and hashlib.sha256(body).hexdigest() == pointer.payload.sha256
    )
    assert parse_event(body) == big
    # And the second stops within its byte budget, the last one finds nothing more
    assert [seq for seq, _ in second.items] == [3, 4, 5, 6] and second.more
    assert second.items[0][1] == inline[1]
    assert last.items == [] and not last.more
    # And an unknown thread is not an empty page
    with pytest.raises(ThreadNotFound):
        store.events_page("t-none", -1, limit=100, max_bytes=100_000)


def test_a_tampered_payload_is_reported_not_returned(
    store: DynamoThreadStore, payload_bucket: str, payload_keys: Any
) -> None:
    # Given an offloaded event whose S3 object was overwritten behind the store's back
    big = ToolResult(
        at=T0, data=ToolResultData(call_id="call-1", intent="list_git_tags", result="z" * 50_000)
    )
    store.create(meta("t-tamper"), [message("go"), big])
    (key,) = payload_keys()
    boto3.client("s3", region_name=REGION).put_object(Bucket=payload_bucket, Key=key, Body=b"{}")

    # When the thread is loaded, then the mismatch is a StorageError naming the object
    with pytest.raises(StorageError, match=key):
        store.load("t-tamper")


# --- waits, links, listing --------------------------------------------------------------------


def test_wait_is_saved_found_by_callback_and_cleared(store: DynamoThreadStore) -> None:
    # Given a thread paused for an approval
    store.create(meta("t-wait"), [message("deploy")])
    wait = PendingWait(
        thread_id="t-wait", task_token="token-abc", callback_id="cb-123", kind="approval", deadline=T0
    )

    # When the wait is saved, then it is found by thread and by callback id, and only by its own id
    store.save_wait(wait)
    assert store.get_wait("t-wait") == wait
    assert store.find_wait_by_callback("cb-123") == wait
    assert store.find_wait_by_callback("cb-other") is None

    # When a newer wait replaces it, then the old callback id no longer finds anything
    newer = wait.model_copy(update={"callback_id": "cb-456", "task_token": "token-def"})
    store.save_wait(newer)
    assert store.find_wait_by_callback("cb-123") is None
    assert store.find_wait_by_callback("cb-456") == newer

    # When it is cleared, then the clear hands back the wait it took (once: of two triggers clearing
    # it, one gets it), neither lookup finds it and the thread itself is untouched
    assert store.clear_wait("t-wait") == newer
    assert store.clear_wait("t-wait") is None
    assert store.get_wait("t-wait") is None
    assert store.find_wait_by_callback("cb-456") is None
    assert len(store.load("t-wait")[1].events) == 1


def test_a_wait_is_never_part_of_the_loaded_thread(store: DynamoThreadStore) -> None:
    # Given a thread with a pending wait holding a task token
    store.create(meta("t-secret"), [message("deploy")])
    store.save_wait(
        PendingWait(
            thread_id="t-secret", task_token="SECRET-TOKEN", callback_id="cb", kind="question", deadline=T0
        )
    )

    # When the thread is loaded (what the prompt is rendered from), then the token is nowhere in it
    loaded_meta, thread = store.load("t-secret")
    assert "SECRET-TOKEN" not in thread.model_dump_json() + loaded_meta.model_dump_json()


def test_links_map_a_conversation_to_one_thread(store: DynamoThreadStore) -> None:
    # Given two threads, and a Slack conversation linked to the first one
    store.create(meta("t-a"), [message("a")])
    store.create(meta("t-b"), [message("b")])
    slack = SlackRef(team_id="T1", channel_id="C1", thread_ts="1700000000.000100")
    store.link(slack.correlation_key, "t-a")
    store.link("EMAIL#<abc@example.com>", "t-a")

    # When the same conversation is linked again to the same thread, that is fine; to another, refused
    store.link(slack.correlation_key, "t-a")
    with pytest.raises(StorageError, match="t-a"):
        store.link(slack.correlation_key, "t-b")

    # Then both keys find the first thread, and an unknown key finds nothing
    assert store.find_linked(slack.correlation_key) == "t-a"
    assert store.find_linked("EMAIL#<abc@example.com>") == "t-a"
    assert store.find_linked("EMAIL#<unknown@example.com>") is None


def test_set_channel_is_returned_by_load(store: DynamoThreadStore) -> None:
    # Given a thread without a channel; when its channel is set, then load returns it
    store.create(meta("t-ch"), [message("hi")])
    channel = SlackRef(team_id="T", channel_id="C", thread_ts="1.5")
    store.set_channel("t-ch", channel)
    assert store.load("t-ch")[0].channel == channel


def test_list_threads_is_newest_first_and_limited(store: DynamoThreadStore) -> None:
    # Given three threads created an hour apart, not in creation order
    for thread_id, hours in [("t-mid", 1), ("t-old", 0), ("t-new", 2)]:
        store.create(meta(thread_id, created_at=T0 + timedelta(hours=hours)), [message(thread_id)])

    # When they are listed, then the newest come first, and the limit holds
    assert [m.thread_id for m in store.list_threads()] == ["t-new", "t-mid", "t-old"]
    assert [m.thread_id for m in store.list_threads(limit=2)] == ["t-new", "t-mid"]


# --- retention --------------------------------------------------------------------------------


def test_ttl_is_set_when_the_thread_ends_and_removed_when_it_is_reopened(store: DynamoThreadStore) -> None:
    # Given a running thread: no expiry
    store.create(meta("t-ttl"), [message("deploy")])
    assert "expires_at" not in meta_item(store, "t-ttl")

    # When it ends with done_for_now (a one-event move, as the reducer writes it), then META
    # expires TTL_DAYS after the final event
    done_at = T0 + timedelta(minutes=5)
    store.append("t-ttl", [Done(at=done_at, data=DoneData(message="deployed"))], expected_last_seq=0)
    assert int(meta_item(store, "t-ttl")["expires_at"]) == int(
        (done_at + timedelta(days=TTL_DAYS)).timestamp()
    )

    # When a person follows up on the done thread, then it no longer expires
    store.append(
        "t-ttl", [message("and to production?", at=done_at + timedelta(hours=1))], expected_last_seq=1
    )
    assert "expires_at" not in meta_item(store, "t-ttl")

    # When it is cancelled, then it expires again, counted from the cancellation
    cancelled_at = done_at + timedelta(hours=2)
    store.append("t-ttl", [Cancelled(at=cancelled_at, data=CancelledData(by="ops"))])
    assert int(meta_item(store, "t-ttl")["expires_at"]) == int(
        (cancelled_at + timedelta(days=TTL_DAYS)).timestamp()
    )


def test_an_append_refuses_a_thread_whose_meta_the_sweep_removed(
    store: DynamoThreadStore, raw_items: Any
) -> None:
    # Given a finished thread whose META the TTL sweep deleted, before the janitor purged the rest
    store.create(meta("t-swept"), [message("go")])
    store.append("t-swept", [Done(at=T0, data=DoneData(message="ok"))], expected_last_seq=0)
    store._table.delete_item(Key={"pk": "THREAD#t-swept", "sk": "META"})
    before = raw_items()

    # When a writer that has not loaded the thread appends an event that leaves META alone
    late = ToolResult(at=T0, data=ToolResultData(call_id="call-1", intent="list_git_tags", result="late"))
    with pytest.raises(ThreadNotFound):
        store.append("t-swept", [late])

    # Then nothing was written: no event outlives its thread's purge
    assert raw_items() == before


def test_purge_removes_every_trace_of_a_thread(
    store: DynamoThreadStore, raw_items: Any, payload_keys: Any
) -> None:
    # Given a finished thread with an offloaded payload, a wait and a link, next to another thread
    store.create(meta("t-gone"), [message("go")])
    big = ToolResult(
        at=T0, data=ToolResultData(call_id="call-1", intent="list_git_tags", result="q" * 40_000)
    )
    store.append("t-gone", [big, Done(at=T0, data=DoneData(message="ok"))])
    store.save_wait(
        PendingWait(thread_id="t-gone", task_token="tok", callback_id="cb", kind="question", deadline=T0)
    )
    store.link("EMAIL#<gone@example.com>", "t-gone")
    store.create(meta("t-kept"), [message("stay")])
    store.link("EMAIL#<kept@example.com>", "t-kept")

    # When the finished thread is purged (what the TTL deletion of its META triggers)
    store.purge("t-gone")

    # Then only the other thread's items remain, and no payload is left behind
    with pytest.raises(ThreadNotFound):
        store.load("t-gone")
    assert {item["pk"]["S"] for item in raw_items()} == {"THREAD#t-kept", "EMAIL#<kept@example.com>"}
    assert payload_keys() == []
    assert store.find_linked("EMAIL#<gone@example.com>") is None


def meta_item(store: DynamoThreadStore, thread_id: str) -> dict[str, Any]:
    item = store._table.get_item(Key={"pk": f"THREAD#{thread_id}", "sk": "META"})["Item"]
    return dict(item)
