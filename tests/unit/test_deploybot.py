"""deploybot, the registry and the owned prompts, against the real fake deployment service.

The executors talk HTTP to the fake service on loopback; the model is the scripted one that
implements the same port as the openai adapter; the prompts are the repository's own templates.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from agents import REPO_PROMPTS_DIR, build_registry, default_prompts_dir
from agents._service import ServiceError
from agents.deploybot import DeployBackend, DeploybotSettings, DeployFrontend, ListGitTags, build_deploybot
from agents.payments import PaymentsSettings, build_payments
from twelvefactor.core import replies, state
from twelvefactor.core.agent import Agent, AgentRegistry
from twelvefactor.core.errors import UnknownAgent
from twelvefactor.core.events import (
    Done,
    DoneData,
    Error,
    Event,
    Thread,
    ToolCall,
    ToolCallData,
    ToolResult,
    ToolResultData,
    UserMessage,
    UserMessageData,
)
from twelvefactor.core.ports import Ports
from twelvefactor.core.prompts import JinjaPrompts, signature
from twelvefactor.core.reducer import run_until_paused, step
from twelvefactor.core.state import ThreadStatus
from twelvefactor.core.tools import ToolContext
from twelvefactor.local.fake_services import TAGS, run_fake_services
from twelvefactor.local.scripted import ScriptedModel

AT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
CTX = ToolContext(thread_id="thread-1", call_id="call-1")


def intent_json(intent: str, **arguments: Any) -> str:
    return json.dumps({"intent": intent, **arguments})


@pytest.fixture
def service_url() -> Iterator[str]:
    with run_fake_services() as url:
        yield url


def registry_for(url: str, **settings: Any) -> AgentRegistry:
    return AgentRegistry(
        [
            build_deploybot(DeploybotSettings(service_url=url, **settings)),
            build_payments(PaymentsSettings(service_url=url)),
        ]
    )


@pytest.fixture
def deploybot(service_url: str) -> Agent:
    return registry_for(service_url).get("deploybot")


def deploys(url: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = httpx.get(f"{url}/deploys").json()["deploys"]
    return result


def fail_next(url: str, times: int) -> None:
    httpx.post(f"{url}/_control/fail", json={"times": times}).raise_for_status()


def launched(text: str) -> Thread:
    return Thread(id="thread-1", agent="deploybot", events=tuple(replies.launch(text, at=AT, channel="api")))


def with_pending_call(intent: str, **arguments: Any) -> Thread:
    """A thread whose model just decided a sync tool call, so the next move executes it."""
    call = ToolCall(at=AT, data=ToolCallData(call_id="call-1", intent=intent, arguments=arguments))
    return launched("Deploy v1.2.3 to staging").extended([call])


def ports_for(model: ScriptedModel) -> Ports:
    return Ports(llm=model, prompts=JinjaPrompts(default_prompts_dir()))


def user_prompt(model: ScriptedModel, call: int) -> str:
    return next(message["content"] for message in model.calls[call] if message["role"] == "user")


# --- intents and policy -------------------------------------------------------------------------


def test_deploybot_offers_the_seed_intents_each_field_described(deploybot: Agent) -> None:
    # When deploybot's next-step schema is exported
    schema = deploybot.intents.json_schema()
    # Then it is the seed's intents plus the built-ins, and every argument tells the model what it is
    assert deploybot.intents.names == (
        "list_git_tags",
        "deploy_backend",
        "deploy_frontend",
        "request_human_input",
        "done_for_now",
    )
    for name in ("DeployBackend", "DeployFrontend"):
        properties = schema["$defs"][name]["properties"]
        assert properties["environment"]["enum"] == ["staging", "production"]
        assert all(properties[field]["description"] for field in ("tag", "environment"))


@pytest.mark.parametrize("model", [DeployBackend, DeployFrontend])
def test_production_deploys_need_approval_and_staging_deploys_do_not(
    deploybot: Agent, model: type[DeployBackend | DeployFrontend]
) -> None:
    tool = deploybot.tool(model.model_fields["intent"].default)
    assert tool is not None
    assert tool.needs_approval(model(tag="v1.2.3", environment="production")) is True
    assert tool.needs_approval(model(tag="v1.2.3", environment="staging")) is False
    listing = deploybot.tool("list_git_tags")
    assert listing is not None
    assert listing.needs_approval(ListGitTags()) is False


@pytest.mark.parametrize("tag", ["--force", "v1.2.3 production", "../../etc", ""])
def test_a_tag_that_is_not_a_plain_name_is_rejected(deploybot: Agent, tag: str) -> None:
    with pytest.raises(ValidationError):
        deploybot.intents.validate_json(intent_json("deploy_backend", tag=tag, environment="staging"))


# --- executors against the fake service ---------------------------------------------------------


def test_list_git_tags_returns_the_services_tags(deploybot: Agent) -> None:
    tool = deploybot.tool("list_git_tags")
    assert tool is not None
    assert tool.execute(ListGitTags(), CTX) == {"tags": list(TAGS)}


def test_a_repeated_call_deploys_once_and_another_call_deploys_again(
    deploybot: Agent, service_url: str
) -> None:
    tool = deploybot.tool("deploy_backend")
    assert tool is not None
    call = DeployBackend(tag="v1.2.2", environment="staging")
    # Given a deploy executed, then executed again for the same call (a retried move)
    first = tool.execute(call, CTX)
    repeated = tool.execute(call, CTX)
    # When another call of the thread deploys the same tag
    other = tool.execute(call, ToolContext(thread_id="thread-1", call_id="call-7"))
    # Then the retry got the first deploy back and only two deploys happened
    assert repeated == first
    assert [deploy["deployment_id"] for deploy in deploys(service_url)] == ["dep-0001", "dep-0002"]
    assert other != first
    assert deploys(service_url)[0] | {"deployment_id": None} == {
        "deployment_id": None,
        "service": "backend",
        "tag": "v1.2.2",
        "environment": "staging",
        "status": "succeeded",
    }


def test_deploy_frontend_deploys_the_frontend(deploybot: Agent, service_url: str) -> None:
    tool = deploybot.tool("deploy_frontend")
    assert tool is not None
    tool.execute(DeployFrontend(tag="v1.2.1", environment="staging"), CTX)
    assert [(d["service"], d["tag"]) for d in deploys(service_url)] == [("frontend", "v1.2.1")]


def test_a_service_failure_becomes_a_compact_error_event_and_deploys_nothing(
    deploybot: Agent, service_url: str
) -> None:
    # Given the deployment service down for one call and a staging deploy about to run
    fail_next(service_url, 1)
    thread = with_pending_call("deploy_backend", tag="v1.2.3", environment="staging")
    # When the reducer makes its move
    events = step(deploybot, thread, ports_for(ScriptedModel([])))
    # Then the failure is an error event on that call, in the thread for the model to read
    assert len(events) == 1
    error = events[0]
    assert isinstance(error, Error)
    assert error.data.source == "tool"
    assert error.data.call_id == "call-1"
    assert "Failed to connect to deployment service" in error.data.message
    assert "HTTP 503" in error.data.message
    assert state.consecutive_errors(thread.extended(events).events) == 1
    assert deploys(service_url) == []


def test_a_move_repeated_after_a_crash_deploys_once(deploybot: Agent, service_url: str) -> None:
    # Given a staging deploy about to run
    thread = with_pending_call("deploy_backend", tag="v1.2.3", environment="staging")
    ports = ports_for(ScriptedModel([]))
    # When the move is made twice, as by a reducer that crashed before persisting the first
    first, second = (step(deploybot, thread, ports)[0] for _ in range(2))
    # Then both carry the same deploy (same call id, same idempotency key) and one deploy happened
    assert isinstance(first, ToolResult)
    assert isinstance(second, ToolResult)
    assert first.data.result == second.data.result
    assert len(deploys(service_url)) == 1


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_an_unreachable_service_is_a_clear_error() -> None:
    agent = registry_for(f"http://127.0.0.1:{unused_port()}").get("deploybot")
    tool = agent.tool("list_git_tags")
    assert tool is not None
    with pytest.raises(ServiceError, match=r"^deployment service: GET /tags failed: "):
        tool.execute(ListGitTags(), CTX)


def test_a_service_that_never_answers_times_out() -> None:
    # Given a port that accepts connections but never answers
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        tool = registry_for(url, timeout_seconds=0.2).get("deploybot").tool("list_git_tags")
        assert tool is not None
        # When the tool calls it
        with pytest.raises(ServiceError, match=r"GET /tags timed out after 0.2s"):
            tool.execute(ListGitTags(), CTX)


# --- the seed's conversation, end to end in process ---------------------------------------------


def test_can_you_deploy_the_backend_waits_for_approval_then_deploys_once(service_url: str) -> None:
    # Given "Can you deploy the backend?" and a model that lists tags, then deploys to production
    agent = registry_for(service_url).get("deploybot")
    model = ScriptedModel(
        [
            intent_json("list_git_tags"),
            intent_json("deploy_backend", tag="v1.2.3", environment="production"),
        ]
    )
    ports = ports_for(model)
    # When the loop runs
    thread = run_until_paused(agent, launched("Can you deploy the backend?"), ports)
    # Then it waits for approval, the model saw the service's tags, and nothing is deployed yet
    assert state.status(thread.events) is ThreadStatus.AWAITING_APPROVAL
    assert "<list_git_tags_result>" in user_prompt(model, 1)
    assert all(tag["name"] in user_prompt(model, 1) for tag in TAGS)
    assert deploys(service_url) == []
    # When a person approves and the loop resumes
    thread = thread.extended(replies.respond(thread, replies.ApprovalReply(approved=True), at=AT))
    thread = run_until_paused(agent, thread, ports)
    # Then the deploy ran once, for production, and code ended the turn with what was deployed:
    # the model was not asked to write the summary
    assert state.status(thread.events) is ThreadStatus.DONE
    assert [(d["tag"], d["environment"]) for d in deploys(service_url)] == [("v1.2.3", "production")]
    assert model.remaining == 0
    done = thread.events[-1]
    assert isinstance(done, Done)
    assert done.data.message == "Deployed backend v1.2.3 to production (deployment dep-0001)."


def test_a_staging_deploy_runs_without_approval(service_url: str) -> None:
    agent = registry_for(service_url).get("deploybot")
    model = ScriptedModel(
        [
            intent_json("list_git_tags"),
            intent_json("deploy_frontend", tag="v1.2.2", environment="staging"),
        ]
    )
    thread = run_until_paused(agent, launched("Deploy frontend v1.2.2 to staging"), ports_for(model))
    assert state.status(thread.events) is ThreadStatus.DONE
    assert [(d["service"], d["environment"]) for d in deploys(service_url)] == [("frontend", "staging")]
    assert thread.events[-1] == Done(
        id=thread.events[-1].id,
        at=thread.events[-1].at,
        data=DoneData(
            message="Deployed frontend v1.2.2 to staging (deployment dep-0001).", origin="completion"
        ),
    )


def test_an_unclear_request_asks_a_human_instead_of_deploying(service_url: str) -> None:
    # The seed's request_more_information is the built-in request_human_input
    agent = registry_for(service_url).get("deploybot")
    question = intent_json("request_human_input", question="Backend or frontend?", format="multiple_choice")
    thread = run_until_paused(agent, launched("Deploy it"), ports_for(ScriptedModel([question])))
    assert state.status(thread.events) is ThreadStatus.AWAITING_HUMAN
    assert deploys(service_url) == []


# --- the registry and the prompts ---------------------------------------------------------------


def test_the_registry_holds_every_agent_and_refuses_unknown_names() -> None:
    registry = build_registry()
    assert registry.names == ("deploybot", "payments", "oncall")
    with pytest.raises(UnknownAgent):
        registry.get("nobody")


def test_prompts_dir_comes_from_the_setting_then_the_layer_then_the_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A setting wins
    monkeypatch.setenv("PROMPTS_DIR", str(tmp_path))
    assert default_prompts_dir() == tmp_path
    monkeypatch.delenv("PROMPTS_DIR")
    # Then the layer's copy, when it exists
    monkeypatch.setattr("agents.LAYER_PROMPTS_DIR", tmp_path)
    assert default_prompts_dir() == tmp_path
    # Else the checkout's prompts/, which holds a template for every agent
    monkeypatch.setattr("agents.LAYER_PROMPTS_DIR", tmp_path / "missing")
    assert default_prompts_dir() == REPO_PROMPTS_DIR
    assert {path.stem for path in REPO_PROMPTS_DIR.glob("*.jinja")} >= set(build_registry().names)


def sample_thread(agent: str) -> Thread:
    events: list[Event] = [
        UserMessage(at=AT, data=UserMessageData(text="Ship it <now> & tell me, token: xoxb-1234567890-abc")),
        ToolCall(at=AT, data=ToolCallData(call_id="call-1", intent="list_git_tags", arguments={})),
        ToolResult(
            at=AT, data=ToolResultData(call_id="call-1", intent="list_git_tags", result={"tags": ["v1"]})
        ),
    ]
    return Thread(id="thread-1", agent=agent, events=tuple(events))


@pytest.mark.parametrize("name", ["deploybot", "payments", "oncall"])
def test_each_template_renders_the_thread_and_every_intent_with_its_fields(name: str) -> None:
    # Given an agent and a thread with an untrusted, secret-bearing message
    agent = build_registry().get(name)
    thread = sample_thread(name)
    # When its owned prompt is rendered
    system, user = JinjaPrompts(REPO_PROMPTS_DIR).render(agent, thread)
    # Then the system message names every intent with its fields (the schema itself travels with
    # the request as its structured-output format)
    assert system["role"] == "system"
    schema = agent.intents.json_schema()
    for intent, model in agent.intents.by_name.items():
        assert f"- {signature(intent, schema['$defs'][model.__name__])}: " in system["content"]
    # And the user message is the rendered thread, escaped and redacted, then the question
    assert user["role"] == "user"
    assert agent.context.render(thread.events) in user["content"]
    assert "Ship it &lt;now&gt; &amp; tell me" in user["content"]
    assert "xoxb-1234567890" not in system["content"] + user["content"]
    assert user["content"].endswith("What should the next step be?")
