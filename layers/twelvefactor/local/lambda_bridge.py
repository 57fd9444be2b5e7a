"""Route moto's Lambda invocations to our real handlers, in-process.

moto's Step Functions interpreter executes our ASL for real, but its Docker-free Lambda backend
(`LambdaSimpleBackend`, chosen with ``{"lambda": {"use_docker": False}}``) only echoes payloads.
moto has no public hook for running Python code instead, so this module patches that backend's
``invoke`` — the one place in the project that touches a private moto API. A canary test
(`tests/integration/test_lambda_bridge.py`) fails loudly if a moto upgrade moves it.

Handler failures are reported the way Lambda reports them (``x-amz-function-error: Unhandled``
and an ``errorType``/``errorMessage`` body), so the state machine's Retry and Catch see them.
"""

from __future__ import annotations

import json
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from moto.awslambda_simple.models import LambdaSimpleBackend

Handler = Callable[[dict[str, Any], Any], Any]


@dataclass
class LambdaContext:
    """The attributes of Lambda's context object that Powertools reads."""

    function_name: str
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


def function_name_of(name_or_arn: str) -> str:
    """`arn:aws:lambda:region:account:function:NAME[:qualifier]` or a plain name -> NAME."""
    parts = name_or_arn.split(":")
    return parts[6] if len(parts) >= 7 and parts[5] == "function" else name_or_arn


def invoke_handler(name: str, handler: Handler, body: Any, response_headers: dict[str, str]) -> bytes:
    event = json.loads(body) if body else {}
    try:
        result = handler(event, LambdaContext(function_name=name))
    except Exception as error:
        response_headers["x-amz-function-error"] = "Unhandled"
        return json.dumps(
            {
                "errorType": type(error).__name__,
                "errorMessage": str(error),
                "stackTrace": traceback.format_tb(error.__traceback__),
            }
        ).encode()
    return json.dumps(result).encode()


class LambdaBridge:
    """A name -> handler table consulted by moto's Lambda backend while installed.

    Invocations from concurrent executions overlap here, standing in for the many execution
    environments Lambda would run them in. That is sound for the reducer and Notify: what they
    decide comes from their event and the store, and they make no idempotency call (whose
    Powertools layer the process's one runtime would share); the gateway's functions do, so it
    serves them one at a time. Overlapping invocations here do share the Logger's keys.
    """

    def __init__(self, handlers: Mapping[str, Handler] | None = None) -> None:
        self._handlers: dict[str, Handler] = dict(handlers or {})
        self._lock = threading.Lock()
        self.invocations: list[tuple[str, dict[str, Any]]] = []

    def register(self, function_name: str, handler: Handler) -> None:
        self._handlers[function_name] = handler

    def handler_for(self, name_or_arn: str) -> Handler | None:
        return self._handlers.get(function_name_of(name_or_arn))

    @contextmanager
    def installed(self) -> Iterator[LambdaBridge]:
        original = LambdaSimpleBackend.invoke
        bridge = self

        def invoke(
            self: LambdaSimpleBackend,
            function_name: str,
            qualifier: str | None,
            body: Any,
            headers: Any,
            response_headers: Any,
        ) -> str | bytes | None:
            handler = bridge.handler_for(function_name)
            if handler is None:
                return original(self, function_name, qualifier, body, headers, response_headers)
            name = function_name_of(function_name)
            with bridge._lock:
                bridge.invocations.append((name, json.loads(body) if body else {}))
            return invoke_handler(name, handler, body, response_headers)

        LambdaSimpleBackend.invoke = invoke  # type: ignore[method-assign]
        try:
            yield self
        finally:
            LambdaSimpleBackend.invoke = original  # type: ignore[method-assign]
