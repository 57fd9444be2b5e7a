"""Canary for the one private moto API we patch: if a moto upgrade moves Lambda invocation away
from `LambdaSimpleBackend.invoke`, these tests fail instead of the state machine silently echoing."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from tests.support import poll_until
from twelvefactor.local.lambda_bridge import LambdaBridge, function_name_of

ROLE = "arn:aws:iam::123456789012:role/sfn"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:Doubler"


@pytest.fixture
def sfn(aws: None) -> Any:
    return boto3.client("stepfunctions", region_name="us-east-1")


def _run(sfn: Any, definition: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    machine = sfn.create_state_machine(name="canary", definition=json.dumps(definition), roleArn=ROLE)
    execution = sfn.start_execution(stateMachineArn=machine["stateMachineArn"], input=json.dumps(payload))
    described = poll_until(
        lambda: sfn.describe_execution(executionArn=execution["executionArn"]),
        lambda described: described["status"] != "RUNNING",
    )
    return dict(described)


def _task_machine() -> dict[str, Any]:
    return {
        "StartAt": "Double",
        "States": {
            "Double": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke",
                "Parameters": {"FunctionName": FUNCTION_ARN, "Payload": {"n.$": "$.n"}},
                "ResultSelector": {"n.$": "$.Payload.n"},
                "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Caught", "ResultPath": "$.error"}],
                "End": True,
            },
            "Caught": {"Type": "Pass", "End": True},
        },
    }


def test_state_machine_lambda_task_runs_the_registered_python_handler(sfn: Any) -> None:
    # Given a bridge routing the Doubler function to a Python handler
    bridge = LambdaBridge({"Doubler": lambda event, _context: {"n": event["n"] * 2}})
    # When moto's interpreter executes a Lambda task against that function
    with bridge.installed():
        described = _run(sfn, _task_machine(), {"n": 21})
    # Then the handler's answer is the task's result (moto's default would echo the input)
    assert described["status"] == "SUCCEEDED"
    assert json.loads(described["output"]) == {"n": 42}
    assert bridge.invocations == [("Doubler", {"n": 21})]


def test_a_raising_handler_is_an_unhandled_lambda_error_that_catch_sees(sfn: Any) -> None:
    # Given a handler that fails
    def explode(_event: dict[str, Any], _context: Any) -> None:
        raise RuntimeError("boom")

    # When the task runs
    with LambdaBridge({"Doubler": explode}).installed():
        described = _run(sfn, _task_machine(), {"n": 1})
    # Then the state machine's Catch received Lambda's error shape
    output = json.loads(described["output"])
    assert described["status"] == "SUCCEEDED"
    assert "RuntimeError" in output["error"]["Cause"] and "boom" in output["error"]["Cause"]


def test_function_names_are_read_from_arns_and_plain_names() -> None:
    assert function_name_of(FUNCTION_ARN) == "Doubler"
    assert function_name_of(FUNCTION_ARN + ":live") == "Doubler"
    assert function_name_of("Doubler") == "Doubler"
