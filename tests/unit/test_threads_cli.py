"""`ThreadsApi` reads whole threads from the API's pages, and refuses what it cannot trust.

A loopback server answers in the API's shapes (the real routes are exercised over HTTP by
tests/e2e/test_local_stack.py); here it serves what a broken or tampered source would.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from twelvefactor.cli import main
from twelvefactor.commands.threads import ApiError, ThreadsApi, thread_from_document
from twelvefactor.core.events import UserMessage, UserMessageData, dump_event

AT = datetime(2025, 3, 1, tzinfo=UTC)
EVENT = dump_event(UserMessage(at=AT, data=UserMessageData(text="deploy the backend")))


class _Answers(BaseHTTPRequestHandler):
    answers: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        body = self.answers.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, dict[str, bytes]]]:
    answers: dict[str, bytes] = {}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Answers,), {"answers": answers}))
    serving = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    serving.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", answers
    finally:
        httpd.shutdown()
        httpd.server_close()
        serving.join()


def _page(events: list[dict[str, Any]], next_after: int | None) -> bytes:
    return json.dumps({"thread_id": "t-1", "events": events, "next_after": next_after}).encode()


def test_a_pointed_at_event_is_fetched_and_checked_against_its_digest(
    server: tuple[str, dict[str, bytes]],
) -> None:
    # Given a page whose only event is a pointer, once to the event's own bytes and once to other bytes
    base_url, answers = server
    body = json.dumps(EVENT).encode()
    payload = {
        "size_bytes": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
        "expires_at": "2025-03-01",
    }
    pointer = {"seq": 0, "type": "user_message", "payload": {**payload, "url": f"{base_url}/s3/good"}}
    tampered = {"seq": 0, "type": "user_message", "payload": {**payload, "url": f"{base_url}/s3/bad"}}
    answers["/s3/good"] = body
    answers["/s3/bad"] = body.replace(b"backend", b"database")
    api = ThreadsApi(base_url)
    try:
        # When the pages are read
        answers["/threads/t-1/events?after=-1"] = _page([pointer], None)
        [read] = api.events("t-1")
        answers["/threads/t-1/events?after=-1"] = _page([tampered], None)
        with pytest.raises(ApiError) as refused:
            api.events("t-1")
    finally:
        api.close()

    # Then the genuine event is read whole, and the tampered one is refused, not returned
    assert dump_event(read.event) == EVENT and read.seq == 0
    assert "does not match its SHA-256" in str(refused.value)


def test_pages_are_followed_and_a_cursor_that_goes_back_is_refused(
    server: tuple[str, dict[str, bytes]],
) -> None:
    # Given events served over two pages, then an API whose cursor points back where it started
    base_url, answers = server
    answers["/threads/t-1/events?after=-1"] = _page([{"seq": 0, **EVENT}], 0)
    answers["/threads/t-1/events?after=0"] = _page([{"seq": 1, **EVENT}], None)
    answers["/threads/t-1/events?after=1"] = _page([], 1)
    api = ThreadsApi(base_url)
    try:
        # When they are read from the start, and from the looping cursor
        read = api.events("t-1")
        with pytest.raises(ApiError) as refused:
            api.events("t-1", after=1)
    finally:
        api.close()

    # Then both pages are read in order, and the loop ends in a clear error instead of running forever
    assert [item.seq for item in read] == [0, 1]
    assert "cursor went back" in str(refused.value)


def _message(text: str) -> dict[str, Any]:
    return dump_event(UserMessage(at=AT, data=UserMessageData(text=text)))


def test_show_json_saves_the_whole_thread_in_the_apis_shape_for_prompt_render_and_eval(
    server: tuple[str, dict[str, bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a thread of three events whose view holds the first, the second kept in S3, the third on
    # the next page, and a fourth appended after the view was read
    base_url, answers = server
    kept = json.dumps(_message("second, large")).encode()
    pointer = {
        "seq": 1,
        "type": "user_message",
        "payload": {
            "size_bytes": len(kept),
            "sha256": hashlib.sha256(kept).hexdigest(),
            "url": f"{base_url}/s3/second",
            "expires_at": "2025-03-01T00:00:00Z",
        },
    }
    view = {"thread_id": "t-1", "agent": "deploybot", "channel": "api", "status": "running", "last_seq": 2}
    answers["/threads/t-1"] = json.dumps(
        {**view, "events": [{"seq": 0, **_message("first")}], "next_after": 0}
    ).encode()
    answers["/threads/t-1/events?after=0"] = _page(
        [pointer, {"seq": 2, **_message("third")}, {"seq": 3, **_message("after the view")}], None
    )
    answers["/s3/second"] = kept

    # When the thread is shown as JSON and saved
    code = main(["threads", "--api-url", base_url, "show", "t-1", "--json"])
    saved = capsys.readouterr().out

    # Then the file is the API's view made whole: every event inline with its seq, up to the view's
    # last_seq, and no cursor
    assert code == 0
    document = json.loads(saved)
    assert document["next_after"] is None and document["status"] == "running"
    assert [event["seq"] for event in document["events"]] == [0, 1, 2]
    # ... and it reads back as the whole thread
    thread = thread_from_document(saved.encode(), "t.json")
    assert [event.data.text for event in thread.events if isinstance(event, UserMessage)] == [
        "first",
        "second, large",
        "third",
    ]
