"""A scripted OpenAI-compatible HTTP server on loopback, for tests and evals of the real adapter.

It speaks the real wire protocol, so the openai SDK (and anything else pointed at ``base_url``)
cannot tell it from a provider: ``POST /v1/chat/completions`` answers with realistic
``chat.completion`` JSON, ``usage`` included, and ``GET /v1/models`` lists the one model.

Each completion request takes the next answer from the script, or asks the responder:

- ``Answer(content)``: an assistant message with that text (valid JSON or not: tests of invalid
  output need both);
- ``ToolCallAnswer(name, arguments)``: an assistant message with one function tool call;
- ``HttpError(status, message)``: an OpenAI-style error body with that status (429 and 5xx are
  what clients retry; ``retry_after_seconds`` sends ``retry-after-ms`` as real providers do,
  which keeps a retrying test fast without changing the client's backoff).

Every answer may carry ``delay_seconds`` (a slow provider, for timeouts). A plain ``str`` in the
script is shorthand for ``Answer(str)``. Every request body is recorded in ``requests``, in
arrival order, so a test can assert what the client sent (``response_format``, ``tools``...).

Example::

    with FakeOpenAI([HttpError(429, retry_after_seconds=0.01), '{"intent": "done_for_now", ...}']) as llm:
        client = openai.OpenAI(base_url=llm.base_url, api_key="unused")
        ...
        assert len(llm.requests) == 2

A request beyond the end of the script gets a 400 saying so (never retried), and with
``api_key`` set, a request without ``Authorization: Bearer <api_key>`` gets a 401 like a real
provider's. The server binds 127.0.0.1 on an ephemeral port and stops, joining its handler
threads, when the ``with`` block ends.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from .loopback import send_json

DEFAULT_MODEL = "fake-model"


@dataclass(frozen=True)
class Answer:
    """An assistant message with text content. Token counts default to a rough estimate."""

    content: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str = "stop"
    delay_seconds: float = 0.0


@dataclass(frozen=True)
class ToolCallAnswer:
    """An assistant message calling one function; ``arguments`` is sent as JSON text (a ``str`` as-is)."""

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    delay_seconds: float = 0.0


@dataclass(frozen=True)
class HttpError:
    """An error response with an OpenAI-style ``{"error": {...}}`` body."""

    status: int
    message: str = "scripted failure"
    retry_after_seconds: float | None = None
    delay_seconds: float = 0.0


Scripted = Answer | ToolCallAnswer | HttpError
Responder = Callable[[dict[str, Any]], Scripted | str]


class FakeOpenAI:
    """Serve ``script`` (then ``responder``, if given) as an OpenAI-compatible endpoint on 127.0.0.1."""

    def __init__(
        self,
        script: Iterable[Scripted | str] = (),
        *,
        responder: Responder | None = None,
        model: str = DEFAULT_MODEL,
        api_key: str | None = None,
    ) -> None:
        self.model = model
        self.api_key = api_key
        self._script: deque[Scripted | str] = deque(script)
        self._responder = responder
        self._requests: list[dict[str, Any]] = []
        self._lock = threading.Condition()
        # Set on close, so a handler sleeping through a scripted delay wakes up and gives up.
        self._closing = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- the API tests use -----------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """What to give the SDK as ``base_url`` (``OPENAI_BASE_URL``): ``http://127.0.0.1:<port>/v1``."""
        if self._server is None:
            raise RuntimeError("the fake OpenAI server is not running; use it as a context manager")
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The JSON bodies of the completion requests received so far (a copy)."""
        with self._lock:
            return list(self._requests)

    def enqueue(self, *answers: Scripted | str) -> None:
        """Append answers to the script (e.g. between two phases of a test)."""
        with self._lock:
            self._script.extend(answers)

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Block until ``count`` completion requests have arrived; raise TimeoutError otherwise."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._requests) >= count, timeout):
                raise TimeoutError(f"expected {count} requests within {timeout}s, got {len(self._requests)}")
            return list(self._requests)

    # --- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> FakeOpenAI:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start(self) -> None:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        # A short poll interval makes close() quick: shutdown waits for the loop's next poll.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-openai", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        if self._server is None:
            return
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()  # joins the handler threads (block_on_close)
        if self._thread is not None:
            self._thread.join()
        self._server = None

    # --- what the handler calls --------------------------------------------------------------

    def _next_answer(self, body: dict[str, Any]) -> Scripted | None:
        """Record the request and pick its answer; None once the script and the responder are out."""
        with self._lock:
            self._requests.append(body)
            self._lock.notify_all()
            answer = self._script.popleft() if self._script else None
        if answer is None and self._responder is not None:
            answer = self._responder(body)
        return Answer(answer) if isinstance(answer, str) else answer

    def _sleep(self, seconds: float) -> bool:
        """Wait out a scripted delay; False when the server is closing meanwhile."""
        return not self._closing.wait(seconds) if seconds > 0 else True


class _Server(ThreadingHTTPServer):
    # Handler threads are joined on close (not daemons), so nothing outlives the `with` block.
    daemon_threads = False
    block_on_close = True
    fake: FakeOpenAI

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and hung up is expected in timeout tests, not a server fault.
        pass


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # A client that connects and never speaks cannot hold the server's close forever.
    timeout = 10

    def do_GET(self) -> None:
        if self.path.rstrip("/") != "/v1/models":
            self._send_json(HTTPStatus.NOT_FOUND, _error_body(404, f"no route {self.path}"))
            return
        created = int(time.time())
        model = {"id": self.server.fake.model, "object": "model", "created": created, "owned_by": "fake"}
        self._send_json(HTTPStatus.OK, {"object": "list", "data": [model]})

    def do_POST(self) -> None:
        fake = self.server.fake
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send_json(HTTPStatus.NOT_FOUND, _error_body(404, f"no route {self.path}"))
            return
        if fake.api_key is not None and self.headers.get("Authorization") != f"Bearer {fake.api_key}":
            self._send_json(HTTPStatus.UNAUTHORIZED, _error_body(401, "Incorrect API key provided."))
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self._send_json(HTTPStatus.BAD_REQUEST, _error_body(400, "the body must be a JSON object"))
            return
        answer = fake._next_answer(body)
        if answer is None:
            # A test expectation failed, not a provider fault: tell the SDK not to retry it.
            message = f"fake_openai: no scripted answer left for request {len(fake.requests)}"
            self._send_json(HTTPStatus.BAD_REQUEST, _error_body(400, message), {"x-should-retry": "false"})
            return
        if not fake._sleep(answer.delay_seconds):
            return
        if isinstance(answer, HttpError):
            headers = {}
            if answer.retry_after_seconds is not None:
                headers["retry-after-ms"] = str(int(answer.retry_after_seconds * 1000))
            self._send_json(answer.status, _error_body(answer.status, answer.message), headers)
            return
        self._send_json(HTTPStatus.OK, _completion(body, answer, fake.model))

    def _send_json(self, status: int, payload: object, headers: Mapping[str, str] | None = None) -> None:
        send_json(self, status, payload, headers)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are recorded in `FakeOpenAI.requests`; access logs would only add noise


def _completion(request: dict[str, Any], answer: Answer | ToolCallAnswer, model: str) -> dict[str, Any]:
    if isinstance(answer, ToolCallAnswer):
        arguments = answer.arguments if isinstance(answer.arguments, str) else json.dumps(answer.arguments)
        tool_call = {
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": answer.name, "arguments": arguments},
        }
        message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [tool_call]}
        finish_reason, text = "tool_calls", answer.name + arguments
    else:
        message = {"role": "assistant", "content": answer.content}
        finish_reason, text = answer.finish_reason, answer.content
    message["refusal"] = None
    prompt_tokens = answer.prompt_tokens
    if prompt_tokens is None:
        prompt_tokens = _estimate_tokens(json.dumps(request.get("messages", [])))
    completion_tokens = answer.completion_tokens
    if completion_tokens is None:
        completion_tokens = _estimate_tokens(text)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", model),
        "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _estimate_tokens(text: str) -> int:
    # About four characters per token for English text: close enough for cost-summing tests.
    return max(1, len(text) // 4)


def _error_body(status: int, message: str) -> dict[str, Any]:
    kind = {
        400: "invalid_request_error",
        401: "invalid_request_error",
        404: "invalid_request_error",
        429: "rate_limit_exceeded",
    }.get(status, "server_error")
    code = {401: "invalid_api_key", 404: "model_not_found", 429: "rate_limit_exceeded"}.get(status)
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}
