"""deploybot through the whole local stack: signed Slack requests and the REST API in, Step Functions
pausing on a task token for a person, DynamoDB holding the thread, Slack and SES carrying the replies.

Everything is observed from outside, as an operator would: HTTP to the gateway, boto3 against the
moto server, the Slack stand-in's record, the fake deployment service's own list of deploys.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import httpx
import pytest

from tests.e2e.helpers import (
    ConversationScripts,
    aws,
    execution,
    intent,
    opening,
    pending_wait,
    stored_event_types,
    thread_items,
)
from tests.support import poll_until
from twelvefactor import cli
from twelvefactor.adapters.dynamodb_store import DynamoThreadStore
from twelvefactor.adapters.ports import ThreadMeta
from twelvefactor.commands.threads import ThreadsApi
from twelvefactor.core.events import Event, ToolResult, ToolResultData, UserMessage, UserMessageData
from twelvefactor.local.fake_openai import FakeOpenAI
from twelvefactor.local.slack_standin import SlackCall
from twelvefactor.local.stack import (
    REGION,
    SLACK_CHANNEL,
    SLACK_TEAM,
    LlmEndpoint,
    LocalStack,
    PortInUse,
    SlackUser,
    StackError,
)
from twelvefactor.settings import StoreSettings
from twelvefactor.triggers.slack import APPROVE_ACTION, REJECT_ACTION

pytestmark = pytest.mark.e2e

NEWEST_TAG = "v1.2.3"  # the fake deployment service's newest tag


# What code writes when the deploy succeeded (deploybot's tools complete the turn themselves).
DEPLOYED = f"Deployed backend {NEWEST_TAG} to production (deployment dep-"


def deploy_script(scripts: ConversationScripts, text: str) -> str:
    """deploybot's happy path for one conversation: list tags, deploy to production (code reports)."""
    return scripts.add(
        opening(text),
        intent("list_git_tags"),
        intent("deploy_backend", tag=NEWEST_TAG, environment="production"),
    )


def deploys(stack: LocalStack) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = httpx.get(f"{stack.services_url}/deploys").json()["deploys"]
    return found


def status_of(stack: LocalStack, thread_id: str) -> str:
    return str(httpx.get(f"{stack.api_url}/threads/{thread_id}").json()["status"])


def wait_for_status(stack: LocalStack, thread_id: str, wanted: str) -> None:
    poll_until(lambda: status_of(stack, thread_id), lambda status: status == wanted, timeout=60)


def slack_thread_messages(stack: LocalStack, thread_ts: str) -> list[SlackCall]:
    return [
        call for call in stack.slack.messages(SLACK_CHANNEL) if call.arguments.get("thread_ts") == thread_ts
    ]


def linked_thread(stack: LocalStack, thread_ts: str) -> str | None:
    """The thread the Slack conversation is linked to, read from DynamoDB's link item."""
    item = aws(stack, "dynamodb").get_item(
        TableName=stack.physical_name("ThreadsTable"),
        Key={"pk": {"S": f"SLACK#{SLACK_TEAM}#{SLACK_CHANNEL}#{thread_ts}"}, "sk": {"S": "LINK"}},
    )
    return item["Item"]["thread_id"]["S"] if "Item" in item else None


# --- launched from Slack, approved with a Slack button -------------------------------------------------


def test_a_signed_slack_mention_pauses_for_approval_and_a_slack_click_finishes_the_deploy(
    stack: LocalStack, scripts: ConversationScripts
) -> None:
    # Given deploybot's model will list tags, ask to deploy the newest to production, then report
    text = deploy_script(scripts, "Can you deploy the backend?")
    deploys_before = len(deploys(stack))

    # When a person mentions the app in Slack (a correctly signed app_mention through the gateway)
    response, thread_ts = stack.slack_user.mention(text)

    # Then Slack gets its quick 200 and the conversation is linked to a new thread in DynamoDB
    assert response.status_code == 200
    thread_id = poll_until(lambda: linked_thread(stack, thread_ts), lambda found: found is not None)
    assert thread_id is not None
    # ... which pauses for approval: the task token waits in the WAIT item, the execution is RUNNING
    poll_until(
        lambda: stored_event_types(stack, thread_id), lambda types: types[-1:] == ["approval_requested"]
    )
    assert stored_event_types(stack, thread_id) == [
        "user_message",
        "tool_call",
        "tool_result",
        "tool_call",
        "approval_requested",
    ]
    wait = poll_until(lambda: pending_wait(stack, thread_id), lambda found: found is not None)
    assert wait is not None and json.loads(wait["wait"])["kind"] == "approval"
    assert execution(stack, thread_id)["status"] == "RUNNING"
    # ... and the Slack thread shows the approval request with Approve and Reject buttons for this thread
    request = poll_until(lambda: slack_thread_messages(stack, thread_ts), lambda calls: len(calls) == 1)[0]
    buttons = [
        element
        for block in request.arguments["blocks"]
        if block["type"] == "actions"
        for element in block["elements"]
    ]
    assert [button["action_id"] for button in buttons] == [APPROVE_ACTION, REJECT_ACTION]
    assert all(json.loads(button["value"])["thread_id"] == thread_id for button in buttons)
    assert "deploy_backend" in request.arguments["text"] and NEWEST_TAG in request.arguments["text"]
    assert len(deploys(stack)) == deploys_before  # nothing deployed before the approval

    # When an allowed approver clicks Approve (a signed block_actions interaction)
    click = stack.slack_user.click(request, APPROVE_ACTION)

    # Then the paused execution resumes, the deploy runs once, and the execution succeeds
    assert click.status_code == 200
    poll_until(
        lambda: execution(stack, thread_id)["status"], lambda status: status == "SUCCEEDED", timeout=60
    )
    assert stored_event_types(stack, thread_id)[5:] == ["approval", "tool_result", "done"]
    assert pending_wait(stack, thread_id) is None
    new_deploys = deploys(stack)[deploys_before:]
    assert [(d["service"], d["tag"], d["environment"]) for d in new_deploys] == [
        ("backend", NEWEST_TAG, "production")
    ]
    # ... the buttons are replaced by who answered, and the final message lands in the Slack thread
    updates = [call for call in stack.slack.calls if call.method == "chat.update"]
    assert any(
        "Approved" in call.arguments["text"] and stack.slack_user.user in call.arguments["text"]
        for call in updates
    )
    final = poll_until(lambda: slack_thread_messages(stack, thread_ts), lambda calls: len(calls) == 2)[1]
    assert final.arguments["text"].startswith(DEPLOYED)
    assert scripts.remaining(text) == 0


def test_a_slack_request_with_a_forged_signature_is_refused_and_changes_nothing(
    stack: LocalStack, scripts: ConversationScripts, fake_llm: FakeOpenAI
) -> None:
    # Given a conversation the model would happily run
    text = deploy_script(scripts, "Deploy the backend now")
    table = stack.physical_name("ThreadsTable")
    items_before = aws(stack, "dynamodb").scan(TableName=table, Select="COUNT")["Count"]
    model_calls_before = len(fake_llm.requests)

    # When the mention arrives signed with another secret
    forger = SlackUser(stack.api_url, "not-the-signing-secret")
    response, thread_ts = forger.mention(text)

    # Then it is refused with 401 and nothing was stored, started or asked
    assert response.status_code == 401
    assert aws(stack, "dynamodb").scan(TableName=table, Select="COUNT")["Count"] == items_before
    assert linked_thread(stack, thread_ts) is None
    assert len(fake_llm.requests) == model_calls_before
    assert scripts.remaining(text) == 2


# --- launched and approved through the REST API --------------------------------------------------------


def launch(stack: LocalStack, text: str, **extra: Any) -> str:
    response = httpx.post(f"{stack.api_url}/threads", json={"agent": "deploybot", "message": text, **extra})
    assert response.status_code == 202, response.text
    return str(response.json()["thread_id"])


def test_a_thread_launched_through_the_api_pauses_and_an_api_approval_finishes_it(
    stack: LocalStack, scripts: ConversationScripts
) -> None:
    # Given a conversation that will ask to deploy to production
    text = deploy_script(scripts, "Please ship the backend")
    deploys_before = len(deploys(stack))

    # When it is launched with POST /threads
    thread_id = launch(stack, text)

    # Then it pauses for approval: the API says so, DynamoDB holds the wait, the execution is RUNNING
    wait_for_status(stack, thread_id, "awaiting_approval")
    poll_until(lambda: pending_wait(stack, thread_id), lambda found: found is not None)
    assert execution(stack, thread_id)["status"] == "RUNNING"

    # When the approval is posted to /threads/{id}/responses
    response = httpx.post(
        f"{stack.api_url}/threads/{thread_id}/responses", json={"kind": "approval", "approved": True}
    )

    # Then the deploy runs, the thread is done in DynamoDB and the execution has SUCCEEDED
    assert response.status_code == 202
    poll_until(
        lambda: execution(stack, thread_id)["status"], lambda status: status == "SUCCEEDED", timeout=60
    )
    assert stored_event_types(stack, thread_id) == [
        "user_message",
        "tool_call",
        "tool_result",
        "tool_call",
        "approval_requested",
        "approval",
        "tool_result",
        "done",
    ]
    meta = next(item for item in thread_items(stack, thread_id) if item["sk"] == "META")
    assert meta["agent"] == "deploybot"
    assert [d["tag"] for d in deploys(stack)[deploys_before:]] == [NEWEST_TAG]
    events = httpx.get(f"{stack.api_url}/threads/{thread_id}/events", params={"after": 6}).json()["events"]
    assert [(event["seq"], event["type"]) for event in events] == [(7, "done")]
    assert events[0]["data"]["message"].startswith(DEPLOYED)


def test_a_rejection_through_the_api_reaches_the_model_and_nothing_is_deployed(
    stack: LocalStack, scripts: ConversationScripts, fake_llm: FakeOpenAI
) -> None:
    # Given a conversation that asks to deploy, and will accept a "no"
    text = scripts.add(
        opening("Deploy the backend to production"),
        intent("list_git_tags"),
        intent("deploy_backend", tag=NEWEST_TAG, environment="production"),
        intent("done_for_now", message="Understood, nothing was deployed."),
    )
    deploys_before = len(deploys(stack))
    thread_id = launch(stack, text)
    wait_for_status(stack, thread_id, "awaiting_approval")

    # When the person rejects it with a reason
    response = httpx.post(
        f"{stack.api_url}/threads/{thread_id}/responses",
        json={"kind": "approval", "approved": False, "comment": "not during the freeze"},
    )

    # Then the model is asked again with the rejection and its reason in the thread, and nothing deploys
    assert response.status_code == 202
    poll_until(
        lambda: execution(stack, thread_id)["status"], lambda status: status == "SUCCEEDED", timeout=60
    )
    assert stored_event_types(stack, thread_id)[-3:] == ["approval_requested", "approval", "done"]
    last_prompt = next(
        request["messages"][-1]["content"] for request in reversed(fake_llm.requests) if text in str(request)
    )
    assert "not during the freeze" in last_prompt
    assert len(deploys(stack)) == deploys_before


def test_an_answer_the_thread_is_not_waiting_for_is_refused_with_409_and_changes_nothing(
    stack: LocalStack, scripts: ConversationScripts
) -> None:
    # Given a thread paused for an approval
    text = deploy_script(scripts, "Roll out the backend")
    thread_id = launch(stack, text)
    wait_for_status(stack, thread_id, "awaiting_approval")
    stored = stored_event_types(stack, thread_id)

    # When someone sends a free-text answer instead of an approval
    response = httpx.post(
        f"{stack.api_url}/threads/{thread_id}/responses", json={"kind": "response", "text": "ok"}
    )

    # Then it is a conflict, the thread is unchanged and the execution still waits
    assert response.status_code == 409
    assert stored_event_types(stack, thread_id) == stored
    assert execution(stack, thread_id)["status"] == "RUNNING"


# --- the threads CLI, over HTTP -------------------------------------------------------------------------


def test_the_threads_cli_launches_follows_and_approves_over_http(
    stack: LocalStack, scripts: ConversationScripts, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a conversation that will need an approval
    text = deploy_script(scripts, "Deploy the backend from the CLI")
    api = ["threads", "--api-url", stack.api_url]

    # When it is launched with --follow
    assert cli.main([*api, "launch", text, "--follow"]) == 0

    # Then the thread id and each event are printed until the thread waits for the approval
    launched = capsys.readouterr().out.splitlines()
    thread_id = launched[0]
    assert any("needs approval: deploy_backend(" in line for line in launched)
    assert launched[-1] == "status: awaiting_approval"

    # When it is approved from the CLI, Then the thread finishes and `show` prints the whole story
    assert cli.main([*api, "respond", thread_id, "--approve"]) == 0
    wait_for_status(stack, thread_id, "done")
    capsys.readouterr()
    assert cli.main([*api, "show", thread_id]) == 0
    shown = capsys.readouterr().out
    assert f"thread {thread_id} (deploybot, none): done" in shown
    assert f"done: {DEPLOYED}" in shown

    # When the same approval is sent again, Then the API's refusal is shown and the exit code is 1
    assert cli.main([*api, "respond", thread_id, "--approve"]) == 1
    assert "409" in capsys.readouterr().err


def test_the_threads_cli_reads_a_thread_too_large_for_one_response_page_by_page(
    stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a thread of 12 tool results of 300 KB (kept in S3) and 60 of 26 KB (kept inline): more
    # than Lambda's 6 MB response limit in all
    settings = StoreSettings(
        THREADS_TABLE=stack.physical_name("ThreadsTable"), PAYLOAD_BUCKET=stack.bucket_name
    )
    table = boto3.resource("dynamodb", endpoint_url=stack.moto_url, region_name=REGION).Table(
        settings.threads_table
    )
    store = DynamoThreadStore(table, settings.payload_bucket, aws(stack, "s3"), settings)
    large = {"tags": [{"name": f"v{n}", "commit": f"{n:0300x}"} for n in range(1_000)]}
    medium = {"tags": [{"name": f"v{n}", "commit": f"{n:0300x}"} for n in range(80)]}
    at = datetime(2025, 3, 1, tzinfo=UTC)
    results = [large] * 12 + [medium] * 60
    events: list[Event] = [UserMessage(at=at, data=UserMessageData(text="list the tags, again and again"))]
    events += [
        ToolResult(at=at, data=ToolResultData(call_id=f"call-{n}", intent="list_git_tags", result=result))
        for n, result in enumerate(results)
    ]
    thread_id = f"heavy-{uuid.uuid4().hex[:8]}"
    store.create(ThreadMeta(thread_id=thread_id, agent="deploybot", created_at=at), events)

    # When a client reads it over HTTP, and `twelvefactor threads show` prints it
    first = httpx.get(f"{stack.api_url}/threads/{thread_id}")
    api = ThreadsApi(stack.api_url)
    try:
        read = api.thread(thread_id)
    finally:
        api.close()
    assert cli.main(["threads", "--api-url", stack.api_url, "show", thread_id]) == 0

    # Then the first answer is one page with a cursor, yet the client got every event, whole, in order
    assert first.status_code == 200 and first.json()["next_after"] is not None
    assert len(first.content) < 6 * 1024 * 1024
    assert any("payload" in event for event in first.json()["events"])
    assert read.events == store.load(thread_id)[1].events
    shown = capsys.readouterr().out
    assert shown.count("tool result: list_git_tags") == len(results)
    assert f"#{len(results):<3} tool result" in shown


# --- replies by email: SES as captured by moto ---------------------------------------------------------


def test_a_thread_with_an_email_channel_asks_and_reports_by_ses(
    stack: LocalStack, scripts: ConversationScripts
) -> None:
    # Given a thread whose replies go to an email conversation
    text = deploy_script(scripts, "Deploy the backend, reply by mail")
    address = f"ops-{text[-9:-1]}@example.com"
    channel = {
        "kind": "email",
        "address": address,
        "subject": "deploy",
        "message_id": f"<{text[-9:-1]}@example.com>",
    }

    # When it is launched and pauses for approval
    thread_id = launch(stack, text, channel=channel)
    wait_for_status(stack, thread_id, "awaiting_approval")

    # Then SES carried the approval request to that address, with how to answer
    def mails_to_address() -> list[Any]:
        return [mail for mail in stack.sent_emails() if mail.to == (address,)]

    request = poll_until(mails_to_address, lambda mails: len(mails) == 1)[0]
    assert request.source == "agent@example.com" and request.subject == "Re: deploy"
    assert "APPROVE or REJECT" in request.text and "deploy_backend" in request.text

    # When it is approved, the final message goes out by SES too
    httpx.post(f"{stack.api_url}/threads/{thread_id}/responses", json={"kind": "approval", "approved": True})
    final = poll_until(mails_to_address, lambda mails: len(mails) == 2)[1]
    assert DEPLOYED in final.text


# --- what the stack refuses to do ----------------------------------------------------------------------


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


def test_a_port_in_use_fails_at_once_with_the_port_named(stack: LocalStack, busy_port: int) -> None:
    # Given a port something already listens on
    endpoint = LlmEndpoint("http://127.0.0.1:9/v1", "unused", kind="scripted")

    # When a stack is asked to put its moto server there (moto's own server would hang forever)
    with pytest.raises(PortInUse, match=f"port {busy_port} is in use"):
        LocalStack(endpoint, moto_port=busy_port).__enter__()

    # Then the running stack is untouched
    assert httpx.get(f"{stack.api_url}/threads").status_code == 200


def test_a_second_stack_in_the_same_process_is_refused_and_the_first_keeps_running(stack: LocalStack) -> None:
    # When another stack starts while this one runs (moto's state and os.environ are process-wide)
    with pytest.raises(StackError, match="already runs in this process"):
        LocalStack(LlmEndpoint("http://127.0.0.1:9/v1", "unused", kind="scripted")).__enter__()

    # Then the first one still serves requests with its own environment
    assert httpx.get(f"{stack.api_url}/threads").status_code == 200
