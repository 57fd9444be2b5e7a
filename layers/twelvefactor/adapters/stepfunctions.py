"""The workflow on Step Functions: one execution per launch, paused and resumed by task tokens.

Names. An execution is named ``<thread_id>-<launch_seq>`` (a thread id is at most 64 characters
of ``[A-Za-z0-9_-]``, so the name stays within Step Functions' 80 characters and allowed set).
Starting it again is not a second run: Step Functions returns the running execution for the same
name and input, and refuses a finished one with ExecutionAlreadyExists, which here means "already
started" and yields that execution's ARN. The input is ``{"thread_id": ...}`` only: the thread
lives in DynamoDB, and a payload cap of 256 KB must never meet a long thread.

Cancel. The thread id is all a caller has, so `cancel` lists the machine's RUNNING executions and
stops those named after the thread. That costs one ListExecutions page per thousand paused
threads, which is acceptable for an operation people trigger by hand; it needs no stored ARN that
could go stale.

Task tokens are credentials for a paused execution: they never appear in an error message here.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from ..settings import WorkflowSettings
from .ports import TaskTokenRefused, WorkflowError

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient

MAX_EXECUTION_NAME = 80
_THREAD_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Step Functions caps the error name at 256 characters and the cause at 32,768.
MAX_ERROR = 256
MAX_CAUSE = 32_768

_TOKEN_PROBLEMS = {
    "InvalidToken": "the task token is unknown, malformed or already used",
    "TaskTimedOut": "the wait already timed out",
    "TaskDoesNotExist": "the waiting task no longer exists (its execution has ended)",
}


class StepFunctionsError(WorkflowError):
    """Step Functions refused a call; `code` is its error code (e.g. InvalidToken, TaskTimedOut)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class TokenRefused(StepFunctionsError, TaskTokenRefused):
    """Step Functions refused a task token (InvalidToken, TaskTimedOut, TaskDoesNotExist)."""


def execution_name(thread_id: str, launch_seq: int) -> str:
    if not _THREAD_ID.match(thread_id):
        raise ValueError(f"not a thread id: {thread_id!r}")
    if launch_seq < 0:
        raise ValueError(f"launch_seq must be >= 0, got {launch_seq}")
    name = f"{thread_id}-{launch_seq}"
    assert len(name) <= MAX_EXECUTION_NAME  # 64 + 1 + at most 10 digits of a 32-bit sequence number
    return name


def _is_execution_of(name: str, thread_id: str) -> bool:
    # Thread ids may contain "-": "a-1-5" belongs to thread "a-1", not to thread "a".
    owner, _, seq = name.rpartition("-")
    return owner == thread_id and seq.isdigit()


class StepFunctionsWorkflow:
    def __init__(self, client: SFNClient, state_machine_arn: str) -> None:
        self._client = client
        self._state_machine_arn = state_machine_arn

    @classmethod
    def from_settings(cls, settings: WorkflowSettings) -> StepFunctionsWorkflow:
        return cls(boto3.client("stepfunctions"), settings.state_machine_arn)

    def start(self, thread_id: str, launch_seq: int) -> str:
        name = execution_name(thread_id, launch_seq)
        try:
            started = self._client.start_execution(
                stateMachineArn=self._state_machine_arn, name=name, input=json.dumps({"thread_id": thread_id})
            )
        except ClientError as error:
            if _code(error) == "ExecutionAlreadyExists":
                return self._execution_arn(name)
            raise _workflow_error("StartExecution", error) from error
        except BotoCoreError as error:
            raise WorkflowError(f"StartExecution for thread {thread_id} failed: {error}") from error
        return started["executionArn"]

    def resume(self, task_token: str, output: dict[str, object]) -> None:
        try:
            self._client.send_task_success(taskToken=task_token, output=json.dumps(output))
        except ClientError as error:
            raise _workflow_error("SendTaskSuccess", error) from error
        except BotoCoreError as error:
            raise WorkflowError(f"SendTaskSuccess failed: {error}") from error

    def fail(self, task_token: str, error: str, cause: str) -> None:
        try:
            self._client.send_task_failure(
                taskToken=task_token, error=error[:MAX_ERROR], cause=cause[:MAX_CAUSE]
            )
        except ClientError as refused:
            raise _workflow_error("SendTaskFailure", refused) from refused
        except BotoCoreError as refused:
            raise WorkflowError(f"SendTaskFailure failed: {refused}") from refused

    def cancel(self, thread_id: str) -> None:
        try:
            for arn in self._running(thread_id):
                self._stop(arn, thread_id)
        except ClientError as error:
            raise _workflow_error("StopExecution", error) from error
        except BotoCoreError as error:
            raise WorkflowError(f"cancelling the executions of thread {thread_id} failed: {error}") from error

    def running(self, thread_id: str) -> bool:
        try:
            return bool(self._running(thread_id))
        except ClientError as error:
            raise _workflow_error("ListExecutions", error) from error
        except BotoCoreError as error:
            raise WorkflowError(f"listing the executions of thread {thread_id} failed: {error}") from error

    def _running(self, thread_id: str) -> list[str]:
        pages = self._client.get_paginator("list_executions").paginate(
            stateMachineArn=self._state_machine_arn, statusFilter="RUNNING"
        )
        return [
            execution["executionArn"]
            for page in pages
            for execution in page["executions"]
            if _is_execution_of(execution["name"], thread_id)
        ]

    def _stop(self, execution_arn: str, thread_id: str) -> None:
        try:
            self._client.stop_execution(
                executionArn=execution_arn, error="Cancelled", cause=f"thread {thread_id} was cancelled"
            )
        except ClientError as error:
            if _code(error) != "ExecutionDoesNotExist":  # it ended between the listing and now
                raise

    def _execution_arn(self, name: str) -> str:
        # arn:aws:states:<region>:<account>:stateMachine:<machine> -> ...:execution:<machine>:<name>
        return self._state_machine_arn.replace(":stateMachine:", ":execution:", 1) + f":{name}"


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", "Unknown"))


def _workflow_error(operation: str, error: ClientError) -> StepFunctionsError:
    code = _code(error)
    if code in _TOKEN_PROBLEMS:
        # The service's own message may quote the token; ours never does.
        return TokenRefused(f"{operation} refused: {_TOKEN_PROBLEMS[code]} ({code})", code)
    message = error.response.get("Error", {}).get("Message", "")
    return StepFunctionsError(f"{operation} failed with {code}: {message}", code)
