"""A one-state machine for trigger tests: the real waitForTaskToken contract without the reducer.

Its task is routed (LambdaBridge) to the runtime's Notify service, which stores the task token and
contacts the person on the thread's channel; an answer through a trigger must resume it. Triggers
are tested without a model this way; the full loop with the real ASL lives in `stack`.
Import `parking_machine_fixture` into a test module to use the `parking_machine` fixture.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from tests.integration.conftest import ACCOUNT_ID, REGION
from tests.support import poll_until
from twelvefactor import runtime
from twelvefactor.local.lambda_bridge import LambdaBridge

PARK_FUNCTION = "ParkFunction"


def _park(event: dict[str, Any], _context: Any) -> dict[str, Any]:
    runtime.current().notify(event["thread_id"], event["task_token"])
    return {}


def item_count(table: str) -> int:
    return int(boto3.client("dynamodb", region_name=REGION).scan(TableName=table, Select="COUNT")["Count"])


@pytest.fixture(name="parking_machine")
def parking_machine_fixture(aws: None) -> Iterator[str]:
    """ARN of the machine; on teardown paused executions are stopped and all have ended."""
    definition = {
        "StartAt": "Wait for human",
        "States": {
            "Wait for human": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke.waitForTaskToken",
                "Parameters": {
                    "FunctionName": f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{PARK_FUNCTION}",
                    "Payload": {"thread_id.$": "$.thread_id", "task_token.$": "$$.Task.Token"},
                },
                "TimeoutSeconds": 600,
                "End": True,
            }
        },
    }
    sfn = boto3.client("stepfunctions", region_name=REGION)
    arn: str = sfn.create_state_machine(
        name="parking", definition=json.dumps(definition), roleArn=f"arn:aws:iam::{ACCOUNT_ID}:role/sfn"
    )["stateMachineArn"]
    with LambdaBridge({PARK_FUNCTION: _park}).installed():
        yield arn
        # Executions run on moto's threads: stop the paused ones and let all end before moto goes.
        for execution in sfn.list_executions(stateMachineArn=arn, statusFilter="RUNNING")["executions"]:
            sfn.stop_execution(executionArn=execution["executionArn"])
        poll_until(
            lambda: sfn.list_executions(stateMachineArn=arn, statusFilter="RUNNING")["executions"],
            lambda running: not running,
        )


def executions(machine_arn: str) -> list[dict[str, Any]]:
    sfn = boto3.client("stepfunctions", region_name=REGION)
    found = sfn.list_executions(stateMachineArn=machine_arn)["executions"]
    return [dict(sfn.describe_execution(executionArn=execution["executionArn"])) for execution in found]


__all__ = ["executions", "item_count", "parking_machine_fixture"]
