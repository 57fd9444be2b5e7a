"""`twelvefactor invoke`: a template function run in a fresh process against AWS_ENDPOINT_URL.

The endpoint is a moto server on loopback holding the resources the template names; each
invocation is a real `python -m twelvefactor.cli` process, so nothing leaks in from the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.moto_server.threaded_moto_server import ThreadedMotoServer

from twelvefactor.commands.invoke import lambda_environment
from twelvefactor.local.template import Template, state_machine_definition, table_definition

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": REGION}


@pytest.fixture
def endpoint(template: Template) -> Iterator[str]:
    """A moto server with the template's tables, bucket and state machine, named as invoke resolves them."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )
    try:
        dynamodb = session.client("dynamodb", endpoint_url=url)
        for table in ("ThreadsTable", "IdempotencyTable"):
            dynamodb.create_table(**table_definition(template, table, table_name=table))
        session.client("s3", endpoint_url=url).create_bucket(Bucket="payloadbucket")
        functions = {name: f"arn:aws:lambda:{REGION}:123456789012:function:{name}" for name in ("R", "N")}
        definition = state_machine_definition(
            template, {"ReducerFunctionArn": functions["R"], "NotifyFunctionArn": functions["N"]}
        )
        session.client("stepfunctions", endpoint_url=url).create_state_machine(
            name="twelvefactor-local-agent",
            definition=definition,
            roleArn="arn:aws:iam::123456789012:role/sfn",
        )
        yield url
    finally:
        # moto's backends are process-wide: leave nothing behind for the next test.
        urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"))
        server.stop()


def _invoke(endpoint: str, *args: str, **extra_env: str) -> tuple[int, Any, str]:
    """Run the CLI; returns (exit code, the JSON it printed on stdout, stderr)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "THREADS_", "STATE_"))
    }
    env.update(CREDENTIALS, AWS_ENDPOINT_URL=endpoint, POWERTOOLS_TRACE_DISABLED="true", **extra_env)
    completed = subprocess.run(
        [sys.executable, "-m", "twelvefactor.cli", "invoke", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    printed = json.loads(completed.stdout) if completed.stdout.strip() else None
    return completed.returncode, printed, completed.stderr


def _body(result: dict[str, Any]) -> Any:
    return json.loads(result["body"])


def test_the_template_environment_reaches_the_handler(template: Template) -> None:
    # When the Api function's environment is computed for a local run
    environment = lambda_environment(template, "ApiFunction", {}, {"IDEMPOTENCY_TABLE": "mine"})

    # Then Globals and the function's own variables are there, resources resolved to local names,
    # the current environment wins, and an unset optional secret is left out
    assert environment["THREADS_TABLE"] == "ThreadsTable"
    assert environment["PAYLOAD_BUCKET"] == "payloadbucket"
    assert environment["STATE_MACHINE_ARN"].endswith(":stateMachine:twelvefactor-local-agent")
    assert environment["IDEMPOTENCY_TABLE"] == "mine"
    assert "WEBHOOK_SECRET_ARN" not in environment


def test_invoke_runs_the_api_function_against_the_endpoint(endpoint: str) -> None:
    # Given an empty stack behind AWS_ENDPOINT_URL
    code, listed_before, _ = _invoke(endpoint, "ApiFunction", "events/api-list.json")

    # When the launch sample is invoked, then the list sample
    launch_code, launched, stderr = _invoke(endpoint, "ApiFunction", "events/api-launch.json")
    _, listed_after, _ = _invoke(endpoint, "ApiFunction", "events/api-list.json")

    # Then the launch is accepted and the next process sees the thread the previous one stored
    assert (code, _body(listed_before)) == (0, [])
    assert launch_code == 0 and launched["statusCode"] == 202, stderr
    thread_id = _body(launched)["thread_id"]
    assert [item["thread_id"] for item in _body(listed_after)] == [thread_id]
    # And the handler's logs went to stderr, leaving stdout to the result
    assert "thread launched" in stderr


def test_the_current_environment_overrides_the_template(endpoint: str) -> None:
    # When THREADS_TABLE names a table the endpoint does not have
    _code, listed, stderr = _invoke(
        endpoint, "ApiFunction", "events/api-list.json", THREADS_TABLE="elsewhere"
    )

    # Then the handler used it, not the template's ThreadsTable (which exists), and said so with a 503
    assert listed["statusCode"] == 503, stderr
    assert "ResourceNotFoundException" in _body(listed)["message"]


def test_a_handler_error_is_printed_as_lambda_reports_it(endpoint: str) -> None:
    # When the reducer runs for a thread that does not exist
    code, report, _ = _invoke(endpoint, "ReducerFunction", "events/reducer-run.json")

    # Then the exit code is 1 and stdout carries Lambda's error shape
    assert code == 1
    assert report["errorType"] == "ThreadNotFound"


def test_unusable_arguments_exit_2_without_running_anything(endpoint: str, tmp_path: Path) -> None:
    not_json = tmp_path / "event.json"
    not_json.write_text("{nope")
    assert _invoke(endpoint, "NoSuchFunction", "events/api-list.json")[0] == 2
    assert _invoke(endpoint, "ThreadsTable", "events/api-list.json")[0] == 2
    code, printed, stderr = _invoke(endpoint, "ApiFunction", str(not_json))
    assert (code, printed) == (2, None)
    assert "is not JSON" in stderr
