"""Handlers get Powertools' Tracer only when tracing is wanted and the X-Ray SDK is installed."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from aws_lambda_powertools import Tracer
from pydantic import ValidationError

from twelvefactor import tracing


@pytest.fixture
def tracing_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    # Outside Lambda (no LAMBDA_TASK_ROOT) a real Tracer disables itself, so it patches no library here.
    monkeypatch.delenv("POWERTOOLS_TRACE_DISABLED", raising=False)
    monkeypatch.delenv("LAMBDA_TASK_ROOT", raising=False)


def test_with_the_sdk_installed_and_tracing_wanted_handlers_get_the_powertools_tracer(
    tracing_enabled: None,
) -> None:
    # Given the dev venv, which has the X-Ray SDK (the xray extra's layer), and tracing not disabled
    # When a handler asks for its tracer
    chosen = tracing.tracer(service="slack")
    # Then it is Powertools' own, with the service name
    assert isinstance(chosen, Tracer)
    assert chosen.service == "slack"


def test_without_the_sdk_handlers_get_the_no_op_tracer(
    tracing_enabled: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a layer built without the xray extra: the SDK cannot be imported (None in sys.modules)
    monkeypatch.setitem(sys.modules, tracing.XRAY_SDK, None)
    # When a handler asks for its tracer
    chosen = tracing.tracer(service="slack")
    # Then it gets the stand-in rather than a Tracer that would fail to import the SDK
    assert isinstance(chosen, tracing.NoTracer)


@pytest.mark.parametrize("value", ["true", "1", "TRUE", "yes"])
def test_disabled_tracing_gives_the_no_op_tracer_even_with_the_sdk(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the SDK installed but tracing disabled, spelled any way Powertools accepts
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", value)
    # When a handler asks for its tracer
    chosen = tracing.tracer()
    # Then the SDK's import is not paid for
    assert isinstance(chosen, tracing.NoTracer)


def test_a_malformed_trace_switch_is_an_error_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a value that is neither true nor false
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "sometimes")
    # When a handler asks for its tracer, then the cold start fails saying which variable is wrong
    with pytest.raises(ValidationError, match="POWERTOOLS_TRACE_DISABLED") as raised:
        tracing.tracer()
    assert raised.value.errors()[0]["type"] == "bool_parsing"


def test_the_no_op_tracer_leaves_decorated_functions_as_they_are() -> None:
    # Given the no-op tracer and a handler and a method
    no_tracer = tracing.NoTracer()

    def handler(event: dict[str, Any], context: object) -> dict[str, Any]:
        return {"seen": event}

    def method(x: int) -> int:
        return x + 1

    # When they are decorated the way handlers decorate them
    # Then the very same functions come back, so calls behave exactly as undecorated
    assert no_tracer.capture_lambda_handler(handler) is handler
    assert no_tracer.capture_method(method) is method
