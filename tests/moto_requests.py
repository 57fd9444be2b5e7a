"""What in-process moto receives, seen from the one place every request passes through.

Every boto3 request made under ``mock_aws`` reaches moto's ``BotocoreStubber.process_request``. Two
things are done there, each as a fixture:

- `atomic_requests` serialises request handling. DynamoDB applies each request atomically;
  in-process moto does not when threads interleave inside one request (its transactions check,
  write and roll back a copy of the whole table with no lock, so a rollback can undo another
  thread's committed write). Serialising restores the service's guarantee; writers still race
  *between* requests (read the thread, then write), which is the contention tests care about.
- `aws_requests` records which operation every request was and whether moto accepted it, so a
  test can say "nothing was written" without scanning every table, bucket and state machine.

Import the fixtures into a test module or conftest to use them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import pytest
from moto.core.botocore_stubber import BotocoreStubber

# Operations that only read. Anything else (including an operation not listed here) counts as a write.
_READS = {
    "dynamodb": {"GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems", "DescribeTable"},
    "states": {"DescribeExecution", "DescribeStateMachine", "GetExecutionHistory", "ListExecutions"},
    "s3": {"GET", "HEAD"},
}


@dataclass(frozen=True)
class AwsRequest:
    service: str  # dynamodb, states, s3, ...
    operation: str  # PutItem, StartExecution, ... (for S3 the HTTP method)
    target: str  # the table, state machine, execution or bucket/key it names, when it names one
    status: int = 200  # what moto answered; a refused write changed nothing

    @property
    def is_write(self) -> bool:
        """A request that changed something: a mutating operation the service accepted. Lambda's
        Invoke is not one: it is how Step Functions runs our own functions, whose requests count."""
        if self.service.startswith("lambda."):
            return False
        return self.operation not in _READS.get(self.service, set()) and self.status < 400

    def __str__(self) -> str:
        return f"{self.service}:{self.operation}({self.target})"


@dataclass
class AwsRequestLog:
    """Every request moto handled since the log was made or last cleared, in order."""

    requests: list[AwsRequest] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, request: AwsRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def writes(self, *, ignore_targets: tuple[str, ...] = ()) -> list[AwsRequest]:
        with self._lock:
            return [
                request
                for request in self.requests
                if request.is_write and not any(part in request.target for part in ignore_targets)
            ]


def describe(request: Any) -> AwsRequest:
    """The service, operation and target of a botocore request, from its headers, URL and body."""
    raw_target = request.headers.get("X-Amz-Target") or b""
    target_header = raw_target.decode() if isinstance(raw_target, bytes) else str(raw_target)
    if target_header:
        prefix, _, operation = target_header.rpartition(".")
        service = (
            "dynamodb" if prefix.startswith("DynamoDB") else "states" if "StepFunctions" in prefix else prefix
        )
        return AwsRequest(service, operation, _named_target(request.body))
    url = urlsplit(request.url)
    if url.hostname and (".s3." in url.hostname or url.hostname.startswith("s3.")):
        return AwsRequest("s3", str(request.method), url.hostname.split(".s3.")[0] + url.path)
    return AwsRequest(url.hostname or "unknown", str(request.method), url.path)


def _named_target(body: Any) -> str:
    try:
        parsed = json.loads(body or b"{}")
    except (ValueError, TypeError):
        return ""
    if not isinstance(parsed, dict):
        return ""
    names = [
        str(parsed[key]) for key in ("TableName", "stateMachineArn", "executionArn", "name") if key in parsed
    ]
    for item in parsed.get("TransactItems", []):
        names += [str(action.get("TableName", "")) for action in item.values() if isinstance(action, dict)]
    names += list(parsed.get("RequestItems", {}))
    return ",".join(dict.fromkeys(names))


@pytest.fixture(name="atomic_requests")
def atomic_requests_fixture(monkeypatch: pytest.MonkeyPatch) -> None:
    """Moto handles one request at a time, as DynamoDB applies each request atomically."""
    lock = threading.Lock()
    process = BotocoreStubber.process_request

    def one_at_a_time(self: BotocoreStubber, request: Any) -> Any:
        with lock:
            return process(self, request)

    monkeypatch.setattr(BotocoreStubber, "process_request", one_at_a_time)


@pytest.fixture(name="aws_requests")
def aws_requests_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsRequestLog]:
    """A log of every request moto handles during the test."""
    log = AwsRequestLog()
    process = BotocoreStubber.process_request

    def recorded(self: BotocoreStubber, request: Any) -> Any:
        response = process(self, request)
        status = int(response[0]) if response is not None else 0
        log.record(replace(describe(request), status=status))
        return response

    monkeypatch.setattr(BotocoreStubber, "process_request", recorded)
    yield log


__all__ = ["AwsRequest", "AwsRequestLog", "atomic_requests_fixture", "aws_requests_fixture", "describe"]
