"""The soak's fixtures: the integration stack (moto, the real state machine and handlers)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from moto.core.botocore_stubber import BotocoreStubber

from tests.integration.conftest import (  # noqa: F401 - fixtures shared with the integration tests
    aws,
    idempotency_table,
    payload_bucket,
    template,
    threads_table,
)
from tests.integration.stack import stack_fixture, webhook_receiver_fixture  # noqa: F401 - fixtures


@pytest.fixture
def atomic_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Moto handles one request at a time, as DynamoDB applies each request atomically; except a
    Lambda invocation (the state machine running a handler), whose own requests take their turns:
    holding the turn through it would deadlock with a handler waiting for its own."""
    lock = threading.Lock()
    process = BotocoreStubber.process_request

    def one_at_a_time(self: BotocoreStubber, request: Any) -> Any:
        if "/invocations" in str(getattr(request, "url", "")):
            return process(self, request)
        with lock:
            return process(self, request)

    monkeypatch.setattr(BotocoreStubber, "process_request", one_at_a_time)
