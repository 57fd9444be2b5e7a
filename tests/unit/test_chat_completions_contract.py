"""Contract: our chat-completions client and the official openai SDK agree on the wire.

The layer talks to the model through `twelvefactor.adapters.chat_completions` (httpx) instead of
the openai SDK. Each test here sends the same request through both to the same scripted
OpenAI-compatible server (`FakeOpenAI`, which requires the bearer key) and checks that the server
received the same bodies, that both read the answer the same way, and that both fail the same way
after the same number of attempts. If our client drifted from the protocol the SDK speaks, these
tests would say where.
"""

from __future__ import annotations

import gc
import json
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import openai
import pytest

from twelvefactor.adapters.chat_completions import (
    ChatCompletionsClient,
    Completion,
    ProviderError,
    ToolCallRequest,
)
from twelvefactor.adapters.llm import guided_schema, strict_schema, tool_definitions
from twelvefactor.core.events import TokenUsage
from twelvefactor.core.tools import BUILTIN_INTENTS, IntentSet
from twelvefactor.local.fake_openai import Answer, FakeOpenAI, HttpError, Scripted, ToolCallAnswer
from twelvefactor.local.loopback import send_json

KEY = "sk-contract-test-key-000000"
MODEL = "contract-model"
INTENTS = IntentSet.of(BUILTIN_INTENTS)
MESSAGES = [
    {"role": "system", "content": "Answer with one intent."},
    {"role": "user", "content": "<user_message>Anything new? ünïcode ✓</user_message>"},
]
# The three request shapes the adapter sends, one per LLM_OUTPUT_MODE.
BODIES = {
    "json_schema": {
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "next_step", "strict": True, "schema": strict_schema(INTENTS)},
        }
    },
    "json_object": {"response_format": {"type": "json_object", "schema": guided_schema(INTENTS)}},
    "tools": {"tools": tool_definitions(INTENTS), "tool_choice": "required"},
}
QUICK = 0.01  # retry-after the fake sends, so both clients' retries are quick

Outcome = Completion | tuple[str, int | None, str]
Caller = Callable[..., Outcome]


def body(mode: str) -> dict[str, Any]:
    return {"model": MODEL, "messages": MESSAGES, "temperature": 0.0, **BODIES[mode]}


def through_ours(base_url: str, request: dict[str, Any], *, key: str = KEY, **options: Any) -> Outcome:
    client = ChatCompletionsClient(base_url=base_url, api_key=key, **options)
    try:
        return client.create(request)
    except ProviderError as error:
        kind = "timeout" if error.timed_out else "connection" if error.status is None else "status"
        return (kind, error.status, error.detail if kind == "status" else "")
    finally:
        client.close()


def through_sdk(base_url: str, request: dict[str, Any], *, key: str = KEY, **options: Any) -> Outcome:
    timeout = options.pop("timeout_seconds", 60.0)
    client = openai.OpenAI(base_url=base_url, api_key=key, timeout=timeout, **options)
    try:
        completion = client.chat.completions.create(**request)
    except openai.APITimeoutError:
        return ("timeout", None, "")
    except openai.APIConnectionError:
        return ("connection", None, "")
    except openai.APIStatusError as error:
        return ("status", error.status_code, str(error.body["message"]))  # type: ignore[index]
    finally:
        client.close()
    message = completion.choices[0].message
    usage = completion.usage
    return Completion(
        content=message.content,
        refusal=message.refusal,
        tool_calls=tuple(
            ToolCallRequest(call.function.name, call.function.arguments)
            for call in message.tool_calls or ()
            if call.type == "function"
        ),
        finish_reason=completion.choices[0].finish_reason,
        usage=TokenUsage(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)
        if usage
        else None,
    )


@pytest.fixture
def both() -> Iterator[Callable[..., tuple[Outcome, Outcome, list[Any], list[Any]]]]:
    """Run one script through the SDK, then the same script through our client, each on its own
    fake server; return both outcomes and the request bodies each server received."""
    servers: list[FakeOpenAI] = []

    def run(
        script: list[Scripted | str], request: dict[str, Any], **options: Any
    ) -> tuple[Outcome, Outcome, list[Any], list[Any]]:
        outcomes, received = [], []
        for caller in (through_sdk, through_ours):
            server = FakeOpenAI(list(script), model=MODEL, api_key=KEY)
            servers.append(server)
            server.start()
            outcomes.append(caller(server.base_url, json.loads(json.dumps(request)), **dict(options)))
            received.append(server.requests)
        return outcomes[0], outcomes[1], received[0], received[1]

    yield run
    for server in servers:
        server.close()


# --- the same requests, read the same way -----------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "answer"),
    [
        ("json_schema", Answer('{"step": {"intent": "done_for_now", "message": "ok"}}', 321, 17)),
        ("json_object", Answer('{"intent": "done_for_now", "message": "ok"}', finish_reason="length")),
        ("json_object", Answer("")),
        (
            "tools",
            ToolCallAnswer("done_for_now", {"message": "ok ✓"}, prompt_tokens=80, completion_tokens=12),
        ),
        ("tools", ToolCallAnswer("done_for_now", '{"message": "cut')),
    ],
    ids=["strict", "guided-truncated", "empty", "tool-call", "tool-call-bad-arguments"],
)
def test_both_send_the_same_body_and_read_the_same_completion(
    both: Any, mode: str, answer: Answer | ToolCallAnswer
) -> None:
    # Given a provider scripted with one answer, and the adapter's request for this mode
    # When the SDK and our client each send the request
    sdk, ours, sdk_received, ours_received = both([answer], body(mode))

    # Then the provider received the same JSON body from both (the key was accepted from both)
    assert ours_received == sdk_received == [body(mode)]
    # And both read the same content, refusal, tool calls, finish reason and usage
    assert isinstance(ours, Completion)
    assert ours == sdk


# --- the same failures, after the same attempts -------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "retries", "attempts"),
    [
        ([HttpError(429, "Rate limit reached", QUICK), HttpError(500, "oops", QUICK), "{}"], 2, 3),
        ([HttpError(503, "overloaded", QUICK)] * 4, 3, 4),
        ([HttpError(408, "request timeout", QUICK), HttpError(409, "lock timeout", QUICK), "{}"], 2, 3),
        ([HttpError(502, "bad gateway", QUICK)] * 2, 0, 1),
        ([HttpError(400, "Invalid 'messages'"), "{}"], 3, 1),
        ([HttpError(403, "no access to this model"), "{}"], 3, 1),
        ([HttpError(404, "The model does not exist"), "{}"], 3, 1),
        ([HttpError(422, "unprocessable"), "{}"], 3, 1),
        ([], 3, 1),  # past the script's end the fake says 400 and x-should-retry: false
        ([HttpError(429, "come back in five minutes", 300), "{}"], 3, 1),  # longer than two minutes
    ],
    ids=["429-500-then-ok", "503-exhausted", "408-409-then-ok", "502-no-retries", "400", "403", "404", "422",
         "script-exhausted", "429-retry-after-too-long"],
)  # fmt: skip
def test_both_retry_the_same_statuses_and_raise_the_same_error(
    both: Any, script: list[Scripted | str], retries: int, attempts: int
) -> None:
    # Given a provider that fails as scripted
    # When the SDK and our client each send the same request with the same retry budget
    sdk, ours, sdk_received, ours_received = both(script, body("json_object"), max_retries=retries)

    # Then both made the same number of attempts, and ended the same way: the same answer, or the
    # same status with the provider's own message
    assert len(ours_received) == len(sdk_received) == attempts
    assert ours == sdk


def test_both_reject_a_wrong_key_without_retrying(both: Any) -> None:
    # Given a provider that accepts only its own key
    # When both send another key
    sdk, ours, sdk_received, ours_received = both(["{}"], body("tools"), key="sk-wrong", max_retries=3)

    # Then both got the 401 with the provider's message, and no completion was served
    assert ours == sdk == ("status", 401, "Incorrect API key provided.")
    assert ours_received == sdk_received == []


def test_both_retry_a_timeout_then_raise_it(both: Any) -> None:
    # Given a provider slower than the timeout, twice
    slow = Answer("{}", delay_seconds=30)

    # When both send with a short timeout and one retry
    request = body("json_object")
    sdk, ours, sdk_received, ours_received = both([slow, slow], request, timeout_seconds=0.2, max_retries=1)

    # Then both timed out twice
    assert ours == sdk == ("timeout", None, "")
    assert len(ours_received) == len(sdk_received) == 2


def test_both_report_a_refused_connection_as_a_connection_error() -> None:
    # Given a port where nothing listens
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        base_url = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"

        # When both send to it
        outcomes = [
            call(base_url, body("json_object"), max_retries=0) for call in (through_sdk, through_ours)
        ]

    # Then both report a connection error (not a status)
    assert outcomes[0] == outcomes[1] == ("connection", None, "")


class _KeepAliveProvider(BaseHTTPRequestHandler):
    """Answers one completion over HTTP/1.1 and keeps the connection, as llama.cpp's server does
    (the fake provider closes each connection, so a client holds none to leak)."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        send_json(self, 200, {"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]})

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_client_dropped_without_close_leaves_no_connection_open(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a client holding a pooled keep-alive connection to its provider
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KeepAliveProvider)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    try:
        client = ChatCompletionsClient(base_url=f"http://127.0.0.1:{server.server_port}", max_retries=0)
        assert client.create({"model": MODEL, "messages": []}).content == "ok"
        unraisable: list[Any] = []
        monkeypatch.setattr(sys, "unraisablehook", unraisable.append)

        # When it is dropped without close(), as a runtime reset drops its adapters
        del client
        gc.collect()
    finally:
        server.shutdown()
        server.server_close()

    # Then no socket was left for the garbage collector to find open (a ResourceWarning)
    assert [str(item.exc_value) for item in unraisable] == []
