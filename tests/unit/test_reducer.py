"""Factors 8, 9, 10, 12 and 13: the reducer's control flow, driven by a scripted model.

The scripted model implements the same port as the openai adapter; the tools are a tiny deploy
agent whose executors record every call (tests/unit/agent_fixtures.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.agent_fixtures import TAGS, DeployService, Harness, ListGitTags, harness, intent_json
from twelvefactor.core import replies, state
from twelvefactor.core.errors import LlmRejected, LlmUnavailable, NotWaiting
from twelvefactor.core.events import (
    Approval,
    ApprovalRequested,
    Done,
    Error,
    Escalation,
    HumanRequest,
    TokenUsage,
    ToolCall,
    ToolResult,
    UserMessage,
)
from twelvefactor.core.ports import ModelReply
from twelvefactor.core.reducer import step
from twelvefactor.core.state import ThreadStatus
from twelvefactor.local.scripted import ScriptExhausted

LIST_TAGS = intent_json("list_git_tags")
DEPLOY_PROD = intent_json("deploy_backend", tag="v1.2.3", environment="production")
DONE = intent_json("done_for_now", message="Deployed v1.2.3 to production.")
UNPARSEABLE = '{"intent": "deploy_backend", "tag": '
SCHEMA_VIOLATION = intent_json("deploy_backend", tag="v1.2.3")  # no environment
UNKNOWN_INTENT = intent_json("drop_database", name="prod")


def deploy_request(tmp_path: Path, *later: str | Exception) -> Harness:
    """Given "Can you deploy the backend?" and a model that lists tags, then deploys to production."""
    h = harness(tmp_path, [LIST_TAGS, DEPLOY_PROD, *later])
    h.launch("Can you deploy the backend?")
    return h


def test_production_deploy_stops_for_approval_with_the_tags_in_the_thread(tmp_path: Path) -> None:
    h = deploy_request(tmp_path)

    # When the loop runs until it pauses
    thread = h.run()

    # Then the tags were fetched, the deploy was decided but not executed, and the thread waits
    assert state.status(thread.events) is ThreadStatus.AWAITING_APPROVAL
    assert h.service.names() == ["list_git_tags"]
    result = h.events_of(ToolResult)[0]
    assert result.data.result == {"tags": TAGS}
    pending = state.awaiting_approval(thread.events)
    assert pending is not None
    assert pending.data.intent == "deploy_backend"
    assert pending.data.arguments == {"tag": "v1.2.3", "environment": "production"}
    # ... and the model saw the tags before it chose the deploy
    assert "<list_git_tags_result>" in h.user_message_seen(1)
    assert "v1.2.3" in h.user_message_seen(1)
    assert h.model.remaining == 0


def test_approval_executes_the_deploy_exactly_once_then_done_ends_the_thread(tmp_path: Path) -> None:
    h = deploy_request(tmp_path, DONE)
    h.run()

    # When a person approves and the loop runs again
    h.respond(replies.ApprovalReply(approved=True, by="alice"))
    thread = h.run()

    # Then the approved call ran once, with the call's stable idempotency key, and the thread is done
    deploys = [call for call in h.service.calls if call[0] == "deploy_backend"]
    approved_call = h.events_of(ToolCall)[-1]
    assert deploys == [
        (
            "deploy_backend",
            {"tag": "v1.2.3", "environment": "production"},
            f"thread-1:{approved_call.data.call_id}",
        )
    ]
    assert state.status(thread.events) is ThreadStatus.DONE
    assert isinstance(thread.events[-1], Done)
    assert thread.events[-1].data.message == "Deployed v1.2.3 to production."
    # ... and running a finished thread again executes nothing more
    assert step(h.agent, thread, h.ports) == []
    assert len(h.service.calls) == 2


def test_rejection_feedback_reaches_the_model_which_is_asked_again(tmp_path: Path) -> None:
    h = deploy_request(tmp_path, intent_json("deploy_backend", tag="v1.2.3", environment="staging"), DONE)
    h.run()
    asked_before = len(h.model.calls)

    # When a person rejects with feedback
    h.respond(replies.ApprovalReply(approved=False, comment="Not on a Friday; use staging first."))
    thread = h.run()

    # Then the production deploy never ran, the model was asked again and saw the feedback
    assert len(h.model.calls) == asked_before + 2
    seen = h.user_message_seen(asked_before)
    assert "<approval>" in seen
    assert "approved: false" in seen
    assert "comment: Not on a Friday; use staging first." in seen
    environments = [
        arguments["environment"] for name, arguments, _ in h.service.calls if name == "deploy_backend"
    ]
    assert environments == ["staging"]
    assert state.status(thread.events) is ThreadStatus.DONE


def test_three_invalid_outputs_in_a_row_escalate_to_a_human(tmp_path: Path) -> None:
    # Given a model that answers with garbage, a schema violation and an unknown intent
    h = harness(tmp_path, [UNPARSEABLE, SCHEMA_VIOLATION, UNKNOWN_INTENT])
    h.launch("Can you deploy the backend?")

    # When the loop runs
    thread = h.run()

    # Then each became a compact error the model saw next, and the third led to an escalation
    errors = h.events_of(Error)
    assert [error.data.source for error in errors] == ["llm", "llm", "llm"]
    assert "invalid model output" in errors[0].data.message
    assert "environment" in errors[1].data.message
    assert "drop_database" in errors[2].data.message
    assert "<error>" in h.user_message_seen(1)
    assert isinstance(thread.events[-1], Escalation)
    assert thread.events[-1].data.reason == "error_budget"
    assert state.status(thread.events) is ThreadStatus.AWAITING_HUMAN
    assert len(h.model.calls) == 3
    assert h.service.calls == []


def test_two_invalid_then_a_valid_output_resets_the_error_count(tmp_path: Path) -> None:
    # Given two invalid answers, a valid one, then two more invalid ones and a final answer
    script = [UNPARSEABLE, UNKNOWN_INTENT, LIST_TAGS, SCHEMA_VIOLATION, UNPARSEABLE, DONE]
    h = harness(tmp_path, script)
    h.launch("Can you deploy the backend?")

    # When the loop runs
    thread = h.run()

    # Then four errors happened in total but never three in a row: no escalation, the thread is done
    assert len(h.events_of(Error)) == 4
    assert h.events_of(Escalation) == []
    assert state.status(thread.events) is ThreadStatus.DONE
    after_tags = thread.events[: thread.events.index(h.events_of(ToolResult)[0]) + 1]
    assert state.consecutive_errors(after_tags) == 0


def test_spent_step_budget_escalates_and_a_human_reply_starts_a_new_budget(tmp_path: Path) -> None:
    # Given an agent allowed two model decisions per launch and a model that keeps listing tags
    h = harness(tmp_path, [LIST_TAGS, LIST_TAGS, LIST_TAGS, DONE], max_steps=2)
    h.launch("Can you deploy the backend?")

    # When the loop runs
    thread = h.run()

    # Then it stops after two decisions with a step-budget escalation
    assert len(h.model.calls) == 2
    assert isinstance(thread.events[-1], Escalation)
    assert thread.events[-1].data.reason == "step_budget"
    assert state.status(thread.events) is ThreadStatus.AWAITING_HUMAN

    # When a person answers the escalation
    h.respond(replies.TextReply(text="Keep going, list them once more and stop."))
    thread = h.run()

    # Then the model gets a fresh budget
    assert len(h.model.calls) == 4
    assert state.status(thread.events) is ThreadStatus.DONE


@pytest.mark.parametrize(
    "failure", [LlmUnavailable("429 Too Many Requests after 3 retries"), LlmRejected("401 invalid api key")]
)
def test_adapter_errors_become_compact_error_events(tmp_path: Path, failure: Exception) -> None:
    # Given a model adapter that fails once, then answers
    h = harness(tmp_path, [failure, DONE])
    h.launch("Can you deploy the backend?")

    # When the loop runs
    thread = h.run()

    # Then the failure is an error event the model sees on the next try, and the thread finishes
    [error] = h.events_of(Error)
    assert error.data.source == "llm"
    assert error.data.message == f"{type(failure).__name__}: {failure}"
    assert f"message: {type(failure).__name__}: {failure}" in h.user_message_seen(1)
    assert state.status(thread.events) is ThreadStatus.DONE


def test_a_failing_model_adapter_escalates_after_the_error_budget(tmp_path: Path) -> None:
    # Given an adapter that keeps failing
    h = harness(tmp_path, [LlmUnavailable("timeout")] * 3)
    h.launch("Can you deploy the backend?")

    # When the loop runs
    thread = h.run()

    # Then it escalates instead of retrying forever
    assert len(h.model.calls) == 3
    assert isinstance(thread.events[-1], Escalation)


def test_a_bug_in_the_model_port_is_not_swallowed(tmp_path: Path) -> None:
    # Given a model asked more often than scripted (any non-LlmError exception)
    h = harness(tmp_path, [])
    h.launch("Can you deploy the backend?")

    # When / Then the exception propagates instead of being compacted into the thread
    with pytest.raises(ScriptExhausted):
        h.run()


def test_tool_exception_becomes_an_error_event_the_model_sees(tmp_path: Path) -> None:
    # Given a deployment service that cannot be reached
    service = DeployService(fail_with=ConnectionError("Failed to connect to deployment service"))
    h = harness(tmp_path, [LIST_TAGS, DONE], service=service)
    h.launch("Can you deploy the backend?")

    # When the loop runs
    thread = h.run()

    # Then the failure is a tool error tied to the call, and the model saw it before finishing
    [error] = h.events_of(Error)
    call = h.events_of(ToolCall)[0]
    assert error.data.source == "tool"
    assert error.data.call_id == call.data.call_id
    assert error.data.message == "ConnectionError: Failed to connect to deployment service"
    assert "Failed to connect to deployment service" in h.user_message_seen(1)
    assert state.status(thread.events) is ThreadStatus.DONE


def test_staging_deploy_runs_without_approval(tmp_path: Path) -> None:
    # Given a model that deploys to staging
    h = harness(tmp_path, [intent_json("deploy_backend", tag="v1.2.3", environment="staging"), DONE])
    h.launch("Deploy v1.2.3 to staging")

    # When the loop runs
    thread = h.run()

    # Then the policy let it through without asking anyone
    assert h.events_of(ApprovalRequested) == []
    assert h.service.names() == ["deploy_backend"]
    assert state.status(thread.events) is ThreadStatus.DONE


def test_request_human_input_waits_and_the_answer_resumes(tmp_path: Path) -> None:
    question = intent_json(
        "request_human_input", question="Which tag?", format="multiple_choice", choices=TAGS
    )
    h = harness(tmp_path, [question, DONE])
    h.launch("Deploy something")

    # When the loop runs
    thread = h.run()

    # Then it waits for a person with the model's question
    assert state.status(thread.events) is ThreadStatus.AWAITING_HUMAN
    request = h.events_of(HumanRequest)[0]
    assert request.data.choices == TAGS

    # When the person answers
    h.respond(replies.TextReply(text="v1.2.2"))
    thread = h.run()

    # Then the model saw the answer and finished
    assert "<human_response>v1.2.2</human_response>" in h.user_message_seen()
    assert state.status(thread.events) is ThreadStatus.DONE


def test_prefetch_adds_tool_results_before_the_first_model_call(tmp_path: Path) -> None:
    # Given an agent that always pre-fetches the tags
    h = harness(tmp_path, [DONE, DONE], prefetch=lambda thread: [ListGitTags()])
    h.launch("Can you deploy the backend?")

    # When the loop runs
    thread = h.run()

    # Then the tags were fetched without asking the model, and its first request already had them
    assert h.service.names() == ["list_git_tags"]
    assert [type(event) for event in thread.events[:3]] == [UserMessage, ToolCall, ToolResult]
    assert thread.events[1].usage is None
    assert "<list_git_tags_result>" in h.user_message_seen(0)

    # When the thread gets a follow-up message
    h.append(replies.follow_up(thread, "Thanks!", at=h.ports.clock(), channel="api", sender=None))
    h.run()

    # Then the prefetch does not run again
    assert h.service.names() == ["list_git_tags"]


def test_a_prefetch_that_finds_nothing_still_lets_the_model_decide(tmp_path: Path) -> None:
    # Given an agent whose prefetch has nothing to fetch for this thread
    h = harness(tmp_path, [DONE], prefetch=lambda thread: [])
    h.launch("Hello")

    # When the loop runs
    thread = h.run()

    # Then the model was still asked
    assert len(h.model.calls) == 1
    assert state.status(thread.events) is ThreadStatus.DONE


def test_async_tool_waits_for_its_callback_then_resumes(tmp_path: Path) -> None:
    # Given a model that starts a migration (an async tool)
    h = harness(tmp_path, [intent_json("run_migration", tag="v1.2.3"), DONE])
    h.launch("Migrate the database for v1.2.3")

    # When the loop runs
    thread = h.run()

    # Then the migration was dispatched once and the thread waits for its callback
    assert state.status(thread.events) is ThreadStatus.AWAITING_CALLBACK
    call = state.awaiting_callback(thread.events)
    assert call is not None
    assert h.service.calls == [("run_migration", {"tag": "v1.2.3"}, f"thread-1:{call.data.call_id}")]
    assert len(h.model.calls) == 1

    # When the callback arrives
    h.append(replies.callback(thread, call.data.call_id, {"migrated": True}, at=h.ports.clock()))
    thread = h.run()

    # Then the model saw the result and finished; the executor was not called again
    assert "<run_migration_result>\nmigrated: true\n</run_migration_result>" in h.user_message_seen()
    assert state.status(thread.events) is ThreadStatus.DONE
    assert len(h.service.calls) == 1


def test_an_approved_async_tool_is_dispatched_once_and_then_waits_for_its_callback(tmp_path: Path) -> None:
    # Given an async tool that needs approval, and a model that asks for it
    h = harness(tmp_path, [intent_json("run_migration", tag="v1.2.3"), DONE], migration_needs_approval=True)
    h.launch("Migrate the database for v1.2.3")
    thread = h.run()
    assert state.status(thread.events) is ThreadStatus.AWAITING_APPROVAL
    assert h.service.calls == []

    # When a person approves
    thread = h.respond(replies.ApprovalReply(approved=True))
    thread = h.run()

    # Then the job was dispatched once and the thread waits for the callback, not for the model
    assert state.status(thread.events) is ThreadStatus.AWAITING_CALLBACK
    assert h.service.names() == ["run_migration"]
    assert len(h.model.calls) == 1

    # When the callback arrives, the model sees the real result and finishes
    pending = state.awaiting_callback(thread.events)
    assert pending is not None
    h.append(replies.callback(thread, pending.data.call_id, {"migrated": True}, at=h.ports.clock()))
    thread = h.run()
    assert state.status(thread.events) is ThreadStatus.DONE
    assert "migrated: true" in h.user_message_seen()
    assert h.service.names() == ["run_migration"]


def test_a_retried_step_decides_the_same_call_id(tmp_path: Path) -> None:
    # Given a thread and a model that gives the same answer twice (a crash before persisting)
    h = harness(tmp_path, [LIST_TAGS, LIST_TAGS])
    thread = h.launch("Can you deploy the backend?")

    # When the same move is made twice from the same thread
    first, second = step(h.agent, thread, h.ports), step(h.agent, thread, h.ports)

    # Then both carry the same call id, hence the same idempotency key for the executor
    assert isinstance(first[0], ToolCall) and isinstance(second[0], ToolCall)
    assert first[0].data.call_id == second[0].data.call_id == f"call-{len(thread.events)}"


def test_token_usage_is_recorded_on_decision_events(tmp_path: Path) -> None:
    # Given a model that reports usage
    usage = TokenUsage(prompt_tokens=120, completion_tokens=8)
    h = harness(tmp_path, [ModelReply(LIST_TAGS, usage), ModelReply(DONE, usage)])
    h.launch("Can you deploy the backend?")

    # When the loop runs
    thread = h.run()

    # Then each decision carries it and the thread's cost sums up
    assert h.events_of(ToolCall)[0].usage == usage
    assert state.total_tokens(thread.events) == 256


def test_an_approval_does_not_re_execute_on_a_second_resume(tmp_path: Path) -> None:
    # Given an approved and executed deploy
    h = deploy_request(tmp_path, DONE)
    h.run()
    h.respond(replies.ApprovalReply(approved=True))
    h.run()

    # When someone approves again
    # Then it is refused and nothing ran twice
    with pytest.raises(NotWaiting, match="not waiting for an approval"):
        h.respond(replies.ApprovalReply(approved=True))
    assert len(h.events_of(Approval)) == 1
    assert h.service.names().count("deploy_backend") == 1
