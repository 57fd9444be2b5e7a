"""The local stack's own mechanisms, without starting one: the merged environment of the functions,
and metrics isolation between invocations running at once in one process."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

from twelvefactor import runtime
from twelvefactor.local.handlers import isolated_metrics, load_handlers
from twelvefactor.local.stack import EnvironmentConflict, merged_environment, serial_dynamodb
from twelvefactor.local.template import default_template_path, function_environment, load_template, resource

pytestmark = pytest.mark.e2e

RESOURCES = {
    "ThreadsTable": "threads",
    "IdempotencyTable": "idempotency",
    "PayloadBucket": "bucket",
    # The name template.yaml gives the machine in stack "local" (Notify builds its ARN from it).
    "AgentStateMachine": "arn:aws:states:us-east-1:123456789012:stateMachine:local-agent",
    "AgentStateMachine.Name": "local-agent",
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws",
    "AWS::StackName": "local",
}


def template_with_conflict(tmp_path: Path) -> Path:
    """template.yaml, with one function setting a variable the others set differently."""
    text = default_template_path().read_text()
    body = yaml.load(text, Loader=yaml.BaseLoader)  # only to find the variable; tags stay text below
    assert "EMAIL_FROM_ADDRESS: !Ref EmailFromAddress" in text and body
    changed = text.replace(
        "          EMAIL_FROM_ADDRESS: !Ref EmailFromAddress\n",
        "          EMAIL_FROM_ADDRESS: other@example.com\n",
        1,
    )
    path = tmp_path / "template.yaml"
    path.write_text(changed)
    return path


def test_the_template_functions_merge_into_one_environment_without_conflicts() -> None:
    # Given the real template
    template = load_template()

    # When the functions' environments are merged
    merged = merged_environment(template, RESOURCES)

    # Then every function's own variables are in it, with the value that function would see
    for logical_id in ("ReducerFunction", "NotifyFunction", "ApiFunction", "SlackFunction"):
        for name, value in function_environment(template, logical_id, RESOURCES).items():
            assert merged[name] == value


def test_a_variable_two_functions_set_differently_is_reported_with_both_values(tmp_path: Path) -> None:
    # Given a template where the first function's EMAIL_FROM_ADDRESS differs from the others'
    template = load_template(template_with_conflict(tmp_path))

    # When the environments are merged, Then the conflict names the variable and the values
    with pytest.raises(EnvironmentConflict, match="EMAIL_FROM_ADDRESS") as raised:
        merged_environment(template, RESOURCES)
    assert "'other@example.com'" in str(raised.value) and "'agent@example.com'" in str(raised.value)
    # ... unless the stack sets that variable itself, for every function alike
    assert "EMAIL_FROM_ADDRESS" in merged_environment(template, RESOURCES, overridden={"EMAIL_FROM_ADDRESS"})


def test_each_function_is_loaded_from_its_own_file_under_its_own_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the settings every handler validates at import (its cold start)
    for name, value in {
        "THREADS_TABLE": "t",
        "PAYLOAD_BUCKET": "b",
        "IDEMPOTENCY_TABLE": "i",
        "STATE_MACHINE_ARN": "arn:aws:states:us-east-1:123456789012:stateMachine:m",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)

    # When all of the template's functions are loaded into this one process
    template = load_template()
    try:
        handlers = load_handlers(template)
    finally:
        runtime.reset()  # the handlers built it from this test's environment

    # Then each is the handler of its own functions/<name>/app.py, not the first `app` imported
    modules = {name: sys.modules[handler.__module__] for name, handler in handlers.items()}
    files = {name: Path(str(module.__file__)).parent.name for name, module in modules.items()}
    assert len({module.__name__ for module in modules.values()}) == len(modules)
    code_dirs = {
        logical_id: Path(resource(template, logical_id)["Properties"]["CodeUri"]).name
        for logical_id in handlers
    }
    assert files == code_dirs
    assert {"ReducerFunction", "NotifyFunction", "ApiFunction", "SlackFunction"} <= set(files)


def test_invocations_running_at_once_keep_their_own_metrics() -> None:
    # Given two handlers decorated like ours, loaded while metrics are isolated per thread
    errors: list[BaseException] = []
    with isolated_metrics():
        metrics = Metrics(namespace="Test", service="test")
        slow_has_added, quick_has_flushed = threading.Event(), threading.Event()

        @metrics.log_metrics
        def slow(_event: dict[str, Any], _context: Any) -> None:
            metrics.add_metric(name="Slow", unit=MetricUnit.Count, value=1)
            slow_has_added.set()
            quick_has_flushed.wait(10)

        @metrics.log_metrics
        def quick(_event: dict[str, Any], _context: Any) -> None:
            slow_has_added.wait(10)
            metrics.add_metric(name="Quick", unit=MetricUnit.Count, value=1)

        def run_slow() -> None:
            try:
                slow({}, None)
            except BaseException as error:  # surfaced in the assertion below
                errors.append(error)

        # When the quick one flushes while the slow one is still running on another thread
        worker = threading.Thread(target=run_slow)
        worker.start()
        quick({}, None)
        quick_has_flushed.set()
        worker.join(10)

    # Then the slow one still flushes its own metric: with one shared set, the quick flush would have
    # taken it, and the slow flush would warn "No application metrics to publish" (an error here)
    assert errors == []


def test_the_local_moto_answers_one_dynamodb_request_at_a_time() -> None:
    # Given moto's app behind serial_dynamodb, and requests that would overlap inside it
    inside = {"dynamodb": 0, "other": 0}
    most_inside = {"dynamodb": 0, "other": 0}
    guard = threading.Lock()

    def moto_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        kind = "dynamodb" if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_") else "other"
        with guard:
            inside[kind] += 1
            most_inside[kind] = max(most_inside[kind], inside[kind])
        time.sleep(0.05)
        with guard:
            inside[kind] -= 1
        return [b"{}"]

    serve = serial_dynamodb(moto_app)
    requests = [{"HTTP_X_AMZ_TARGET": "DynamoDB_20120810.TransactWriteItems"}] * 4 + [{}] * 4

    # When they arrive at once, as the handlers' threads send them
    workers = [threading.Thread(target=serve, args=(environ, None)) for environ in requests]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    # Then no two DynamoDB requests overlapped (DynamoDB applies each atomically), while the other
    # services' requests still ran side by side
    assert most_inside == {"dynamodb": 1, "other": 4}
