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

from twelvefactor.commands.threads import ApiError, ThreadsApi
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


class _Refusals(BaseHTTPRequestHandler):
    """Answers every POST with the 422 body this test sets."""

    body: ClassVar[bytes] = b""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(422)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            {
                "error": "RequestValidationError",
                "message": "body.message: at most 40000 characters",
                "detail": [{"loc": ["body", "message"], "type": "string_too_long"}],
            },
            "POST /threads answered 422: body.message: at most 40000 characters",
        ),
        (  # an API from before bodies carried a message: its field problems, not a list's repr
            {
                "error": "RequestValidationError",
                "detail": [{"loc": ["body", "message"], "type": "string_too_long"}],
            },
            "POST /threads answered 422: body.message: string_too_long",
        ),
    ],
)
def test_a_refusal_is_shown_as_a_sentence_not_a_python_repr(answer: dict[str, Any], expected: str) -> None:
    # Given an API that refuses a launch with a 422
    handler = type("Handler", (_Refusals,), {"body": json.dumps(answer).encode()})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    serving = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    serving.start()
    api = ThreadsApi(f"http://127.0.0.1:{httpd.server_address[1]}")
    try:
        # When the CLI launches through it
        with pytest.raises(ApiError) as refused:
            api.launch("deploybot", "x")
    finally:
        api.close()
        httpd.shutdown()
        httpd.server_close()
        serving.join()

    # Then the error reads as the API's reason, with no brackets or quotes of a Python list
    assert str(refused.value) == expected
    assert "[{" not in str(refused.value)
