"""Each function of the local stack runs as its own role, and moto refuses what that role is not granted.

The roles are the ones `sam deploy` would generate (template.yaml through the SAM transform), so a
grant missing from the template fails here, as it would on AWS, instead of after a deploy.
"""

from __future__ import annotations

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError

from tests.e2e.helpers import ConversationScripts, intent, opening, pending_wait
from tests.support import poll_until
from twelvefactor.adapters.ports import WorkflowError
from twelvefactor.local.handlers import function_ids
from twelvefactor.local.stack import REGION, LocalStack

pytestmark = pytest.mark.e2e


def _waiting_thread(stack: LocalStack, scripts: ConversationScripts) -> str:
    text = scripts.add(
        opening("Please ship the backend"),
        intent("list_git_tags"),
        intent("deploy_backend", tag="v1.2.3", environment="production"),
    )
    response = httpx.post(f"{stack.api_url}/threads", json={"agent": "deploybot", "message": text})
    assert response.status_code == 202, response.text
    thread_id = str(response.json()["thread_id"])
    poll_until(lambda: pending_wait(stack, thread_id), lambda found: found is not None, timeout=60)
    return thread_id


def test_every_function_calls_aws_as_its_own_generated_role(stack: LocalStack) -> None:
    # Given the running stack
    # When each function's runtime asks STS who it is
    callers = {
        logical_id: stack.function_runtimes[logical_id].client("sts").get_caller_identity()["Arn"]
        for logical_id in function_ids(stack.template)
    }
    # Then each is an assumed role named after the role SAM generates for that function
    for logical_id, arn in callers.items():
        assert f":assumed-role/{stack.name}-{logical_id}Role/" in arn, (logical_id, arn)


def test_cancelling_through_the_api_is_granted_to_the_api_function(
    stack: LocalStack, scripts: ConversationScripts
) -> None:
    # Given a thread paused for approval
    thread_id = _waiting_thread(stack, scripts)
    # When it is cancelled with DELETE /threads/{id}, which lists and stops its executions
    response = httpx.delete(f"{stack.api_url}/threads/{thread_id}")
    # Then the Api function's role was allowed every call (states:ListExecutions among them)
    assert response.status_code < 300, response.text
    assert httpx.get(f"{stack.api_url}/threads/{thread_id}").json()["status"] == "cancelled"


def test_a_function_without_the_grant_is_refused_by_moto(
    stack: LocalStack, scripts: ConversationScripts
) -> None:
    # Given a paused thread, and the Slack function's runtime, whose role may start and resume
    # executions but never list or stop them
    thread_id = _waiting_thread(stack, scripts)
    slack = stack.function_runtimes["SlackFunction"]
    # When the Slack function's code tries to cancel the thread's execution
    with pytest.raises(WorkflowError, match="AccessDenied"):
        slack.workflow.cancel(thread_id)
    # Then moto refused it as IAM would, while the stack's administrator may do the same call
    sfn = boto3.client("stepfunctions", endpoint_url=stack.moto_url, region_name=REGION)
    assert sfn.list_executions(stateMachineArn=stack.state_machine_arn, statusFilter="RUNNING")["executions"]


def test_an_unknown_key_is_refused_once_access_control_is_on(stack: LocalStack) -> None:
    # Given credentials no IAM user or assumed role of the stack holds
    stranger = boto3.client(
        "dynamodb",
        endpoint_url=stack.moto_url,
        region_name=REGION,
        aws_access_key_id="AKIASTRANGER0000000",
        aws_secret_access_key="nope",
    )
    # When they read a table, Then moto refuses them
    with pytest.raises(ClientError, match=r"UnrecognizedClientException|InvalidClientTokenId|security token"):
        stranger.describe_table(TableName=stack.physical_name("ThreadsTable"))
