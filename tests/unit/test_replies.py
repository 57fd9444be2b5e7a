"""Factors 6 and 7: what a thread accepts from the outside world, and the NotWaiting refusals.

Each refusal is what the API turns into a 409: a reply for something the thread does not wait for
must change nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from tests.unit.agent_fixtures import Harness, harness, intent_json
from twelvefactor.core import replies, state
from twelvefactor.core.errors import NotWaiting
from twelvefactor.core.events import Approval, ApprovalData, Cancelled, HumanResponse, ToolResult, UserMessage
from twelvefactor.core.state import ThreadStatus

NOW = datetime(2025, 1, 2, tzinfo=UTC)
Situation = Callable[[Path], Harness]
LIST_TAGS = intent_json("list_git_tags")
DEPLOY_PROD = intent_json("deploy_backend", tag="v1.2.3", environment="production")
DONE = intent_json("done_for_now", message="done")


def paused(tmp_path: Path, *script: str) -> Harness:
    """A thread launched and run until it pauses on whatever the script leads to."""
    h = harness(tmp_path, list(script))
    h.launch("Can you deploy the backend?")
    h.run()
    return h


def awaiting_approval(tmp_path: Path) -> Harness:
    return paused(tmp_path, LIST_TAGS, DEPLOY_PROD)


def awaiting_human(tmp_path: Path) -> Harness:
    return paused(tmp_path, intent_json("request_human_input", question="Which tag?"))


def awaiting_callback(tmp_path: Path) -> Harness:
    return paused(tmp_path, intent_json("run_migration", tag="v1.2.3"))


def done(tmp_path: Path) -> Harness:
    return paused(tmp_path, DONE)


def cancelled(tmp_path: Path) -> Harness:
    h = awaiting_human(tmp_path)
    h.append(replies.cancel(h.thread, at=NOW, by="alice", reason="not needed"))
    return h


def test_launch_starts_a_thread_with_the_user_message() -> None:
    [event] = replies.launch("Can you deploy the backend?", at=NOW, channel="slack", sender="U1")
    assert isinstance(event, UserMessage)
    assert (event.data.text, event.data.channel, event.data.sender) == (
        "Can you deploy the backend?",
        "slack",
        "U1",
    )


def test_approval_answers_the_pending_call(tmp_path: Path) -> None:
    h = awaiting_approval(tmp_path)
    pending = state.awaiting_approval(h.thread.events)
    assert pending is not None

    [event] = replies.respond(h.thread, replies.ApprovalReply(approved=True, by="alice"), at=NOW)

    assert isinstance(event, Approval)
    assert (event.data.call_id, event.data.approved, event.data.by) == (pending.data.call_id, True, "alice")


def test_approval_for_another_call_is_refused(tmp_path: Path) -> None:
    h = awaiting_approval(tmp_path)
    with pytest.raises(NotWaiting, match="call-99"):
        replies.respond(h.thread, replies.ApprovalReply(approved=True, call_id="call-99"), at=NOW)


@pytest.mark.parametrize("situation", [awaiting_human, awaiting_callback, done, cancelled])
def test_approval_is_refused_unless_an_approval_is_pending(tmp_path: Path, situation: Situation) -> None:
    h = situation(tmp_path)
    with pytest.raises(NotWaiting, match="approval"):
        replies.respond(h.thread, replies.ApprovalReply(approved=True), at=NOW)


def test_a_text_reply_answers_a_question(tmp_path: Path) -> None:
    h = awaiting_human(tmp_path)
    [event] = replies.respond(h.thread, replies.TextReply(text="v1.2.2", by="bob"), at=NOW)
    assert isinstance(event, HumanResponse)
    assert (event.data.text, event.data.by) == ("v1.2.2", "bob")


def test_a_text_reply_answers_an_escalation(tmp_path: Path) -> None:
    h = paused(tmp_path, "not json", "not json", "not json")
    assert state.status(h.thread.events) is ThreadStatus.AWAITING_HUMAN
    [event] = replies.respond(h.thread, replies.TextReply(text="try again"), at=NOW)
    assert isinstance(event, HumanResponse)


@pytest.mark.parametrize("situation", [awaiting_approval, awaiting_callback, done, cancelled])
def test_a_text_reply_is_refused_unless_a_person_was_asked(tmp_path: Path, situation: Situation) -> None:
    h = situation(tmp_path)
    with pytest.raises(NotWaiting, match="human response"):
        replies.respond(h.thread, replies.TextReply(text="hello"), at=NOW)


def test_a_follow_up_answers_a_question(tmp_path: Path) -> None:
    h = awaiting_human(tmp_path)
    [event] = replies.follow_up(h.thread, "v1.2.2", at=NOW, channel="slack", sender="U1")
    assert isinstance(event, HumanResponse)


def test_a_follow_up_after_done_launches_again(tmp_path: Path) -> None:
    h = done(tmp_path)
    [event] = replies.follow_up(h.thread, "and the frontend?", at=NOW, channel="slack", sender="U1")
    assert isinstance(event, UserMessage)
    assert state.status((*h.thread.events, event)) is ThreadStatus.READY


@pytest.mark.parametrize("situation", [awaiting_approval, awaiting_callback, cancelled])
def test_a_follow_up_is_refused_while_an_answer_of_another_kind_is_due(
    tmp_path: Path, situation: Situation
) -> None:
    h = situation(tmp_path)
    with pytest.raises(NotWaiting):
        replies.follow_up(h.thread, "hello?", at=NOW, channel="slack", sender="U1")


def test_a_callback_resolves_the_waiting_call(tmp_path: Path) -> None:
    h = awaiting_callback(tmp_path)
    call = state.awaiting_callback(h.thread.events)
    assert call is not None
    [event] = replies.callback(h.thread, call.data.call_id, {"migrated": True}, at=NOW)
    assert isinstance(event, ToolResult)
    assert (event.data.call_id, event.data.intent, event.data.result) == (
        call.data.call_id,
        "run_migration",
        {"migrated": True},
    )


def test_a_callback_for_another_call_is_refused(tmp_path: Path) -> None:
    h = awaiting_callback(tmp_path)
    with pytest.raises(NotWaiting, match="call-99"):
        replies.callback(h.thread, "call-99", {}, at=NOW)


@pytest.mark.parametrize("situation", [awaiting_approval, awaiting_human, done, cancelled])
def test_a_callback_is_refused_when_nothing_awaits_one(tmp_path: Path, situation: Situation) -> None:
    h = situation(tmp_path)
    with pytest.raises(NotWaiting, match="callback"):
        replies.callback(h.thread, "call-1", {}, at=NOW)


def test_a_duplicate_callback_is_refused(tmp_path: Path) -> None:
    # Given a callback already delivered
    h = awaiting_callback(tmp_path)
    call = state.awaiting_callback(h.thread.events)
    assert call is not None
    h.append(replies.callback(h.thread, call.data.call_id, {"migrated": True}, at=NOW))

    # When the same callback is delivered again (a webhook retry)
    # Then it is refused
    with pytest.raises(NotWaiting):
        replies.callback(h.thread, call.data.call_id, {"migrated": True}, at=NOW)


@pytest.mark.parametrize("situation", [awaiting_approval, awaiting_human, awaiting_callback])
def test_a_waiting_thread_can_be_cancelled(tmp_path: Path, situation: Situation) -> None:
    h = situation(tmp_path)
    [event] = replies.cancel(h.thread, at=NOW, by="alice", reason="not needed")
    assert isinstance(event, Cancelled)
    assert state.status((*h.thread.events, event)) is ThreadStatus.CANCELLED


@pytest.mark.parametrize("situation", [done, cancelled])
def test_an_ended_thread_cannot_be_cancelled(tmp_path: Path, situation: Situation) -> None:
    h = situation(tmp_path)
    with pytest.raises(NotWaiting, match="already ended"):
        replies.cancel(h.thread, at=NOW)


def test_a_cancelled_thread_makes_no_more_moves(tmp_path: Path) -> None:
    # Given a thread cancelled while it waited for a person
    h = cancelled(tmp_path)
    asked = len(h.model.calls)

    # When the runtime tries to run it
    h.run()

    # Then the model is not asked again
    assert len(h.model.calls) == asked


@pytest.mark.parametrize(
    "payload",
    [
        {"kind": "response", "text": ""},
        {"kind": "approval"},
        {"kind": "approval", "approved": True, "token": "x"},
        {"kind": "vote", "approved": True},
    ],
)
def test_malformed_replies_are_rejected_before_reaching_a_thread(payload: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(replies.HumanReply).validate_python(payload)


@pytest.mark.parametrize("approved", ["yes", "true", "false", 1, 0])
def test_an_approval_is_a_boolean_not_something_coerced_to_one(approved: object) -> None:
    # Given an answer or a stored approval whose `approved` is not a real boolean
    # When either is validated
    # Then it is refused rather than read as a decision ("false" would otherwise approve)
    with pytest.raises(ValidationError):
        replies.ApprovalReply.model_validate({"approved": approved})
    with pytest.raises(ValidationError):
        ApprovalData.model_validate({"call_id": "call-1", "approved": approved})
