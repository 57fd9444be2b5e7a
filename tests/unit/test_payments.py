"""The payments agent: pre-fetched customers (factor 13), an amount-based approval policy, and
executors against the real fake payments service on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from agents import default_prompts_dir
from agents.payments import APPROVAL_THRESHOLD_CENTS, CreatePaymentLink, PaymentsSettings, build_payments
from twelvefactor.core import replies, state
from twelvefactor.core.agent import Agent
from twelvefactor.core.events import Error, Thread, ToolCall, ToolResult
from twelvefactor.core.ports import Ports
from twelvefactor.core.prompts import JinjaPrompts
from twelvefactor.core.reducer import run_until_paused, step
from twelvefactor.core.state import ThreadStatus
from twelvefactor.local.fake_services import CUSTOMERS, run_fake_services
from twelvefactor.local.scripted import ScriptedModel

AT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
REQUEST = "Create a payment link for $750 for Jeff for the February AI tinkerers meetup"


def intent_json(intent: str, **arguments: Any) -> str:
    return json.dumps({"intent": intent, **arguments})


def link_json(amount_cents: int, customer_id: str = "cus_jeff") -> str:
    return intent_json(
        "create_payment_link",
        customer_id=customer_id,
        amount_cents=amount_cents,
        currency="usd",
        description="February AI tinkerers meetup",
    )


@pytest.fixture
def service_url() -> Iterator[str]:
    with run_fake_services() as url:
        yield url


@pytest.fixture
def payments(service_url: str) -> Agent:
    return build_payments(PaymentsSettings(service_url=service_url))


def links(url: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = httpx.get(f"{url}/payment_links").json()["payment_links"]
    return result


def launched(text: str = REQUEST) -> Thread:
    return Thread(id="thread-2", agent="payments", events=tuple(replies.launch(text, at=AT, channel="api")))


def ports_for(model: ScriptedModel) -> Ports:
    return Ports(llm=model, prompts=JinjaPrompts(default_prompts_dir()))


def test_customers_are_fetched_before_the_model_is_first_asked(payments: Agent) -> None:
    # Given a fresh request and a model with nothing to say
    model = ScriptedModel([])
    # When the reducer makes its first move
    events = step(payments, launched(), ports_for(model))
    # Then it listed the customers itself and did not ask the model
    call, result = events
    assert isinstance(call, ToolCall)
    assert call.data.intent == "list_customers"
    assert isinstance(result, ToolResult)
    assert result.data.result == {"customers": list(CUSTOMERS)}
    assert model.calls == []


def test_a_large_link_waits_for_approval_then_is_created_once(payments: Agent, service_url: str) -> None:
    # Given a request for $750 and a model that picks Jeff's id from the pre-fetched customers
    model = ScriptedModel([link_json(75_000), intent_json("done_for_now", message="Link sent.")])
    ports = ports_for(model)
    # When the loop runs
    thread = run_until_paused(payments, launched(), ports)
    # Then the model saw the customers in its first prompt and the link waits for approval
    first_prompt = next(m["content"] for m in model.calls[0] if m["role"] == "user")
    assert "<list_customers_result>" in first_prompt
    assert "cus_jeff" in first_prompt
    assert state.status(thread.events) is ThreadStatus.AWAITING_APPROVAL
    assert links(service_url) == []
    # When a person approves
    thread = thread.extended(replies.respond(thread, replies.ApprovalReply(approved=True), at=AT))
    thread = run_until_paused(payments, thread, ports)
    # Then exactly one link exists, for Jeff, and the thread is done
    assert state.status(thread.events) is ThreadStatus.DONE
    assert [(link["customer_id"], link["amount_cents"]) for link in links(service_url)] == [
        ("cus_jeff", 75_000)
    ]


def test_a_small_link_is_created_without_approval(payments: Agent, service_url: str) -> None:
    model = ScriptedModel([link_json(2_500), intent_json("done_for_now", message="Link sent.")])
    thread = run_until_paused(payments, launched(), ports_for(model))
    assert state.status(thread.events) is ThreadStatus.DONE
    created = links(service_url)
    assert len(created) == 1
    # The link's url reached the model, so it can hand it to the person
    assert created[0]["url"] in next(m["content"] for m in model.calls[1] if m["role"] == "user")


@pytest.mark.parametrize(
    ("amount_cents", "needs_approval"),
    [(1, False), (APPROVAL_THRESHOLD_CENTS, False), (APPROVAL_THRESHOLD_CENTS + 1, True)],
)
def test_approval_is_needed_only_above_the_threshold(
    payments: Agent, amount_cents: int, needs_approval: bool
) -> None:
    tool = payments.tool("create_payment_link")
    assert tool is not None
    call = CreatePaymentLink(
        customer_id="cus_jeff", amount_cents=amount_cents, currency="usd", description="x"
    )
    assert tool.needs_approval(call) is needs_approval


@pytest.mark.parametrize(
    "changes",
    [
        {"amount_cents": 0},
        {"amount_cents": 7.5},
        {"currency": "btc"},
        {"description": ""},
        {"customer_id": "a b"},
    ],
)
def test_invalid_link_arguments_are_rejected(payments: Agent, changes: dict[str, Any]) -> None:
    arguments = json.loads(link_json(100)) | changes
    with pytest.raises(ValidationError):
        payments.intents.validate_json(json.dumps(arguments))


def test_an_unknown_customer_becomes_an_error_event(payments: Agent, service_url: str) -> None:
    # Given a model that invents a customer id
    model = ScriptedModel([link_json(500, customer_id="cus_invented")])
    thread = launched()
    ports = ports_for(model)
    # When the prefetch and the model's call run
    for _ in range(3):
        thread = thread.extended(step(payments, thread, ports))
    # Then the service's refusal is in the thread as an error the model will read, and no link exists
    error = thread.events[-1]
    assert isinstance(error, Error)
    assert "HTTP 404: unknown customer cus_invented" in error.data.message
    assert links(service_url) == []


def test_a_failed_prefetch_is_an_error_and_the_model_is_asked_next(payments: Agent, service_url: str) -> None:
    # Given the payments service down for one call
    httpx.post(f"{service_url}/_control/fail", json={"times": 1}).raise_for_status()
    model = ScriptedModel([intent_json("list_customers")])
    ports = ports_for(model)
    # When the first move pre-fetches the customers
    thread = launched().extended(step(payments, launched(), ports))
    # Then the failure is an error event in the thread
    assert isinstance(thread.events[-1], Error)
    assert "Failed to connect to payments service" in thread.events[-1].data.message
    # And the next move asks the model, which sees the error and lists the customers again
    thread = thread.extended(step(payments, thread, ports))
    assert "Failed to connect to payments service" in model.calls[0][-1]["content"]
    assert isinstance(thread.events[-1], ToolCall)
    assert thread.events[-1].data.intent == "list_customers"
