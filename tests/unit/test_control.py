"""Factor 8: code carries the control flow. `twelvefactor.core.control.offer` decides, from the thread
and the tools' policy, which intents the model may choose; the reducer refuses anything else.

Each mechanism has a test here that fails without it: prerequisites, grounded fields, the loop
guard (and its freshness), deterministic completion, clean strings, the offered set and the schema
sent agreeing in every output mode, and the request's cacheable prefix staying put.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

import agents
from tests.unit.agent_fixtures import (
    AGENT_NAME,
    TAGS,
    DeployBackend,
    DeployService,
    ListGitTags,
    StepClock,
    intent_json,
    production_only,
)
from twelvefactor.adapters.llm import OpenAIModel
from twelvefactor.core import control, replies, state
from twelvefactor.core.agent import Agent
from twelvefactor.core.events import Done, Error, HumanResponse, HumanResponseData, Thread, ToolResult
from twelvefactor.core.ports import Ports
from twelvefactor.core.prompts import JinjaPrompts
from twelvefactor.core.reducer import run_until_paused, step
from twelvefactor.core.tools import Freshness, Grounded, Intent, Tool, ToolContext
from twelvefactor.local.fake_openai import Answer, FakeOpenAI
from twelvefactor.local.fake_services import run_fake_services
from twelvefactor.local.scripted import ScriptedModel
from twelvefactor.settings import OutputMode

# The shipper's template with the per-decision list of steps at the end, as the real prompts have it.
TEMPLATE = """\
{% block system %}
You are {{ agent.name }}. {{ answer_format }}
{% for intent in intents %}
- {{ intent.signature }}: {{ intent.description }}
{% endfor %}
{% endblock %}
{% block user %}
{{ thread }}

Steps you can take now:
{% for intent in offered %}
- {{ intent.signature }}
{% endfor %}
{% endblock %}
"""


class ShowTag(Intent):
    """Show one tag's commit and date."""

    intent: Literal["show_tag"] = "show_tag"
    tag: str


class Shipper:
    """A tiny deploy agent with the control-flow policy, and a record of every executor call."""

    def __init__(self, *, freshness: Freshness = "until_change") -> None:
        self.service = DeployService()
        self.shown: list[str] = []
        tags = Grounded(source="list_git_tags", path="tags")
        self.agent = Agent(
            name=AGENT_NAME,
            tools=(
                Tool(ListGitTags, self.service.list_git_tags, read_only=True, freshness=freshness),
                Tool(ShowTag, self.show_tag, read_only=True, grounded={"tag": tags}),
                Tool(
                    DeployBackend,
                    self.service.deploy_backend,
                    requires_approval=production_only,
                    requires=("list_git_tags",),
                    grounded={"tag": tags},
                    completes=lambda call, result: f"Deployed {call.tag} to {result['environment']}.",
                ),
            ),
        )

    def show_tag(self, call: ShowTag, _ctx: ToolContext) -> dict[str, Any]:
        self.shown.append(call.tag)
        return {"tag": call.tag, "commit": "abc1234"}


@pytest.fixture
def shipper() -> Shipper:
    return Shipper()


@pytest.fixture
def prompts(tmp_path: Path) -> JinjaPrompts:
    (tmp_path / f"{AGENT_NAME}.jinja").write_text(TEMPLATE, encoding="utf-8")
    return JinjaPrompts(tmp_path)


def launched(text: str = "Deploy the backend to staging.") -> Thread:
    clock = StepClock()
    return Thread(
        id="thread-1", agent=AGENT_NAME, events=tuple(replies.launch(text, at=clock(), channel="api"))
    )


def run(shipper: Shipper, prompts: JinjaPrompts, script: list[str], thread: Thread | None = None) -> Thread:
    model = ScriptedModel(script)
    ports = Ports(llm=model, prompts=prompts, clock=StepClock())
    thread = run_until_paused(shipper.agent, thread or launched(), ports)
    assert model.remaining == 0, "the model was asked fewer times than scripted"
    return thread


def errors(thread: Thread) -> list[str]:
    return [event.data.message for event in thread.events if isinstance(event, Error)]


# --- prerequisites ---------------------------------------------------------------------------------


def test_a_deploy_is_not_offered_before_the_tags_are_in_the_thread(
    shipper: Shipper, prompts: JinjaPrompts
) -> None:
    # Given a fresh request
    offer = control.offer(shipper.agent, launched())

    # Then the deploy is withheld, with the reason, and the lookup is offered
    assert offer.names == ("list_git_tags", "request_human_input", "done_for_now")
    assert offer.withheld["deploy_backend"] == "it needs a list_git_tags result in the thread first"

    # When the model deploys anyway, then lists the tags and deploys
    thread = run(
        shipper,
        prompts,
        [
            intent_json("deploy_backend", tag="v1.2.3", environment="staging"),
            intent_json("list_git_tags"),
            intent_json("deploy_backend", tag="v1.2.3", environment="staging"),
        ],
    )

    # Then the first deploy was a compact error that ran nothing; the deploy ran once, after the tags
    assert errors(thread) == [
        "deploy_backend is not offered now: it needs a list_git_tags result in the thread first"
    ]
    assert shipper.service.names() == ["list_git_tags", "deploy_backend"]


# --- grounded fields -------------------------------------------------------------------------------


def test_an_invented_tag_never_reaches_the_executor(shipper: Shipper, prompts: JinjaPrompts) -> None:
    # When the model lists the tags, then deploys a tag that is not among them, then a listed one
    thread = run(
        shipper,
        prompts,
        [
            intent_json("list_git_tags"),
            intent_json("deploy_backend", tag="v9.9.9", environment="staging"),
            intent_json("deploy_backend", tag="v1.2.2", environment="staging"),
        ],
    )

    # Then the invented tag became an error event naming the allowed values, and only the listed
    # tag was deployed
    [refused] = errors(thread)
    assert "deploy_backend.tag: Input should be 'v1.2.3', 'v1.2.2' or 'v1.2.1'" in refused
    assert [
        arguments["tag"] for name, arguments, _key in shipper.service.calls if name == "deploy_backend"
    ] == ["v1.2.2"]


def test_the_schema_carries_the_grounded_values_from_the_thread(shipper: Shipper) -> None:
    # Given a thread where the tags were listed
    thread = run_tags(shipper)

    # When the offer is made
    schema = control.offer(shipper.agent, thread).intents.json_schema()

    # Then the tag field of every grounded intent is an enum of exactly the listed tags, newest first
    for name in ("DeployBackend", "ShowTag"):
        assert schema["$defs"][name]["properties"]["tag"]["enum"] == TAGS


def test_grounded_values_that_the_field_itself_would_refuse_are_not_offered() -> None:
    # Given deploybot and a tag list with one name no deploy could accept (a path)
    deploybot = agents.build_registry().get("deploybot")
    thread = Thread(id="t", agent="deploybot", events=launched().events).extended(
        [
            *replies_for_tags({"tags": [{"name": "v1.2.3"}, {"name": "../../etc"}]}),
        ]
    )

    # Then only the valid one is offered
    tool = deploybot.tool("deploy_backend")
    assert tool is not None
    assert control.grounded_values(tool, "tag", thread.events) == ("v1.2.3",)


# --- the loop guard ----------------------------------------------------------------------------------


def test_a_repeated_lookup_is_not_executed_twice_and_counts_as_an_error(
    shipper: Shipper, prompts: JinjaPrompts
) -> None:
    # When the model lists the tags twice in a row, then finishes
    thread = run(
        shipper,
        prompts,
        [
            intent_json("list_git_tags"),
            intent_json("list_git_tags"),
            intent_json("done_for_now", message="ok"),
        ],
    )

    # Then the lookup ran once; the repeat is a short note pointing at the earlier result, counted
    # toward the error budget
    assert shipper.service.names() == ["list_git_tags"]
    assert errors(thread) == [
        "list_git_tags is not offered now: it was already answered (call-1) and that result is still "
        "current: read it above"
    ]
    assert state.consecutive_errors(thread.events[:-1]) == 1


def test_a_lookup_with_arguments_is_refused_only_when_identical(
    shipper: Shipper, prompts: JinjaPrompts
) -> None:
    # When the model shows v1.2.3, then v1.2.3 again, then v1.2.2
    thread = run(
        shipper,
        prompts,
        [
            intent_json("list_git_tags"),
            intent_json("show_tag", tag="v1.2.3"),
            intent_json("show_tag", tag="v1.2.3"),
            intent_json("show_tag", tag="v1.2.2"),
            intent_json("done_for_now", message="ok"),
        ],
    )

    # Then the identical call did not run again; the one with other arguments did
    assert shipper.shown == ["v1.2.3", "v1.2.2"]
    assert errors(thread) == [
        "show_tag with these arguments was already answered (call-3) and that result is still current: "
        "it was not run again; read its result above"
    ]


def run_tags(shipper: Shipper) -> Thread:
    thread = launched()
    return thread.extended(replies_for_tags({"tags": list(TAGS)}))


def replies_for_tags(result: Any) -> list[Any]:
    from twelvefactor.core.events import ToolCall, ToolCallData, ToolResultData

    clock = StepClock()
    return [
        ToolCall(at=clock(), data=ToolCallData(call_id="call-1", intent="list_git_tags", arguments={})),
        ToolResult(at=clock(), data=ToolResultData(call_id="call-1", intent="list_git_tags", result=result)),
    ]


def test_a_lookup_is_current_until_a_new_request_or_a_change(shipper: Shipper) -> None:
    listed = run_tags(shipper)
    clock = StepClock()
    assert "list_git_tags" in control.offer(shipper.agent, listed).withheld

    # A person answering the agent's question continues the same request: still current
    answered = listed.extended([HumanResponse(at=clock(), data=HumanResponseData(text="staging"))])
    assert "list_git_tags" in control.offer(shipper.agent, answered).withheld

    # A new user message is a new request: offered again
    asked_again = listed.extended(replies.launch("And again?", at=clock(), channel="api"))
    assert "list_git_tags" in control.offer(shipper.agent, asked_again).names

    # A tool that acts returned a result: offered again (the tags may have moved)
    deployed = run_deploy(shipper, listed)
    assert "list_git_tags" in control.offer(shipper.agent, deployed).names


def run_deploy(shipper: Shipper, thread: Thread) -> Thread:
    from twelvefactor.core.events import ToolCall, ToolCallData, ToolResultData

    clock = StepClock()
    arguments = {"tag": "v1.2.3", "environment": "staging"}
    return thread.extended(
        [
            ToolCall(
                at=clock(), data=ToolCallData(call_id="call-3", intent="deploy_backend", arguments=arguments)
            ),
            ToolResult(
                at=clock(), data=ToolResultData(call_id="call-3", intent="deploy_backend", result=arguments)
            ),
        ]
    )


@pytest.mark.parametrize(("freshness", "guarded_after_deploy"), [("until_request", True), ("off", False)])
def test_a_tool_sets_its_own_freshness_or_opts_out(freshness: Freshness, guarded_after_deploy: bool) -> None:
    shipper = Shipper(freshness=freshness)
    listed = run_tags(shipper)
    # "off" is never guarded; "until_request" is, even after a deploy
    assert ("list_git_tags" in control.offer(shipper.agent, listed).withheld) is (freshness != "off")
    deployed = run_deploy(shipper, listed)
    assert ("list_git_tags" in control.offer(shipper.agent, deployed).withheld) is guarded_after_deploy


# --- deterministic completion --------------------------------------------------------------------


def test_a_successful_call_can_end_the_turn_with_a_message_code_writes(
    shipper: Shipper, prompts: JinjaPrompts
) -> None:
    # When the model lists the tags and deploys to staging (and is asked nothing more)
    thread = run(
        shipper,
        prompts,
        [intent_json("list_git_tags"), intent_json("deploy_backend", tag="v1.2.3", environment="staging")],
    )

    # Then the turn ended with the templated message, marked as code's, not counted as a model step
    done = thread.events[-1]
    assert isinstance(done, Done)
    assert (done.data.message, done.data.origin) == ("Deployed v1.2.3 to staging.", "completion")
    assert not state.is_model_step(done)
    assert state.status(thread.events) is state.ThreadStatus.DONE


# --- clean strings ---------------------------------------------------------------------------------


def test_raw_newlines_from_a_constrained_decoder_are_repaired_and_other_controls_refused(
    shipper: Shipper, prompts: JinjaPrompts
) -> None:
    # Given answers with a raw newline (invalid JSON as written) and with an escape character
    raw_newline = '{"intent": "done_for_now", "message": "Deployed.\r\nBye"}'
    escape = json.dumps({"intent": "done_for_now", "message": "Deployed \x1b[31mred"})

    # When the model answers with the escape first, then the newline
    thread = run(shipper, prompts, [escape, raw_newline])

    # Then the escape was refused with a clear error and never stored; the newline was kept as LF
    assert errors(thread) == ["invalid model output: message contains the control character U+001B"]
    assert "\x1b" not in thread.model_dump_json()
    done = thread.events[-1]
    assert isinstance(done, Done) and done.data.message == "Deployed.\nBye"


# --- the same offer everywhere ---------------------------------------------------------------------


def offered_in_request(mode: OutputMode, request: dict[str, Any]) -> tuple[list[str], dict[str, list[str]]]:
    """The intent names and the tag enums the request's structured-output part allows."""
    if mode == "tools":
        functions = [tool["function"] for tool in request["tools"]]
        enums = {
            f["name"]: f["parameters"]["properties"]["tag"]["enum"]
            for f in functions
            if "tag" in f["parameters"]["properties"]
        }
        return [f["name"] for f in functions], enums
    if mode == "json_schema":
        schema = request["response_format"]["json_schema"]["schema"]
        branches = schema["properties"]["step"]["anyOf"]
    else:
        schema = request["response_format"]["schema"]
        branches = schema["anyOf"]
    names, enums = [], {}
    for branch in branches:
        definition = schema["$defs"][branch["$ref"].rsplit("/", 1)[-1]]
        intent = definition["properties"]["intent"]
        name = intent["enum"][0] if "enum" in intent else intent["const"]
        names.append(name)
        if "tag" in definition["properties"]:
            enums[name] = definition["properties"]["tag"]["enum"]
    return names, enums


@pytest.mark.parametrize("mode", ["json_schema", "json_object", "tools"])
def test_the_offered_set_and_the_schema_sent_agree_in_every_output_mode(
    mode: OutputMode, shipper: Shipper, prompts: JinjaPrompts
) -> None:
    answer = json.dumps({"intent": "done_for_now", "message": "ok"})
    wrapped = json.dumps({"step": {"intent": "done_for_now", "message": "ok"}})
    for thread in (launched(), run_tags(shipper)):
        offer = control.offer(shipper.agent, thread)
        with FakeOpenAI([Answer(wrapped if mode == "json_schema" else answer)]) as server:
            # When the reducer asks the real adapter, in this mode
            model = OpenAIModel(model="m", output_mode=mode, base_url=server.base_url, max_retries=0)
            new_events = step(shipper.agent, thread, Ports(llm=model, prompts=prompts, clock=StepClock()))
            model.close()
            [request] = server.requests

        # Then the request allows exactly the offered intents, grounded values included, and the
        # prompt's list of steps names the same ones
        names, enums = offered_in_request(mode, request)
        assert names == list(offer.names)
        assert all(values == TAGS for values in enums.values())
        if "deploy_backend" in offer.names:
            assert set(enums) == {"deploy_backend", "show_tag"}
        listed = request["messages"][-1]["content"].split("Steps you can take now:")[1]
        assert [line.split("(")[0].removeprefix("- ") for line in listed.strip().splitlines()] == list(
            offer.names
        )
        assert isinstance(new_events[-1], Done)


@pytest.fixture
def deploy_service() -> Iterator[str]:
    with run_fake_services() as url:
        yield url


def test_the_cacheable_prefix_is_unchanged_between_two_consecutive_decisions(
    deploy_service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the real deploybot, its real prompt and a model that lists the tags, then deploys
    monkeypatch.setenv("DEPLOYBOT_SERVICE_URL", deploy_service)
    deploybot = agents.build_registry().get("deploybot")
    model = ScriptedModel(
        [intent_json("list_git_tags"), intent_json("deploy_backend", tag="v1.2.3", environment="staging")]
    )
    ports = Ports(llm=model, prompts=JinjaPrompts(agents.default_prompts_dir()), clock=StepClock())
    thread = Thread(id="t", agent="deploybot", events=launched().events)

    # When one turn runs (two decisions; the offer narrows between them)
    run_until_paused(deploybot, thread, ports)
    first, second = model.calls

    # Then the system prompt (with the whole catalogue) is byte for byte the same, and the first
    # request's user message, up to where the per-decision list of steps begins, starts the second's
    assert first[0] == second[0]
    assert "deploy_backend(tag: string" in first[0]["content"]
    marker = "Steps you can take now"
    stable = first[1]["content"].split(marker)[0]
    assert second[1]["content"].startswith(stable)
    # ... while the narrowing itself (at the end) did change
    assert first[1]["content"].split(marker)[1] != second[1]["content"].split(marker)[1]


def test_a_policy_naming_what_the_agent_lacks_fails_when_the_agent_is_built() -> None:
    service = DeployService()
    lookup = Tool(ListGitTags, service.list_git_tags, read_only=True)
    wrong = [
        Tool(DeployBackend, service.deploy_backend, requires=("list_tags",)),
        Tool(DeployBackend, service.deploy_backend, grounded={"tag": Grounded("list_tags", "tags")}),
        Tool(DeployBackend, service.deploy_backend, grounded={"version": Grounded("list_git_tags", "tags")}),
        Tool(DeployBackend, service.deploy_backend, mode="async", completes=lambda _call, _result: "done"),
    ]
    for tool in wrong:
        with pytest.raises(ValueError, match="deploy_backend: "):
            Agent(name=AGENT_NAME, tools=(lookup, tool))


# --- temperature -----------------------------------------------------------------------------------


def test_the_temperature_is_a_setting_sent_with_every_request_and_zero_unless_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from twelvefactor.adapters.llm import model_from_settings
    from twelvefactor.local.stack import LlmEndpoint, LocalStack
    from twelvefactor.settings import LlmSettings

    monkeypatch.delenv("LLM_TEMPERATURE", raising=False)
    answer = json.dumps({"step": {"intent": "done_for_now", "message": "ok"}})
    sent = []
    for configured in (None, "0.7"):
        if configured is not None:
            monkeypatch.setenv("LLM_TEMPERATURE", configured)
        with FakeOpenAI([answer]) as server:
            model = model_from_settings(LlmSettings(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="k"))
            model.decide(
                [{"role": "user", "content": "hi"}], control.offer(Shipper().agent, launched()).intents
            )
            model.close()
            sent.append(server.requests[0]["temperature"])
    # Then the default is greedy decoding, and the setting is honoured
    assert sent == [0.0, 0.7]
    # And the local stack pins the embedded model's temperature, whatever the shell says
    stack = LocalStack(LlmEndpoint("http://127.0.0.1:9/v1", "m", kind="embedded", temperature=0.0))
    assert stack._own_environment("http://127.0.0.1:9")["LLM_TEMPERATURE"] == "0.0"


def test_only_a_call_the_model_chose_completes_the_turn() -> None:
    from twelvefactor.core.events import ToolCall, ToolCallData, ToolResultData
    from twelvefactor.core.reducer import Move, next_move

    # Given a tool that completes, whose result came from a prefetched call (context for the first
    # decision), and the same result from a call the model chose
    service = DeployService()
    agent = Agent(
        name=AGENT_NAME,
        tools=(Tool(ListGitTags, service.list_git_tags, read_only=True, completes=lambda _c, _r: "Listed."),),
    )
    clock = StepClock()
    for origin, move in (("prefetch", Move.ASK_MODEL), ("model", Move.COMPLETE)):
        call = ToolCallData(call_id="call-1", intent="list_git_tags", arguments={}, origin=origin)
        thread = launched().extended(
            [
                ToolCall(at=clock(), data=call),
                ToolResult(
                    at=clock(), data=ToolResultData(call_id="call-1", intent="list_git_tags", result={})
                ),
            ]
        )
        # Then only the model's call ends the turn in code
        assert next_move(agent, thread) is move
