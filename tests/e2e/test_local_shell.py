"""A developer's shell against the local stack: what `twelvefactor local up` prints is enough to run
the template's functions with `twelvefactor invoke`, and what its API answers is what the CLI reads.

The invoke tests run the banner's own export lines in a fresh bash with an otherwise empty
environment, then `twelvefactor invoke` on a sample event, as a developer following the banner would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import aws, stored_event_types
from twelvefactor.cli import main
from twelvefactor.commands.local import banner
from twelvefactor.local.fake_openai import FakeOpenAI
from twelvefactor.local.stack import LlmEndpoint, LocalStack
from twelvefactor.triggers.email import s3_key

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
# Only what finds the interpreter and the checkout: everything else must come from the banner.
_SHELL_BASICS = ("PATH", "HOME", "LANG", "PYTHONPATH")


@pytest.fixture(scope="module")
def stack(fake_llm: FakeOpenAI) -> Iterator[LocalStack]:
    """The local stack, with the sample mails' sender allowed (as `--parameter-overrides` would)."""
    endpoint = LlmEndpoint(fake_llm.base_url, fake_llm.model, output_mode="json_object", kind="scripted")
    with LocalStack(endpoint, parameters={"AllowedEmailSenders": "@ops.example.com"}) as running:
        yield running


def exports(stack: LocalStack) -> list[str]:
    return [
        line.strip()
        for line in banner(stack, "http://127.0.0.1:0/").splitlines()
        if line.strip().startswith("export ")
    ]


def invoke_from_banner(stack: LocalStack, logical_id: str, event: str) -> tuple[int, Any, str]:
    """bash: the banner's exports, then `twelvefactor invoke`; returns (exit code, stdout JSON, stderr)."""
    script = "\n".join([*exports(stack), f'exec "$PYTHON" -m twelvefactor.cli invoke {logical_id} {event}'])
    env = {name: os.environ[name] for name in _SHELL_BASICS if name in os.environ}
    completed = subprocess.run(
        ["bash", "-c", script],
        cwd=REPO,
        env={**env, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    printed = json.loads(completed.stdout) if completed.stdout.strip() else None
    return completed.returncode, printed, completed.stderr


def test_the_banner_exports_every_resource_the_functions_are_given(stack: LocalStack) -> None:
    # When the banner is printed
    printed = "\n".join(exports(stack))

    # Then every table, the bucket and the state machine the functions use are exported by name
    for variable, value in (
        ("THREADS_TABLE", stack.physical_name("ThreadsTable")),
        ("IDEMPOTENCY_TABLE", stack.physical_name("IdempotencyTable")),
        ("PAYLOAD_BUCKET", stack.bucket_name),
        ("STATE_MACHINE_ARN", stack.state_machine_arn),
    ):
        assert f"export {variable}={value}\n" in printed + "\n"
    # ... and every variable any function runs with (the same source as the handlers' environment)
    exported = {line.split("=", 1)[0].removeprefix("export ") for line in exports(stack)}
    missing = {name for name, value in stack.environment.items() if value is not None} - exported
    assert missing == set()


def test_the_api_launch_sample_runs_against_the_printed_environment(stack: LocalStack) -> None:
    # When events/api-launch.json is invoked in a shell holding only the banner's exports
    code, result, stderr = invoke_from_banner(stack, "ApiFunction", "events/api-launch.json")

    # Then the launch is accepted and the thread is in the stack's own table
    assert code == 0, stderr
    assert result["statusCode"] == 202, result
    thread_id = json.loads(result["body"])["thread_id"]
    assert stored_event_types(stack, thread_id)[0] == "user_message"


def test_the_eventbridge_launch_sample_runs_against_the_printed_environment(stack: LocalStack) -> None:
    # When events/eventbridge-launch.json is invoked the same way
    code, result, stderr = invoke_from_banner(stack, "EventBridgeFunction", "events/eventbridge-launch.json")

    # Then the event launched a thread in the stack's table
    assert code == 0, stderr
    assert result["action"] == "launch", result
    assert stored_event_types(stack, result["thread_id"])[0] == "user_message"


def test_the_email_launch_sample_runs_against_the_printed_environment(stack: LocalStack) -> None:
    # Given the raw message stored where SES's receipt rule puts it
    event = json.loads((REPO / "events/email-receipt.json").read_text())
    message_id = event["Records"][0]["ses"]["mail"]["messageId"]
    raw = (REPO / "events/email-receipt.eml").read_bytes()
    aws(stack, "s3").put_object(Bucket=stack.bucket_name, Key=s3_key(message_id), Body=raw)

    # When events/email-receipt.json is invoked the same way
    code, result, stderr = invoke_from_banner(stack, "EmailFunction", "events/email-receipt.json")

    # Then the mail launched a thread in the stack's table
    assert code == 0, stderr
    assert result["outcome"] == "launched", result
    assert stored_event_types(stack, result["thread_id"])[0] == "user_message"


def test_a_thread_saved_from_the_api_renders_and_the_list_shows_its_status(
    stack: LocalStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a thread launched through the API
    launched = httpx.post(
        f"{stack.api_url}/threads", json={"agent": "deploybot", "message": "Saved-thread check, no script."}
    )
    thread_id = launched.json()["thread_id"]
    saved = tmp_path / "saved.json"
    saved.write_bytes(httpx.get(f"{stack.api_url}/threads/{thread_id}").content)
    api = ["threads", "--api-url", stack.api_url]

    # When GET /threads/{id}'s answer, saved as it came, is rendered, and so is `threads show --json`
    rendered_saved = main(["prompt", "render", "deploybot", "--thread", str(saved)])
    saved_out, saved_err = capsys.readouterr()
    assert main([*api, "show", thread_id, "--json"]) == 0
    shown = tmp_path / "shown.json"
    shown.write_text(capsys.readouterr().out)
    rendered_shown = main(["prompt", "render", "deploybot", "--thread", str(shown)])
    shown_out = capsys.readouterr().out

    # Then both are accepted and show the launch message to the model
    assert (rendered_saved, rendered_shown) == (0, 0), saved_err
    assert "Saved-thread check, no script." in saved_out and "Saved-thread check, no script." in shown_out

    # And `threads list` shows the thread with its status, as GET /threads/{id} derives it
    assert main([*api, "list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    status = httpx.get(f"{stack.api_url}/threads/{thread_id}").json()["status"]
    assert listed[0].split() == ["THREAD", "AGENT", "STATUS", "CHANNEL", "CREATED"]
    row = next(line.split() for line in listed if line.startswith(thread_id))
    assert row[1:3] == ["deploybot", status]
