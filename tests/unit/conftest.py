"""Unit tests reach no network: only loopback, where the scripted fake servers listen."""

import hashlib
import json
from collections.abc import Callable, Collection, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from pytest_socket import enable_socket, socket_allow_hosts

from twelvefactor.adapters.ports import EventsSlice, OffloadedEvent, StoredPayload, ThreadMeta
from twelvefactor.core.events import Event, Thread, dump_event
from twelvefactor.triggers.api import EventsPage, ThreadView


@pytest.fixture(autouse=True)
def _loopback_only() -> Iterator[None]:
    socket_allow_hosts(["127.0.0.1", "::1", "localhost"], allow_unix_socket=True)
    yield
    enable_socket()


class _OneThreadStore:
    """Just enough of a ThreadStore for the API's page reader: one thread, some events kept in S3."""

    def __init__(self, thread: Thread, offloaded: Collection[int]) -> None:
        self.thread, self.offloaded = thread, offloaded

    def events_page(self, thread_id: str, after_seq: int, *, limit: int, max_bytes: int) -> EventsSlice:
        items: list[tuple[int, Event | OffloadedEvent]] = []
        for seq, event in enumerate(self.thread.events):
            if seq > after_seq:
                items.append((seq, self._pointer(event) if seq in self.offloaded else event))
        return EventsSlice(items[:limit], more=len(items) > limit)

    @staticmethod
    def _pointer(event: Event) -> OffloadedEvent:
        body = json.dumps(dump_event(event)).encode()
        payload = StoredPayload(
            size_bytes=len(body),
            sha256=hashlib.sha256(body).hexdigest(),
            url="https://payloads.s3.amazonaws.com/presigned",
            expires_at=datetime(2025, 1, 1, tzinfo=UTC),
        )
        return OffloadedEvent(type=event.type, payload=payload)


@pytest.fixture
def api_thread_answer() -> Callable[..., dict[str, Any]]:
    """What GET /threads/{id} answers for a thread, made by the API's own models (ThreadView, EventsPage),
    as a caller saves it: ``page_size`` events on the first page, the events at ``offloaded`` in S3,
    and ``appended_since`` landing between the API's read of the thread and of its page."""

    def answer(
        thread: Thread,
        *,
        page_size: int = 100,
        offloaded: Collection[int] = (),
        appended_since: Sequence[Event] = (),
    ) -> dict[str, Any]:
        store = _OneThreadStore(thread.extended(tuple(appended_since)), offloaded)
        meta = ThreadMeta(
            thread_id=thread.id, agent=thread.agent, created_at=datetime(2025, 1, 1, tzinfo=UTC)
        )
        page = EventsPage.read(store, thread.id, after=-1, limit=page_size)  # type: ignore[arg-type]
        view: dict[str, Any] = ThreadView.of_thread(meta, thread, page).model_dump(mode="json")
        return view

    return answer
