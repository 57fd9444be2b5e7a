"""X-Ray subsegments for the handlers, only when asked for and installed.

Powertools' `Tracer()` imports the X-Ray SDK when it is constructed, even with tracing disabled:
250-320 ms of every cold start, more than the rest of a trigger handler's imports. Lambda and Step
Functions record their own segments (`Tracing: Active`) without any SDK in the function, so the
layer ships without it, and a handler gets a real Tracer (subsegments, annotations, patched boto3
and httpx) only from a layer built with the `xray` extra and with POWERTOOLS_TRACE_DISABLED not true.
Otherwise it gets `NoTracer`, which has the decorators the handlers use and does nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.util import find_spec
from typing import Any, TypeVar

# Cheap: Powertools' tracing module loads the X-Ray SDK lazily, when a Tracer is constructed.
from aws_lambda_powertools import Tracer

from .settings import TracingSettings

XRAY_SDK = "aws_xray_sdk"
Decorated = TypeVar("Decorated", bound=Callable[..., Any])


class NoTracer:
    """Stands in for Powertools' Tracer where the X-Ray SDK is absent or tracing is disabled."""

    def capture_lambda_handler(self, handler: Decorated) -> Decorated:
        return handler

    def capture_method(self, method: Decorated) -> Decorated:
        return method


def tracer(service: str | None = None) -> Tracer | NoTracer:
    """A Powertools Tracer if tracing is wanted and the X-Ray SDK is installed, else a `NoTracer`."""
    # find_spec only looks the package up on sys.path; it imports nothing.
    if TracingSettings().disabled or find_spec(XRAY_SDK) is None:
        return NoTracer()
    return Tracer(service=service)
