"""Concurrency: many writers on one thread at the same moment, as concurrent Lambda invocations would.

Each writer is its own `Runtime` with its own boto3 session and store, like a Lambda container of
its own; they call the same application services the Slack, email and Api handlers and the
reducer call. moto handles one request at a time (`atomic_requests`), as DynamoDB applies each
request atomically; the writers still race between their requests, which is the contention.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import boto3
import pytest

from tests.integration.conftest import REGION
from tests.reliability.conftest import Cases
from tests.reliability.support import accepting_state_machine
from twelvefactor import runtime
from twelvefactor.adapters.dynamodb_store import DynamoThreadStore
from twelvefactor.adapters.ports import ConcurrentAppend, ThreadMeta
from twelvefactor.core import state
from twelvefactor.core.errors import NotWaiting
from twelvefactor.core.events import HumanRequest, HumanResponse, UserMessage, UserMessageData
from twelvefactor.core.ports import ChatMessage, ModelReply
from twelvefactor.core.replies import TextReply
from twelvefactor.core.tools import IntentSet
from twelvefactor.settings import StoreSettings

pytestmark = [pytest.mark.scenario("Concurrency"), pytest.mark.integration]

THREAD_ID = "busy-thread"
AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


class AlwaysAsks:
    """A model that asks a question at every step, so every reducer move pauses the thread."""

    def decide(self, messages: Sequence[ChatMessage], intents: IntentSet) -> ModelReply:
        return ModelReply(content=json.dumps({"intent": "request_human_input", "question": "Which tag?"}))


@dataclass
class Outcomes:
    accepted: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    reductions: int = 0
    reductions_deferred: int = 0  # lost every race: ConcurrentAppend, which Step Functions retries
    failures: list[tuple[str, BaseException]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def container(
    monkeypatch: pytest.MonkeyPatch, threads_table: str, payload_bucket: str, idempotency_table: str
) -> Callable[[], runtime.Runtime]:
    """A fresh runtime per call: its own boto3 session and store, the same table."""
    for name, value in {
        "THREADS_TABLE": threads_table,
        "PAYLOAD_BUCKET": payload_bucket,
        "IDEMPOTENCY_TABLE": idempotency_table,
        # An answer that finds neither a wait nor a running execution starts one (see _continue).
        "STATE_MACHINE_ARN": accepting_state_machine(),
    }.items():
        monkeypatch.setenv(name, value)
    settings = StoreSettings()

    def build() -> runtime.Runtime:
        session = boto3.session.Session(region_name=REGION)
        table = session.resource("dynamodb").Table(settings.threads_table)
        store = DynamoThreadStore(table, settings.payload_bucket, session.client("s3"), settings)
        return runtime.Runtime(store=store, llm=AlwaysAsks())

    return build


@pytest.mark.fixes(
    "A message that arrived while another writer was writing to the thread (a Slack or email "
    "follow-up, an API answer, a callback, a cancel) lost the race for its sequence number and was "
    "dropped with a conflict. The runtime now decides such an input again on the thread as it now "
    "stands (jittered, bounded retries), so it lands, or is refused because it no longer fits."
)
def test_fifty_concurrent_writers_lose_duplicate_and_reorder_nothing(
    container: Callable[[], runtime.Runtime], atomic_requests: None, cases: Cases
) -> None:
    """50 writers at once on one thread (20 Slack and 10 email follow-ups, 5 API answers, 15 reducer
    steps): every accepted message is stored exactly once, every refused one (409) not at all, the
    sequence has no gap, no reducer move was written on a stale view, and the thread ends paused."""
    # Given a thread a person just started, and 50 writers released at the same moment
    container().store.create(
        ThreadMeta(thread_id=THREAD_ID, agent="deploybot", created_at=AT),
        [UserMessage(at=AT, data=UserMessageData(text="deploy the backend"))],
    )
    kinds = ["slack"] * 20 + ["email"] * 10 + ["api"] * 5 + ["reducer"] * 15
    barrier = threading.Barrier(len(kinds))
    outcomes = Outcomes()

    def write(writer: int, kind: str) -> None:
        rt = container()
        text = f"{kind} writer {writer}"
        barrier.wait()
        try:
            if kind == "reducer":
                try:
                    rt.reduce(THREAD_ID)
                except ConcurrentAppend:
                    with outcomes.lock:
                        outcomes.reductions_deferred += 1
                    return
                with outcomes.lock:
                    outcomes.reductions += 1
                return
            if kind == "api":
                rt.resume(THREAD_ID, TextReply(text=text, by=f"api-{writer}"))
            else:
                rt.follow_up(THREAD_ID, text, channel=kind, sender=f"{kind}-{writer}")  # type: ignore[arg-type]
        except NotWaiting:
            with outcomes.lock:
                outcomes.refused.append(text)
            return
        except BaseException as error:
            with outcomes.lock:
                outcomes.failures.append((kind, error))
            return
        with outcomes.lock:
            outcomes.accepted.append(text)

    # When they all write
    workers = [threading.Thread(target=write, args=(n, kind)) for n, kind in enumerate(kinds)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    cases.add(len(kinds))

    # Then no writer failed: each message was either taken or refused with a reason (409), and each
    # reducer step either made its move or reported the lost race for the state machine to retry
    assert outcomes.failures == []
    assert outcomes.reductions + outcomes.reductions_deferred == kinds.count("reducer")
    assert outcomes.reductions > 0

    # When the state machine's retry runs the reducer once the storm is over
    container().reduce(THREAD_ID)

    # And every accepted message is there exactly once, no refused one is, nothing else appeared
    store = container().store
    _, thread = store.load(THREAD_ID)
    texts = Counter(
        event.data.text for event in thread.events if isinstance(event, UserMessage | HumanResponse)
    )
    assert texts == Counter(["deploy the backend", *outcomes.accepted])
    assert not set(outcomes.refused) & set(texts)
    # And the sequence is gap-free and no event id occurs twice
    assert [seq for seq, _ in store.events_after(THREAD_ID, -1)] == list(range(len(thread.events)))
    assert len({event.id for event in thread.events}) == len(thread.events)
    # And each question was asked from a thread that was ready for it (no move on a stale view),
    # and the thread now waits for an answer to a question asked after the last message
    for index, event in enumerate(thread.events):
        if isinstance(event, HumanRequest):
            assert state.status(thread.events[:index]) is state.ThreadStatus.READY, index
    assert state.status(thread.events) is state.ThreadStatus.AWAITING_HUMAN
