"""Crash points: the reducer dies between two steps of a move, and Step Functions runs it again.

The crash is an exception injected into the reducer's store at the moment named: the model has
answered (or the tool has run) and the write that records it is about to happen. The reducer runs
inside moto's execution of the real state machine, so the retry is the ASL's own; the deployment
is done by the fake deployment service, which honours the executor's Idempotency-Key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.integration.stack import Stack, api_event, intent
from tests.reliability.conftest import Cases
from tests.reliability.support import deploys
from twelvefactor import runtime
from twelvefactor.adapters.ports import ThreadMeta
from twelvefactor.core.events import Event, ToolCall, ToolCallData, ToolResult, UserMessage, UserMessageData
from twelvefactor.core.ports import ChatMessage, ModelReply
from twelvefactor.core.state import ThreadStatus
from twelvefactor.core.tools import IntentSet
from twelvefactor.local.scripted import ScriptedModel

pytestmark = [pytest.mark.scenario("Crash points"), pytest.mark.integration]

DEPLOY_STAGING = intent("deploy_backend", tag="v1.2.3", environment="staging")
DONE = intent("done_for_now", message="Deployed v1.2.3 to staging.")
# deploybot deploys only once the tags are in the thread; a successful deploy's done is code's.
LIST_TAGS = intent("list_git_tags")
TURN = ["user_message", "tool_call", "tool_result", "tool_call", "tool_result", "done"]


def _deploy(events: list[Event], kind: type[ToolCall] | type[ToolResult]) -> bool:
    return any(isinstance(event, kind) and event.data.intent == "deploy_backend" for event in events)


AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


class ReducerKilled(RuntimeError):
    """Stands in for the Lambda being killed (timeout, out of memory) at the worst moment."""


class CrashingStore:
    """The real store, except that the first append matching `when` dies before it is written."""

    def __init__(self, store: Any, when: Callable[[list[Event]], bool]) -> None:
        self._store = store
        self._when = when
        self.crashes = 0

    def append(self, thread_id: str, events: list[Event], **kwargs: Any) -> int:
        if not self.crashes and self._when(events):
            self.crashes += 1
            raise ReducerKilled("the reducer was killed before its write")
        result: int = self._store.append(thread_id, events, **kwargs)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def _run_with_crash(
    stack: Stack, model: ScriptedModel, when: Callable[[list[Event]], bool]
) -> tuple[str, CrashingStore]:
    stack.model = model
    real_store = runtime.reset(llm=model).store
    crashing = CrashingStore(real_store, when)
    runtime.reset(llm=model, store=crashing)
    launched = stack.api(
        api_event("api-launch", body={"agent": "deploybot", "message": "Deploy the backend to staging"})
    )
    assert launched.status == 202, launched.body
    return str(launched.body["thread_id"]), crashing


def _assert_consistent(stack: Stack, thread_id: str) -> tuple[Event, ...]:
    events = stack.events(thread_id)
    calls = [event for event in events if isinstance(event, ToolCall)]
    results = [event for event in events if isinstance(event, ToolResult)]
    # One call, one result for it, and the result directly after the call
    assert [call.data.call_id for call in calls] == [result.data.call_id for result in results]
    for call in calls:
        assert isinstance(events[events.index(call) + 1], ToolResult)
    assert len({event.id for event in events}) == len(events)
    return events


@pytest.mark.fixes(
    "A reducer that failed (crashed, timed out, lost a race) was never retried: the state machine "
    "escalated at once, and a tool call that had run but was not recorded was left dangling. The "
    "Reduce state now retries States.TaskFailed twice before its Catch."
)
def test_a_crash_after_the_model_answered_loses_nothing_on_retry(stack: Stack, cases: Cases) -> None:
    """The reducer dies after the model answered and before the answer was written: Step Functions
    retries it, the model is asked again, the thread holds the one decision and runs to done."""
    # Given a model that lists the tags, then decides to deploy to staging (twice: the first answer
    # dies with the reducer)
    model = ScriptedModel([LIST_TAGS, DEPLOY_STAGING, DEPLOY_STAGING])

    # When the reducer is killed just before writing the model's decision to deploy
    thread_id, crashing = _run_with_crash(stack, model, lambda events: _deploy(events, ToolCall))
    finished = stack.wait_for(thread_id, ThreadStatus.DONE)
    cases.add()

    # Then the crash happened, the retry asked the model again and the thread is whole
    assert crashing.crashes == 1
    assert model.remaining == 0 and len(model.calls) == 3
    events = _assert_consistent(stack, thread_id)
    assert [event.type for event in events] == TURN
    assert finished.events == events
    # And the deploy ran once, in one execution (the retry was Step Functions', not a new launch)
    assert [(d["tag"], d["environment"]) for d in deploys(stack.deploy_service_url)] == [
        ("v1.2.3", "staging")
    ]
    assert [execution["status"] for execution in stack.executions()] == ["SUCCEEDED"]


def test_a_crash_after_the_tool_ran_does_not_run_it_twice(stack: Stack, cases: Cases) -> None:
    """The reducer dies after the deploy ran and before its result was written: on Step Functions'
    retry the call runs again with the same idempotency key, the fake deployment service replays
    its answer, and one deploy exists, recorded once in the thread."""
    # Given a model that lists the tags and deploys to staging (code then finishes)
    model = ScriptedModel([LIST_TAGS, DEPLOY_STAGING])

    # When the reducer is killed after the deploy, just before writing its result
    thread_id, crashing = _run_with_crash(stack, model, lambda events: _deploy(events, ToolResult))
    stack.wait_for(thread_id, ThreadStatus.DONE)
    cases.add()

    # Then the tool ran twice with one key, the service deployed once, and the thread says so once
    assert crashing.crashes == 1
    done_deploys = deploys(stack.deploy_service_url)
    assert [(d["deployment_id"], d["tag"]) for d in done_deploys] == [("dep-0001", "v1.2.3")]
    events = _assert_consistent(stack, thread_id)
    [result] = [
        event for event in events if isinstance(event, ToolResult) and event.data.intent != "list_git_tags"
    ]
    assert result.data.result["deployment_id"] == "dep-0001"
    assert [event.type for event in events] == TURN
    assert [execution["status"] for execution in stack.executions()] == ["SUCCEEDED"]


class DeploysUntilItSeesADeploy:
    """A model that does what its prompt says is still to do: it deploys while the thread it is shown
    holds no deploy's result, and finishes once it does (the port the real adapter implements)."""

    def __init__(self) -> None:
        self.calls: list[Sequence[ChatMessage]] = []

    def decide(self, messages: Sequence[ChatMessage], intents: IntentSet) -> ModelReply:
        self.calls.append(messages)
        deployed = any("deployment_id" in message["content"] for message in messages)
        return ModelReply(content=DONE if deployed else DEPLOY_STAGING)


@pytest.mark.fixes(
    "A reducer that kept failing after its tool ran was escalated with the call left without a "
    "result; once a person answered, the model was asked again and a repeated call got a new call "
    "id, hence a new idempotency key, so the tool could run twice. A call cleared to run and never "
    "settled now keeps the thread tool_pending: it is re-run under its own key before the model."
)
def test_a_call_left_without_result_by_an_escalated_failure_does_not_run_twice(
    stack: Stack, cases: Cases
) -> None:
    """The reducer died after a deploy, every retry died too, and the failure was escalated; a person
    answers the escalation: the deploy must still have run exactly once."""
    # Given a thread whose staging deploy ran under its key, but whose result was never written
    arguments = {"tag": "v1.2.3", "environment": "staging"}
    opening = UserMessage(at=AT, data=UserMessageData(text="Deploy the backend to staging"))
    call = ToolCall(at=AT, data=ToolCallData(call_id="call-1", intent="deploy_backend", arguments=arguments))
    model = DeploysUntilItSeesADeploy()
    runtime.reset(llm=model)
    stack.store.create(ThreadMeta(thread_id="crashed", agent="deploybot", created_at=AT), [opening, call])
    httpx.post(
        f"{stack.deploy_service_url}/deploys",
        json={"service": "backend", **arguments},
        headers={"Idempotency-Key": "crashed:call-1"},  # what the executor sent before the reducer died
    ).raise_for_status()
    # And the state machine gave up on the reducer and recorded the failure
    failure = {
        "thread_id": "crashed",
        "error": {"Error": "ReducerKilled", "Cause": "killed after the deploy"},
    }
    assert stack.invoke("ReducerFunction", failure)["status"] == "waiting"

    # When a person answers the escalation and the thread runs on, with a model that deploys
    # whenever its prompt shows no deploy's result
    assert stack.api(api_event("api-respond-text", thread_id="crashed")).status == 202
    finished = stack.wait_for("crashed", ThreadStatus.DONE)
    cases.add()

    # Then the deploy ran once: the pending call was settled under its own key (the service replayed
    # its first answer) before the model was asked, and its result ended the turn (code wrote the
    # done message), so the model was not asked at all
    assert [d["deployment_id"] for d in deploys(stack.deploy_service_url)] == ["dep-0001"]
    assert [event.type for event in finished.events] == [
        "user_message",
        "tool_call",
        "escalation",
        "human_response",
        "tool_result",
        "done",
    ]
    result = finished.events[4]
    assert isinstance(result, ToolResult) and result.data.call_id == "call-1"
    assert result.data.result["deployment_id"] == "dep-0001"
    assert model.calls == []
