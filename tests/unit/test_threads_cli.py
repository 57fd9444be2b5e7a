"""`ThreadsApi` reads whole threads from the API's pages, and refuses what it cannot trust.

A loopback server answers in the API's shapes (the real routes are exercised over HTTP by
tests/e2e/test_local_stack.py); here it serves what a broken or tampered source would.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
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
    """Answers each request from `answers`, keyed by path (GET) or "POST path"; records every
    request line it received in `seen`."""

    answers: ClassVar[dict[str, bytes]] = {}
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self._answer(self.path)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer(f"POST {self.path}")

    def _answer(self, key: str) -> None:
        self.seen.append(f"{self.command} {self.path}")
        body = self.answers.get(key)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class FakeApi:
    url: str
    answers: dict[str, bytes]
    seen: list[str]


@pytest.fixture
def server() -> Iterator[FakeApi]:
    fake = FakeApi("", {}, [])
    handler = type("Handler", (_Answers,), {"answers": fake.answers, "seen": fake.seen})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    fake.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    serving = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    serving.start()
    try:
        yield fake
    finally:
        httpd.shutdown()
        httpd.server_close()
        serving.join()


def _page(events: list[dict[str, Any]], next_after: int | None) -> bytes:
    return json.dumps({"thread_id": "t-1", "events": events, "next_after": next_after}).encode()


def test_a_pointed_at_event_is_fetched_and_checked_against_its_digest(
    server: FakeApi,
) -> None:
    # Given a page whose only event is a pointer, once to the event's own bytes and once to other bytes
    base_url, answers = server.url, server.answers
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
    server: FakeApi,
) -> None:
    # Given events served over two pages, then an API whose cursor points back where it started
    base_url, answers = server.url, server.answers
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


def _message(text: str) -> dict[str, Any]:
    return dump_event(UserMessage(at=AT, data=UserMessageData(text=text)))


def test_show_json_saves_the_whole_thread_in_the_apis_shape_for_prompt_render_and_eval(
    server: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a thread of three events whose view holds the first, the second kept in S3, the third on
    # the next page, and a fourth appended after the view was read
    base_url, answers = server.url, server.answers
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


def _view(thread_id: str, status: str, events: list[dict[str, Any]]) -> bytes:
    view = {"thread_id": thread_id, "agent": "deploybot", "channel": "none", "status": status}
    return json.dumps(
        {**view, "total_tokens": 0, "last_seq": len(events) - 1, "events": events, "next_after": None}
    ).encode()


def test_follow_into_a_closed_pipe_stops_quietly(server: FakeApi) -> None:
    # Given an API where a launched thread has an event and waits for approval
    server.answers["POST /threads"] = json.dumps({"thread_id": "t-1"}).encode()
    server.answers["/threads/t-1"] = _view("t-1", "awaiting_approval", [{"seq": 0, **EVENT}])
    server.answers["/threads/t-1/events?after=-1"] = _page([{"seq": 0, **EVENT}], None)

    # When `threads launch --follow` writes into a pipe whose reader has gone (`| head -1`)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "twelvefactor.cli",
            "threads",
            "--api-url",
            server.url,
            "launch",
            "hi",
            "--follow",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert process.stdout is not None
    process.stdout.close()
    _out, err = process.communicate(timeout=60)

    # Then it launched the thread, stopped at the first write, and said nothing about it
    assert server.seen[0] == "POST /threads"
    assert err.decode() == ""
    assert process.returncode == 128 + signal.SIGPIPE


@pytest.mark.parametrize(
    ("thread_id", "path"),
    [("../x", "/threads/..%2Fx"), ("..", "/threads/%2E%2E"), ("a/b?c", "/threads/a%2Fb%3Fc")],
)
def test_a_thread_id_is_sent_as_one_encoded_path_segment(
    server: FakeApi, capsys: pytest.CaptureFixture[str], thread_id: str, path: str
) -> None:
    # When a thread id with path characters is shown
    code = main(["threads", "--api-url", server.url, "show", thread_id])

    # Then the request stays on that thread's route, the id one segment (the API answers 404 here)
    assert server.seen == [f"GET {path}"]
    assert code == 1 and "answered 404" in capsys.readouterr().err


def test_a_comment_with_a_text_answer_is_refused_before_anything_is_sent(
    server: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    # When a text answer is given a comment, which the API's text reply has no field for
    code = main(["threads", "--api-url", server.url, "respond", "t-1", "--text", "go", "--comment", "why"])

    # Then it is refused as a usage error, saying what to do, and nothing is sent
    assert code == 2
    assert "--comment goes with --approve or --reject" in capsys.readouterr().err
    assert server.seen == []


def test_list_shows_each_threads_status_under_a_header(
    server: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given two threads, one waiting for approval and one done, one of them without a channel
    summaries = [
        {"thread_id": "t-1", "agent": "deploybot", "channel": "none", "created_at": "2025-03-01T00:00:00Z"},
        {"thread_id": "t-22", "agent": "payments", "channel": "slack", "created_at": "2025-03-02T00:00:00Z"},
    ]
    server.answers["/threads?limit=20"] = json.dumps(summaries).encode()
    server.answers["/threads/t-1"] = _view("t-1", "awaiting_approval", [])
    server.answers["/threads/t-22"] = _view("t-22", "done", [])

    # When they are listed
    code = main(["threads", "--api-url", server.url, "list"])

    # Then each row shows its status, under a header naming every column
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert lines[0].split() == ["THREAD", "AGENT", "STATUS", "CHANNEL", "CREATED"]
    assert [line.split()[:4] for line in lines[1:]] == [
        ["t-1", "deploybot", "awaiting_approval", "none"],
        ["t-22", "payments", "done", "slack"],
    ]
