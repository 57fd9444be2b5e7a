"""`twelvefactor demo` as a person (or CI) runs it: a real process, its output, its exit code."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from twelvefactor.local.fake_openai import FakeOpenAI

pytestmark = pytest.mark.e2e


def run_demo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "twelvefactor.cli", "demo", *args],
        stdin=subprocess.DEVNULL,  # no terminal: approvals are answered automatically
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_demo_with_the_scripted_model_runs_deploybot_to_done_and_prints_the_summary() -> None:
    # When the demo runs unattended with the scripted model
    result = run_demo("--yes", "--llm", "scripted")

    # Then it exits 0 after the whole story: the signed mention, the approval request in Slack with its
    # buttons, the automatic approval, the deploy, the final Slack message, and the summary
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "a signed app_mention -> POST /slack/events: 200" in out
    assert "needs approval: deploy_backend(" in out
    assert "[ Approve ]  [ Reject ]" in out
    assert "--yes: approving automatically" in out
    assert out.index("needs approval") < out.index("approved by") < out.index("done: ")
    summary = out[out.index("\nSummary\n") :]
    assert "how it ended   done: " in summary
    # (two model decisions: the tags, then the deploy; code writes the done message)
    assert "2 model decisions, 2 tool runs, 0 errors" in summary
    assert ": SUCCEEDED" in summary  # the Step Functions execution
    assert "deployment service: dep-0001 backend" in summary and "to production (succeeded)" in summary
    assert "2 messages posted in the thread" in summary
    # The scripted model has no price: the cost says so rather than showing zero
    assert "cost           unknown: 'fake-model' is not in the price table" in summary


def test_demo_with_a_model_that_only_talks_nonsense_ends_in_a_clearly_reported_escalation() -> None:
    # Given a provider whose model never answers with a valid step
    with FakeOpenAI(responder=lambda _request: "Sure! I will deploy it right away.") as provider:
        # When the demo runs unattended against it
        result = run_demo(
            "--yes",
            "--llm",
            provider.base_url,
            env={"OPENAI_API_KEY": "sk-local", "LLM_MODEL": provider.model, "LLM_OUTPUT_MODE": "json_object"},
        )

    # Then the error budget ends each run with an escalation; the canned answer is given once, and
    # the second escalation ends the demo, saying so, with exit code 0 (the budgets did their job)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.count("ESCALATED (error_budget)") == 2
    assert out.count("--yes: answering once") == 1
    summary = out[out.index("\nSummary\n") :]
    assert "how it ended   ESCALATED to a person" in summary
    assert "0 tool runs, 6 errors" in summary
    assert "last error     invalid model output" in summary


@pytest.fixture
def closed_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        yield int(probe.getsockname()[1])  # bound, never listening: connections are refused


def test_demo_says_clearly_when_nothing_answers_at_the_model_url(closed_port: int) -> None:
    # When the demo is pointed at a URL where no model server listens
    result = run_demo("--yes", "--llm", f"http://127.0.0.1:{closed_port}/v1")

    # Then it fails before starting anything, naming the URL
    assert result.returncode == 1
    assert f"nothing answers at http://127.0.0.1:{closed_port}/v1" in result.stderr


def test_demo_stops_with_a_clear_message_when_the_provider_rejects_the_key() -> None:
    # Given an OpenAI-compatible provider that only accepts its own key
    with FakeOpenAI(api_key="sk-the-right-key-000000000000") as provider:
        # When the demo runs against it with another key
        result = run_demo(
            "--yes",
            "--llm",
            provider.base_url,
            env={"OPENAI_API_KEY": "sk-a-wrong-key-00000000000000", "LLM_MODEL": provider.model},
        )

    # Then it stops at the first refusal and says the key was rejected (not after three retries)
    assert result.returncode == 1
    assert "rejected the API key" in result.stderr
    assert provider.requests == []  # refused before any completion was answered
