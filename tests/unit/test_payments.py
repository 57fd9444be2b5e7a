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
from twelvefactor.core import control, replies, state
from twelvefactor.core.agent import Agent
from twelvefactor.core.events import Done, Error, Thread, ToolCall, ToolResult
from twelvefactor.core.ports import Ports
from twelvefactor.core.prompts import JinjaPrompts
from twelvefactor.core.reducer import run_until_paused, step
from twelvefactor.core.state import ThreadStatus
from twelvefactor.local.fake_services import CUSTOMERS, PRICES, PRODUCTS, run_fake_services
from twelvefactor.local.scripted import ScriptedModel

AT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
REQUEST = "Create a payment link for $750 for Jeff for the February AI tinkerers meetup"


def intent_json(intent: str, **arguments: Any) -> str:
    return json.dumps({"intent": intent, **arguments})


def link_json(
    amount_cents: int = 75_000, customer: str = "cus_jeff", price: str = "prc_meetup_standard"
) -> str:
    """The seed's create_payment_link, with ids the lookups returned."""
    return intent_json(
        "create_payment_link",
        customer=customer,
        product="prod_meetup",
        price=price,
        quantity=1,
        amount_cents=amount_cents,
        memo="Hey Jeff - see below for the payment link for the February AI tinkerers meetup",
    )


LOOKUPS = [intent_json("list_products"), intent_json("list_prices")]


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
    # Given the seed's request and a model that looks up the products and prices, then links them
    model = ScriptedModel([*LOOKUPS, link_json(75_000)])
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
    # Then exactly one link exists, for Jeff, and code ended the turn with its url
    assert state.status(thread.events) is ThreadStatus.DONE
    [link] = links(service_url)
    assert (link["customer"], link["price"], link["amount_cents"]) == (
        "cus_jeff",
        "prc_meetup_standard",
        75_000,
    )
    done = thread.events[-1]
    assert isinstance(done, Done) and done.data.origin == "completion"
    assert (
        done.data.message == f"Created a payment link for cus_jeff (1 x prod_meetup, 750.00): {link['url']}"
    )
    assert model.remaining == 0


def test_a_small_link_is_created_without_approval(payments: Agent, service_url: str) -> None:
    model = ScriptedModel([*LOOKUPS, link_json(2_500, price="prc_meetup_student")])
    thread = run_until_paused(payments, launched(), ports_for(model))
    assert state.status(thread.events) is ThreadStatus.DONE
    [created] = links(service_url)
    # The link's url reached the person in the done message
    assert created["url"] in thread.events[-1].data.message  # type: ignore[union-attr]


def test_a_link_is_not_offered_before_its_ids_were_looked_up(payments: Agent) -> None:
    # Given the customers pre-fetched, but no products or prices yet
    thread = launched()
    thread = thread.extended(step(payments, thread, ports_for(ScriptedModel([]))))

    # Then the link is withheld: its product and price have nothing to come from
    offer = control.offer(payments, thread)
    assert "create_payment_link" not in offer.names
    assert offer.withheld["create_payment_link"] == "no list_products result gives a product to use yet"
    assert {"list_products", "list_prices"} <= set(offer.names)
    assert "list_customers" in offer.withheld  # answered by the prefetch, still current


def test_the_schema_offers_exactly_the_ids_the_lookups_returned(payments: Agent) -> None:
    # Given every lookup answered
    model = ScriptedModel([*LOOKUPS, link_json(2_500, price="prc_meetup_student")])
    thread = launched()
    ports = ports_for(model)
    for _ in range(5):
        thread = thread.extended(step(payments, thread, ports))

    # Then each grounded field of the link is an enum of the ids listed, and nothing else
    assert [event.type for event in thread.events[-2:]] == ["tool_call", "tool_result"]
    offer = control.offer(payments, thread)
    fields = offer.intents.json_schema()["$defs"]["CreatePaymentLink"]["properties"]
    assert fields["customer"]["enum"] == [customer["id"] for customer in CUSTOMERS]
    assert fields["product"]["enum"] == [product["id"] for product in PRODUCTS]
    assert fields["price"]["enum"] == [price["id"] for price in PRICES]


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
        customer="cus_jeff",
        product="prod_meetup",
        price="prc_meetup_standard",
        amount_cents=amount_cents,
        memo="x",
    )
    assert tool.needs_approval(call) is needs_approval


@pytest.mark.parametrize(
    "changes",
    [
        {"amount_cents": 0},
        {"amount_cents": 7.5},
        {"quantity": 0},
        {"memo": ""},
        {"customer": "a b"},
    ],
)
def test_invalid_link_arguments_are_rejected(payments: Agent, changes: dict[str, Any]) -> None:
    arguments = json.loads(link_json(100)) | changes
    with pytest.raises(ValidationError):
        payments.intents.validate_json(json.dumps(arguments))


def test_an_invented_customer_id_never_reaches_the_executor(payments: Agent, service_url: str) -> None:
    # Given a model that invents a customer id, as in the seed ("cust_128934ddasf9")
    model = ScriptedModel([*LOOKUPS, link_json(500, customer="cust_128934ddasf9")])
    thread = launched()
    ports = ports_for(model)
    # When the prefetch, the lookups and the model's call run
    for _ in range(6):
        thread = thread.extended(step(payments, thread, ports))
    # Then the call was refused as an error the model will read, and the service never saw it
    error = thread.events[-1]
    assert isinstance(error, Error)
    assert (
        "create_payment_link.customer: Input should be 'cus_acme', 'cus_jeff' or 'cus_globex'"
        in error.data.message
    )
    assert links(service_url) == []


def test_a_wrong_amount_is_refused_by_the_service_as_an_error_event(
    payments: Agent, service_url: str
) -> None:
    # Given a model that picks real ids but miscounts the amount
    model = ScriptedModel([*LOOKUPS, link_json(700)])
    thread = launched()
    ports = ports_for(model)
    for _ in range(7):
        thread = thread.extended(step(payments, thread, ports))
    # Then the service's refusal is in the thread, and no link exists
    error = thread.events[-1]
    assert isinstance(error, Error)
    assert "amount_cents 700 is not 1 x 75000 = 75000" in error.data.message
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
