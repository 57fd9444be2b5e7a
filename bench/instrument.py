"""Counters both sides of the benchmark install in their own process, the same way.

Standard library, botocore and httpx only: this module runs in the product's venv (our side) and
in bench/.venv (the LangGraph peer), and must measure both identically.

- Every HTTP request botocore sends (each attempt, retries included) is timed and, for DynamoDB,
  counted by operation with its body size, at `URLLib3Session.send`: below every framework.
- Every request httpx sends is timed at `HTTPTransport.handle_request` (httpx's, and httpx2's, the
  fork the openai SDK uses); the ones to the LLM's host and port are the "LLM wait" a step's
  framework overhead excludes.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

WRITE_OPERATIONS = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})


@dataclass
class Sample:
    """What one process did between two `Meter.take()` calls."""

    dynamo_requests: Counter[str] = field(default_factory=Counter)
    dynamo_write_bytes: int = 0
    dynamo_seconds: float = 0.0
    llm_calls: int = 0
    llm_seconds: float = 0.0
    other_http_seconds: float = 0.0

    @property
    def dynamo_request_count(self) -> int:
        return sum(self.dynamo_requests.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "dynamo_requests": dict(self.dynamo_requests),
            "dynamo_request_count": self.dynamo_request_count,
            "dynamo_write_bytes": self.dynamo_write_bytes,
            "dynamo_seconds": self.dynamo_seconds,
            "llm_calls": self.llm_calls,
            "llm_seconds": self.llm_seconds,
            "other_http_seconds": self.other_http_seconds,
        }


class Meter:
    """Process-wide counters; `take()` returns what happened since the last call and resets."""

    def __init__(self, llm_base_url: str) -> None:
        parts = urlsplit(llm_base_url)
        self._llm_netloc = (parts.hostname, parts.port)
        self._lock = threading.Lock()
        self._sample = Sample()
        self._undo: list[Callable[[], None]] = []

    def take(self) -> Sample:
        with self._lock:
            sample, self._sample = self._sample, Sample()
        return sample

    @contextmanager
    def installed(self) -> Iterator[Meter]:
        self._patch_botocore()
        self._patch_httpx()
        try:
            yield self
        finally:
            for undo in reversed(self._undo):
                undo()
            self._undo.clear()

    def _patch_botocore(self) -> None:
        from botocore.httpsession import URLLib3Session

        original = URLLib3Session.send
        meter = self

        def send(session: Any, request: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(session, request)
            finally:
                meter._record_aws(request, time.perf_counter() - started)

        URLLib3Session.send = send  # type: ignore[method-assign]
        self._undo.append(lambda: setattr(URLLib3Session, "send", original))

    def _record_aws(self, request: Any, seconds: float) -> None:
        target = request.headers.get("X-Amz-Target") or b""
        target = target.decode() if isinstance(target, bytes) else str(target)
        if not target.startswith("DynamoDB_"):
            with self._lock:
                self._sample.other_http_seconds += seconds
            return
        operation = target.rsplit(".", 1)[-1]
        body = request.body or b""
        size = len(body.encode() if isinstance(body, str) else body)
        with self._lock:
            self._sample.dynamo_requests[operation] += 1
            self._sample.dynamo_seconds += seconds
            if operation in WRITE_OPERATIONS:
                self._sample.dynamo_write_bytes += size

    def _patch_httpx(self) -> None:
        for name in ("httpx", "httpx2"):
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            self._patch_transport(module.HTTPTransport)

    def _patch_transport(self, transport_class: Any) -> None:
        original = transport_class.handle_request
        meter = self

        def handle_request(transport: Any, request: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(transport, request)
            finally:
                meter._record_http(request, time.perf_counter() - started)

        transport_class.handle_request = handle_request
        self._undo.append(lambda: setattr(transport_class, "handle_request", original))

    def _record_http(self, request: Any, seconds: float) -> None:
        is_llm = (request.url.host, request.url.port) == self._llm_netloc
        with self._lock:
            if is_llm:
                self._sample.llm_calls += 1
                self._sample.llm_seconds += seconds
            else:
                self._sample.other_http_seconds += seconds
