"""deploybot on the embedded SmolLM2-135M through the whole local stack.

A model this small decides differently from run to run, so this test asserts structure, not a
story: every event it produced is a valid event, and the run stops (done, an escalation, or a pause
for a person) without ever spending more than the agent's step and error budgets.

It needs the `local` extra (llama-cpp-python). Without it the test FAILS, saying how to install it,
unless TWELVEFACTOR_SKIP_EMBEDDED_LLM=1 explicitly opts out.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator

import httpx
import pytest

import agents
from tests.e2e.helpers import execution, pending_wait, stored_event_types
from tests.support import poll_until
from twelvefactor.commands.threads import ThreadsApi
from twelvefactor.core import state
from twelvefactor.core.events import Escalation, Event, HumanRequest
from twelvefactor.core.state import ThreadStatus
from twelvefactor.local.stack import LocalStack, open_llm

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

OPT_OUT = "TWELVEFACTOR_SKIP_EMBEDDED_LLM"
CANNED_ANSWER = "Deploy the backend to production with the newest tag."
# Generous: each answer of a CPU model on a shared machine can take tens of seconds.
PAUSE_DEADLINE_SECONDS = 1200.0
MAX_ANSWERS = 6


@pytest.fixture(scope="module")
def embedded_stack() -> Iterator[LocalStack]:
    if os.environ.get(OPT_OUT) == "1":
        pytest.skip(f"{OPT_OUT}=1 opts out of the embedded model test")
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.fail(
            "llama-cpp-python is not installed, so the embedded model cannot run: "
            f".venv/bin/pip install -e '.[local]' (builds llama.cpp, about 6 minutes), or set {OPT_OUT}=1"
        )
    with open_llm("embedded") as llm, LocalStack(llm) as stack:
        yield stack


def drive(api: ThreadsApi, thread_id: str) -> list[Event]:
    """What a cooperative person does: approve, answer one question, and stop at an escalation or
    at a second question (answers restart the step budget, so answering forever proves nothing)."""
    answers, answered_a_question = 0, False
    while True:
        status = poll_until(
            lambda: ThreadStatus(api.get(thread_id)["status"]),
            lambda current: not current.is_runnable,
            timeout=PAUSE_DEADLINE_SECONDS,
            every=0.5,
        )
        events = [item.event for item in api.events(thread_id)]
        if answers == MAX_ANSWERS:
            return events
        if status is ThreadStatus.AWAITING_APPROVAL:
            api.respond(thread_id, {"kind": "approval", "approved": True})
        elif isinstance(events[-1], HumanRequest) and not answered_a_question:
            answered_a_question = True
            api.respond(thread_id, {"kind": "response", "text": CANNED_ANSWER})
        else:
            return events
        answers += 1


def test_the_embedded_model_runs_deploybot_to_a_stop_within_its_budgets(embedded_stack: LocalStack) -> None:
    stack = embedded_stack
    api = ThreadsApi(stack.api_url, timeout=60)
    agent = agents.build_registry().get("deploybot")

    # Given the request of the 12-factor-agents example, launched through the REST API
    launched = httpx.post(
        f"{stack.api_url}/threads",
        json={"agent": "deploybot", "message": "Can you deploy the backend?"},
        timeout=60,
    )
    assert launched.status_code == 202
    thread_id = launched.json()["thread_id"]

    # When the embedded model runs it, with a person approving and answering once
    try:
        events = drive(api, thread_id)
    finally:
        api.close()

    # Then every event the API serves is valid (ThreadsApi parsed each one) and all were stored
    assert len(stored_event_types(stack, thread_id)) == len(events)
    assert [event.type for event in events] == stored_event_types(stack, thread_id)
    # ... no stretch between two human turns took more model steps or errors in a row than allowed
    for end in range(1, len(events) + 1):
        assert state.steps_since_launch(events[:end]) <= agent.max_steps
        assert state.consecutive_errors(events[:end]) <= agent.max_consecutive_errors
    # ... and the run stopped: done (execution SUCCEEDED), or waiting for a person after an
    # escalation or a question (the execution paused on its task token, the wait stored)
    final = state.status(events)
    assert final in (ThreadStatus.DONE, ThreadStatus.AWAITING_HUMAN, ThreadStatus.AWAITING_APPROVAL)
    if final is ThreadStatus.DONE:
        poll_until(lambda: execution(stack, thread_id)["status"], lambda status: status == "SUCCEEDED")
    else:
        assert isinstance(events[-1], Escalation | HumanRequest) or final is ThreadStatus.AWAITING_APPROVAL
        poll_until(lambda: pending_wait(stack, thread_id), lambda wait: wait is not None)
        assert execution(stack, thread_id)["status"] == "RUNNING"
