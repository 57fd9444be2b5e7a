"""A loopback stand-in for Amazon Bedrock's Converse API (moto has none).

It speaks Converse's REST shape, ``POST /model/{modelId}/converse`` with the JSON body boto3 sends,
so boto3 reaches it unchanged through ``AWS_ENDPOINT_URL_BEDROCK_RUNTIME`` (signatures are not
checked: this is a laptop). What answers is a *responder*: a function from the request body to a
Converse response body, or a `ConverseError`.

- `Scripted` answers from a queue (tests of the real adapter: shapes, retries, errors).
- `EmbeddedConverse` asks an OpenAI-compatible server, the embedded SmolLM2 on llama.cpp, with the
  request's tools turned into one guided JSON schema, and answers with a ``toolUse`` block: so
  ``twelvefactor local up --provider bedrock`` runs the whole stack offline in Bedrock mode.

Prompt caching is imitated the way Bedrock reports it: the text ahead of the request's last
``cachePoint`` is the cached prefix; the first request with a prefix writes it
(``cacheWriteInputTokens``), later ones read it (``cacheReadInputTokens``), and ``inputTokens``
counts only the rest (unless the responder reported cache counts itself). The prefix's size is an
estimate (about four characters a token); the backend's own counts are kept otherwise.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any

import httpx

from .loopback import LoopbackServer, send_json

_ROUTE = re.compile(r"^/model/(?P<model>[^/]+)/converse$")


@dataclass(frozen=True)
class ConverseError:
    """An error answer as Bedrock sends one: the code in ``x-amzn-ErrorType``, the message in the body."""

    status: int
    code: str
    message: str = "error"


Responder = Callable[[str, dict[str, Any]], "dict[str, Any] | ConverseError"]


def tool_answer(
    name: str, arguments: dict[str, Any], *, input_tokens: int = 10, output_tokens: int = 5
) -> dict[str, Any]:
    """A Converse response whose one content block is a tool call, as AWS's documentation shows it."""
    return {
        "output": {
            "message": {
                "role": "assistant",
                "content": [{"toolUse": {"toolUseId": "tooluse_standin", "name": name, "input": arguments}}],
            }
        },
        "stopReason": "tool_use",
        "usage": {
            "inputTokens": input_tokens,
            "outputTokens": output_tokens,
            "totalTokens": input_tokens + output_tokens,
        },
        "metrics": {"latencyMs": 1},
    }


class Scripted:
    """Answers from a queue; every request is recorded as ``(model_id, body)``."""

    def __init__(self, answers: Iterable[dict[str, Any] | ConverseError] = ()) -> None:
        self._answers: deque[dict[str, Any] | ConverseError] = deque(answers)
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def enqueue(self, *answers: dict[str, Any] | ConverseError) -> None:
        with self._lock:
            self._answers.extend(answers)

    def __call__(self, model_id: str, body: dict[str, Any]) -> dict[str, Any] | ConverseError:
        with self._lock:
            self.requests.append((model_id, body))
            if not self._answers:
                return ConverseError(400, "ValidationException", "fake_bedrock: no scripted answer left")
            return self._answers.popleft()


class EmbeddedConverse:
    """Converse over an OpenAI-compatible server with guided decoding (llama.cpp's ``json_object``
    with a schema): the tools become one schema whose ``intent`` names the tool."""

    def __init__(self, base_url: str, model: str, *, timeout_seconds: float = 600.0) -> None:
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_seconds)
        self._model = model

    def close(self) -> None:
        self._http.close()

    def __call__(self, model_id: str, body: dict[str, Any]) -> dict[str, Any] | ConverseError:
        tools = [t["toolSpec"] for t in body.get("toolConfig", {}).get("tools", []) if "toolSpec" in t]
        if not tools:
            return ConverseError(400, "ValidationException", "the stand-in answers tool calls only")
        messages = [{"role": "system", "content": _text(body.get("system", []))}]
        messages += [{"role": m["role"], "content": _text(m["content"])} for m in body.get("messages", [])]
        inference = body.get("inferenceConfig", {})
        request = {
            "model": self._model,
            "messages": messages,
            "temperature": inference.get("temperature", 0.0),
            "response_format": {"type": "json_object", "schema": _tools_schema(tools)},
        }
        try:
            response = self._http.post("/chat/completions", json=request)
        except httpx.HTTPError as error:
            return ConverseError(503, "ServiceUnavailableException", type(error).__name__)
        if not response.is_success:
            return ConverseError(
                503, "ServiceUnavailableException", f"backend answered {response.status_code}"
            )
        completion = response.json()
        content = completion["choices"][0]["message"].get("content") or ""
        try:
            arguments = json.loads(content)
        except ValueError:
            arguments = None
        usage = completion.get("usage") or {}
        prompt, output = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
        if not isinstance(arguments, dict) or not isinstance(arguments.get("intent"), str):
            answer = tool_answer("invalid", {}, input_tokens=prompt, output_tokens=output)
            answer["output"]["message"]["content"] = [{"text": content}]
            answer["stopReason"] = "end_turn"
            return answer
        name = arguments.pop("intent")
        return tool_answer(name, arguments, input_tokens=prompt, output_tokens=output)


class FakeBedrock:
    """The stand-in server: ``with FakeBedrock(responder) as bedrock: ... bedrock.url``."""

    def __init__(self, responder: Responder, *, port: int = 0) -> None:
        self.responder = responder
        self._seen_prefixes: set[str] = set()
        self._lock = threading.Lock()
        standin = self

        class Handler(_Handler):
            fake = standin

        self._server = LoopbackServer(Handler, name="fake-bedrock", port=port)

    @property
    def url(self) -> str:
        return self._server.url

    def __enter__(self) -> FakeBedrock:
        self._server.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.stop()

    def answer(self, model_id: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        result = self.responder(model_id, body)
        if isinstance(result, ConverseError):
            return result.status, {"message": result.message}, {"x-amzn-ErrorType": result.code}
        self._imitate_cache(body, result)
        return HTTPStatus.OK, result, {}

    def _imitate_cache(self, body: dict[str, Any], result: dict[str, Any]) -> None:
        prefix = _cached_prefix(body)
        usage = result.get("usage")
        if not prefix or not isinstance(usage, dict):
            return
        if "cacheReadInputTokens" in usage or "cacheWriteInputTokens" in usage:
            return  # the responder reported its own (a recorded answer): keep it as it is
        cached = min(_estimate_tokens(prefix), int(usage.get("inputTokens", 0)))
        with self._lock:
            seen = prefix in self._seen_prefixes
            self._seen_prefixes.add(prefix)
        usage["inputTokens"] = int(usage.get("inputTokens", 0)) - cached
        usage["cacheReadInputTokens" if seen else "cacheWriteInputTokens"] = cached


class _Handler(BaseHTTPRequestHandler):
    fake: FakeBedrock
    timeout = 10

    def do_POST(self) -> None:
        match = _ROUTE.match(urllib.parse.urlsplit(self.path).path)
        if match is None:
            send_json(
                self,
                404,
                {"message": f"no route {self.path}"},
                {"x-amzn-ErrorType": "UnknownOperationException"},
            )
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            send_json(
                self,
                400,
                {"message": "the body must be a JSON object"},
                {"x-amzn-ErrorType": "ValidationException"},
            )
            return
        status, payload, headers = self.fake.answer(urllib.parse.unquote(match["model"]), body)
        send_json(self, status, payload, headers)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _text(blocks: Any) -> str:
    if isinstance(blocks, str):
        return blocks
    return "\n".join(b["text"] for b in blocks if isinstance(b, dict) and isinstance(b.get("text"), str))


def _tools_schema(tools: list[dict[str, Any]]) -> dict[str, Any]:
    """One branch per tool: ``intent`` fixed to the tool's name, then its input's properties."""
    branches = []
    definitions: dict[str, Any] = {}
    for tool in tools:
        schema = dict(tool["inputSchema"]["json"])
        definitions.update(schema.pop("$defs", {}))
        properties = {"intent": {"const": tool["name"]}, **schema.get("properties", {})}
        required = ["intent", *schema.get("required", [])]
        branches.append({"type": "object", "properties": properties, "required": required})
    union: dict[str, Any] = {"anyOf": branches}
    if definitions:
        union["$defs"] = definitions
    return union


def _cached_prefix(body: dict[str, Any]) -> str:
    """Tools, then system, up to the last cache point, as Bedrock orders a request's prefix."""
    parts: list[str] = []
    cached_upto = 0
    for section in (body.get("toolConfig", {}).get("tools", []), body.get("system", [])):
        for block in section:
            if "cachePoint" in block:
                cached_upto = len(parts)
            else:
                parts.append(json.dumps(block, sort_keys=True))
    return "".join(parts[:cached_upto])


def _estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)
