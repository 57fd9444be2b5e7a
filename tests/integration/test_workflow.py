"""The Step Functions workflow against moto's interpreter, which really runs the state machines."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from tests.integration.conftest import REGION
from tests.support import poll_until
from twelvefactor.adapters.ports import WorkflowError
from twelvefactor.adapters.stepfunctions import StepFunctionsWorkflow, execution_name
from twelvefactor.local.lambda_bridge import LambdaBridge

pytestmark = pytest.mark.integration

ROLE = "arn:aws:iam::123456789012:role/twelvefactor-test-sfn"
NOTIFY_ARN = f"arn:aws:lambda:{REGION}:123456789012:function:Notify"

PASS_MACHINE = {"StartAt": "Echo", "States": {"Echo": {"Type": "Pass", "End": True}}}
WAIT_MACHINE = {"StartAt": "Hold", "States": {"Hold": {"Type": "Wait", "Seconds": 3600, "End": True}}}
# The shape of the real pause: a Lambda task that receives the token and returns at once.
PAUSE_MACHINE = {
    "StartAt": "AskHuman",
    "States": {
        "AskHuman": {
            "Type": "Task",
            "Resource": "arn:aws:states:::lambda:invoke.waitForTaskToken",
            "Parameters": {
                "FunctionName": NOTIFY_ARN,
                "Payload": {"thread_id.$": "$.thread_id", "task_token.$": "$$.Task.Token"},
            },
            "TimeoutSeconds": 3600,
            "End": True,
        }
    },
}


@pytest.fixture
def sfn(aws: None) -> Any:
    return boto3.client("stepfunctions", region_name=REGION)


@pytest.fixture
def machine(sfn: Any) -> Callable[[dict[str, Any]], StepFunctionsWorkflow]:
    """Creates a state machine from a definition and returns the workflow adapter bound to it."""

    def create(definition: dict[str, Any]) -> StepFunctionsWorkflow:
        created = sfn.create_state_machine(name="agent", definition=json.dumps(definition), roleArn=ROLE)
        return StepFunctionsWorkflow(sfn, created["stateMachineArn"])

    return create


def executions(sfn: Any, workflow: StepFunctionsWorkflow) -> list[dict[str, Any]]:
    listed = sfn.list_executions(stateMachineArn=workflow._state_machine_arn)["executions"]
    return [dict(execution) for execution in listed]


def status_of(sfn: Any, arn: str, until: str) -> dict[str, Any]:
    return dict(
        poll_until(
            lambda: sfn.describe_execution(executionArn=arn), lambda described: described["status"] == until
        )
    )


def test_start_runs_one_execution_named_after_the_launch_with_only_the_thread_id(
    sfn: Any, machine: Callable[[dict[str, Any]], StepFunctionsWorkflow]
) -> None:
    # Given a workflow on a trivial Pass machine
    workflow = machine(PASS_MACHINE)

    # When a launch is started, runs to the end, and is started again (a replayed trigger)
    first = workflow.start("t-1", 0)
    finished = status_of(sfn, first, until="SUCCEEDED")
    again = workflow.start("t-1", 0)

    # Then both calls name the same single execution, whose input is the thread id and nothing else
    assert again == first
    assert [execution["executionArn"] for execution in executions(sfn, workflow)] == [first]
    assert finished["name"] == "t-1-0"
    assert json.loads(finished["input"]) == {"thread_id": "t-1"}


def test_a_repeated_start_of_a_running_launch_is_the_same_execution(
    sfn: Any, machine: Callable[[dict[str, Any]], StepFunctionsWorkflow]
) -> None:
    # Given a launch still running (a Wait machine)
    workflow = machine(WAIT_MACHINE)
    first = workflow.start("t-2", 4)

    # When it is started again, and then the thread's next launch is started
    again = workflow.start("t-2", 4)
    next_launch = workflow.start("t-2", 9)

    # Then the repeat is the same execution and only the new launch is a second run
    assert again == first
    assert next_launch != first
    assert sorted(execution["name"] for execution in executions(sfn, workflow)) == ["t-2-4", "t-2-9"]
    workflow.cancel("t-2")


def test_resume_with_an_unknown_token_is_a_workflow_error_that_does_not_echo_the_token(
    machine: Callable[[dict[str, Any]], StepFunctionsWorkflow],
) -> None:
    # Given a workflow and a token no execution ever issued
    workflow = machine(PASS_MACHINE)
    token = "AAAA-not-a-real-task-token-ZZZZ"

    # When it is used to resume or to fail a wait, then each is a WorkflowError naming the problem
    with pytest.raises(WorkflowError, match="InvalidToken") as resumed:
        workflow.resume(token, {"thread_id": "t-3"})
    with pytest.raises(WorkflowError, match="InvalidToken") as failed:
        workflow.fail(token, "Rejected", "nobody asked")
    assert token not in str(resumed.value) + str(failed.value)


def test_resume_continues_the_paused_execution_and_a_reused_token_is_refused(
    sfn: Any, machine: Callable[[dict[str, Any]], StepFunctionsWorkflow]
) -> None:
    # Given an execution paused in a waitForTaskToken task whose Lambda captured the token
    tokens: list[str] = []
    bridge = LambdaBridge({"Notify": lambda event, _context: tokens.append(event["task_token"])})
    with bridge.installed():
        workflow = machine(PAUSE_MACHINE)
        arn = workflow.start("t-4", 0)
        poll_until(lambda: tokens, bool)

        # When the human's answer resumes it
        workflow.resume(tokens[0], {"thread_id": "t-4"})

        # Then the execution finishes with that output, and the same token cannot resume it twice
        finished = status_of(sfn, arn, until="SUCCEEDED")
        assert json.loads(finished["output"]) == {"thread_id": "t-4"}
        with pytest.raises(WorkflowError, match="InvalidToken"):
            workflow.resume(tokens[0], {"thread_id": "t-4"})


def test_fail_ends_the_paused_task_with_the_given_error(
    sfn: Any, machine: Callable[[dict[str, Any]], StepFunctionsWorkflow]
) -> None:
    # Given an execution paused for a token
    tokens: list[str] = []
    with LambdaBridge({"Notify": lambda event, _context: tokens.append(event["task_token"])}).installed():
        workflow = machine(PAUSE_MACHINE)
        arn = workflow.start("t-5", 0)
        poll_until(lambda: tokens, bool)

        # When the wait is failed
        workflow.fail(tokens[0], "Rejected", "the webhook reported a failure")

        # Then the execution fails with that error (the real machine's Catch routes it to the reducer)
        failed = status_of(sfn, arn, until="FAILED")
        assert failed["error"] == "Rejected"


def test_cancel_stops_the_threads_running_execution_only(
    sfn: Any, machine: Callable[[dict[str, Any]], StepFunctionsWorkflow]
) -> None:
    # Given running executions for thread "t-6" and for thread "t-6-1" (whose name starts alike)
    workflow = machine(WAIT_MACHINE)
    target = workflow.start("t-6", 2)
    bystander = workflow.start("t-6-1", 0)

    # When thread "t-6" is cancelled
    workflow.cancel("t-6")

    # Then its execution is aborted and the other thread's keeps running; cancelling again is harmless
    status_of(sfn, target, until="ABORTED")
    assert sfn.describe_execution(executionArn=bystander)["status"] == "RUNNING"
    workflow.cancel("t-6")
    workflow.cancel("t-6-1")
    status_of(sfn, bystander, until="ABORTED")


def test_execution_names_fit_step_functions_limits() -> None:
    # Given the longest thread id and sequence number there can be, the name stays within 80 characters
    assert len(execution_name("x" * 64, 2**31)) <= 80
    # A thread id Step Functions could not carry in a name is refused before any call
    for bad in ["has space", "slash/inside", "", "y" * 65]:
        with pytest.raises(ValueError):
            execution_name(bad, 0)
