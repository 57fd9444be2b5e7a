"""LLM faults: the real LLM adapter against a scripted OpenAI-compatible server on loopback.

The Reducer function runs on a thread in the store, configured as in Lambda (``OPENAI_BASE_URL``,
``LLM_MAX_RETRIES``, ``LLM_TIMEOUT_SECONDS``); the fake server answers with rate limits, server
errors, slow answers and every shape of bad output a model produces. The adapter's HTTP client
retries transient faults; what is left becomes an error event the model reads next time (factor 9);
the agent's error budget (three in a row for deploybot) turns a streak into an escalation.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.integration.stack import Stack
from tests.reliability.conftest import Cases
from twelvefactor import runtime
from twelvefactor.adapters.ports import ThreadMeta
from twelvefactor.core.events import (
    Error,
    Escalation,
    Event,
    ToolCall,
    ToolResult,
    UserMessage,
    UserMessageData,
)
from twelvefactor.local.fake_openai import Answer, FakeOpenAI, HttpError

pytestmark = [pytest.mark.scenario("LLM faults"), pytest.mark.integration]

AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
MAX_RETRIES = 2
TIMEOUT_SECONDS = 0.5


def step(intent: str, **arguments: Any) -> str:
    """A valid answer in strict structured-output mode: the intent wrapped as {"step": ...}."""
    return json.dumps({"step": {"intent": intent, **arguments}})


@pytest.fixture
def llm(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    """The fake provider, and a runtime whose model is the real adapter pointed at it."""
    with FakeOpenAI() as fake:
        for name, value in {
            "OPENAI_BASE_URL": fake.base_url,
            "OPENAI_API_KEY": "sk-test-not-a-real-key-0000",
            "LLM_MODEL": fake.model,
            "LLM_OUTPUT_MODE": "json_schema",
            "LLM_MAX_RETRIES": str(MAX_RETRIES),
            "LLM_TIMEOUT_SECONDS": str(TIMEOUT_SECONDS),
        }.items():
            monkeypatch.setenv(name, value)
        runtime.reset()
        yield fake
        adapter = runtime.current().__dict__.get("llm")  # built on first use, if it was used
        if adapter is not None:
            adapter.close()


def _thread(stack: Stack) -> str:
    thread_id = uuid.uuid4().hex
    opening = UserMessage(at=AT, data=UserMessageData(text="Deploy the latest backend tag to staging."))
    stack.store.create(ThreadMeta(thread_id=thread_id, agent="deploybot", created_at=AT), [opening])
    return thread_id


def _reduce(stack: Stack, thread_id: str) -> tuple[dict[str, Any], tuple[Event, ...]]:
    result = stack.invoke("ReducerFunction", {"thread_id": thread_id})
    return result, stack.events(thread_id)


def test_transient_faults_are_retried_with_backoff_and_leave_no_trace(
    stack: Stack, llm: FakeOpenAI, cases: Cases
) -> None:
    """429 (with retry-after), 500 and a timeout, each followed by a good answer: the adapter retries
    within one move, the thread records only the decision, and no error event is written."""
    # Given a provider that rate-limits before the first decision, then fails and times out before
    # the second (the deploy's done message is code's, so there is no third)
    llm.enqueue(
        HttpError(429, "Rate limit reached", retry_after_seconds=0.01),
        step("list_git_tags"),
        HttpError(500, "The server had an error", retry_after_seconds=0.01),
        Answer(
            step("deploy_backend", tag="v1.2.3", environment="staging"), delay_seconds=TIMEOUT_SECONDS * 4
        ),
        step("deploy_backend", tag="v1.2.3", environment="staging"),
    )

    # When the reducer runs
    result, events = _reduce(stack, thread_id := _thread(stack))
    cases.add(3)

    # Then each fault cost one extra request and the thread holds only the two decisions' effects
    assert len(llm.requests) == 5
    assert result == {"thread_id": thread_id, "status": "done"}
    assert [event.type for event in events] == [
        "user_message",
        "tool_call",
        "tool_result",
        "tool_call",
        "tool_result",
        "done",
    ]
    assert not [event for event in events if isinstance(event, Error)]


def test_bad_answers_are_compacted_into_the_thread_and_the_model_recovers(
    stack: Stack, llm: FakeOpenAI, cases: Cases
) -> None:
    """Truncated JSON, schema-invalid JSON, an unknown intent and an empty answer each become one
    short error event (no retry of a model that answered), the next prompt shows it, and a good
    answer after them carries the thread on."""
    # Given a model that answers badly twice, recovers, answers badly twice more, then finishes
    # (the schema-invalid deploy comes once the tags are listed, when a deploy is offered at all)
    bad = {
        "truncated": '{"step": {"intent": "deploy_backend", "tag": "v1.2',
        "empty": "",
        "schema-invalid": step("deploy_backend", tag="v1.2.3; rm -rf /", environment="prod"),
        "unknown intent": step("drop_database", confirm=True),
    }
    llm.enqueue(
        bad["truncated"],
        bad["empty"],
        step("list_git_tags"),
        bad["schema-invalid"],
        bad["unknown intent"],
        step("done_for_now", message="The newest tag is v1.2.3."),
    )

    # When the reducer runs
    result, events = _reduce(stack, thread_id := _thread(stack))
    cases.add(len(bad))

    # Then every bad answer is one compact llm error, in order, and the thread still finished
    assert result == {"thread_id": thread_id, "status": "done"}
    assert [event.type for event in events] == [
        "user_message",
        "error",
        "error",
        "tool_call",
        "tool_result",
        "error",
        "error",
        "done",
    ]
    errors = [event for event in events if isinstance(event, Error)]
    assert all(
        error.data.source == "llm" and "invalid model output" in error.data.message for error in errors
    )
    assert all(len(error.data.message) <= 601 for error in errors)
    assert "environment" in errors[2].data.message and "drop_database" in errors[3].data.message
    # And the model was asked once per answer (nothing retried) and saw its own mistake next time
    assert len(llm.requests) == 6
    assert "invalid model output" in llm.requests[1]["messages"][-1]["content"]


def test_a_streak_of_failures_is_escalated_after_the_error_budget(
    stack: Stack, llm: FakeOpenAI, cases: Cases
) -> None:
    """A provider that keeps failing (500 through every retry), then refuses the request (400, not
    retried), then answers nothing: three error events, then an escalation, and the reducer
    returns 'waiting' instead of raising."""
    # Given three failing steps in a row
    llm.enqueue(
        *[HttpError(500, "upstream overloaded", retry_after_seconds=0.01)] * (MAX_RETRIES + 1),
        HttpError(400, "Invalid 'messages': too long"),
        "",
    )

    # When the reducer runs
    result, events = _reduce(stack, thread_id := _thread(stack))
    cases.add(3)

    # Then the first two are the provider's failures, compacted, the third the empty answer
    assert result == {"thread_id": thread_id, "status": "waiting"}
    assert [event.type for event in events] == ["user_message", "error", "error", "error", "escalation"]
    first, second, third = (event for event in events if isinstance(event, Error))
    assert "kept failing (500) after retries" in first.data.message
    assert "rejected the request (400)" in second.data.message
    assert "invalid model output" in third.data.message
    escalation = events[-1]
    assert isinstance(escalation, Escalation) and escalation.data.reason == "error_budget"
    # And the retries happened only where they could help: 3 requests for the 500, 1 for the 400
    assert len(llm.requests) == MAX_RETRIES + 1 + 2
    # And nothing was run on the model's behalf
    assert not [event for event in events if isinstance(event, ToolCall | ToolResult)]
