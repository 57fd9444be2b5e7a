"""The on-call agent: recent deploys pre-fetched (factor 13), every rollback behind a person's
approval, its Slack conversation as its human channel, executors against the fake service."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from agents import default_prompts_dir
from agents.oncall import OncallSettings, RollBack, build_oncall
from twelvefactor.core import replies, state
from twelvefactor.core.agent import Agent
from twelvefactor.core.channels import SlackRef
from twelvefactor.core.events import Thread, ToolCall
from twelvefactor.core.ports import Ports
from twelvefactor.core.prompts import JinjaPrompts
from twelvefactor.core.reducer import run_until_paused
from twelvefactor.core.state import ThreadStatus
from twelvefactor.local.fake_services import run_fake_services
from twelvefactor.local.scripted import ScriptedModel

AT = datetime(2026, 12, 4, 16, 40, tzinfo=UTC)
ALARM = json.dumps({"alarmName": "api-5xx-rate", "state": {"value": "ALARM"}})


@pytest.fixture
def service_url() -> Iterator[str]:
    with run_fake_services() as url:
        for tag in ("v1.2.2", "v1.2.3"):
            body = {"service": "backend", "tag": tag, "environment": "production"}
            httpx.post(f"{url}/deploys", json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
        yield url


@pytest.fixture
def oncall(service_url: str) -> Agent:
    return build_oncall(OncallSettings(service_url=service_url))


def rollbacks(url: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = httpx.get(f"{url}/rollbacks").json()["rollbacks"]
    return found


def alarm_thread() -> Thread:
    return Thread(
        id="t-oncall", agent="oncall", events=tuple(replies.launch(ALARM, at=AT, channel="eventbridge"))
    )


def answers(*moves: dict[str, Any]) -> ScriptedModel:
    return ScriptedModel([json.dumps(move) for move in moves])


def test_a_rollback_waits_for_approval_and_then_runs_once(oncall: Agent, service_url: str) -> None:
    # Given an alarm and a model that proposes rolling back the newest production deploy
    model = answers(
        {"intent": "roll_back", "deployment_id": "dep-0002", "reason": "5xx rose after it"},
        {"intent": "done_for_now", "message": "Rolled back to v1.2.2."},
    )
    ports = Ports(llm=model, prompts=JinjaPrompts(default_prompts_dir()))
    # When the loop runs
    thread = run_until_paused(oncall, alarm_thread(), ports)
    # Then the recent deploys were looked up before the model was asked, and it waits for a person
    first = thread.events[1]
    assert isinstance(first, ToolCall) and first.data.intent == "list_recent_deploys"
    assert "<list_recent_deploys_result>" in next(m["content"] for m in model.calls[0] if m["role"] == "user")
    assert state.status(thread.events) is ThreadStatus.AWAITING_APPROVAL
    assert rollbacks(service_url) == []
    # When the on-call person approves
    thread = thread.extended(replies.respond(thread, replies.ApprovalReply(approved=True), at=AT))
    thread = run_until_paused(oncall, thread, ports)
    # Then the deploy went back to the tag it replaced, once, and the thread is done
    assert state.status(thread.events) is ThreadStatus.DONE
    assert [(r["from_tag"], r["to_tag"]) for r in rollbacks(service_url)] == [("v1.2.3", "v1.2.2")]


def test_a_rejected_rollback_never_runs(oncall: Agent, service_url: str) -> None:
    model = answers(
        {"intent": "roll_back", "deployment_id": "dep-0002", "reason": "5xx rose after it"},
        {"intent": "done_for_now", "message": "Nothing was rolled back."},
    )
    ports = Ports(llm=model, prompts=JinjaPrompts(default_prompts_dir()))
    thread = run_until_paused(oncall, alarm_thread(), ports)
    thread = thread.extended(replies.respond(thread, replies.ApprovalReply(approved=False), at=AT))
    thread = run_until_paused(oncall, thread, ports)
    assert state.status(thread.events) is ThreadStatus.DONE
    assert rollbacks(service_url) == []


@pytest.mark.parametrize("deployment_id", ["../deploys", "dep-1 --force", "", "DEP-0001"])
def test_a_deployment_id_that_is_not_the_services_own_is_refused(deployment_id: str) -> None:
    with pytest.raises(ValidationError):
        RollBack(deployment_id=deployment_id, reason="r")


def test_the_human_channel_is_the_configured_slack_conversation(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given no Slack conversation configured, then one, read from the agent's own variables
    assert build_oncall(OncallSettings()).human_channel is None
    monkeypatch.setenv("ONCALL_SLACK_TEAM_ID", "T0TEAM")
    monkeypatch.setenv("ONCALL_SLACK_CHANNEL_ID", "C0ONCALL")
    # Then the agent asks there, in a conversation it opens itself
    assert build_oncall().human_channel == SlackRef(team_id="T0TEAM", channel_id="C0ONCALL", thread_ts="")
    monkeypatch.setenv("ONCALL_SLACK_CHANNEL_ID", "#oncall")
    with pytest.raises(ValidationError):
        build_oncall()
