"""payments, a second small agent after the seed's ``create_payment_link`` example.

The customer list is pre-fetched (factor 13): before the model is first asked, the reducer runs
``list_customers`` and puts the result in the thread, so the model picks a real customer id
instead of spending a step (or guessing). Links above a threshold wait for a person's approval.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from twelvefactor.core.agent import Agent
from twelvefactor.core.events import JsonValue, Thread
from twelvefactor.core.tools import Intent, Tool, ToolContext
from twelvefactor.settings import PrefixedSettings

from ._service import ServiceClient

NAME = "payments"
DESCRIPTION = "a billing assistant that creates payment links for known customers."
# In minor units of the link's currency; anything above needs a person's approval.
APPROVAL_THRESHOLD_CENTS = 10_000
MAX_AMOUNT_CENTS = 10_000_000

CustomerId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class ListCustomers(Intent):
    """List the customers a payment link can be created for, with their ids."""

    intent: Literal["list_customers"] = "list_customers"


class CreatePaymentLink(Intent):
    """Create a payment link that asks one customer to pay an amount."""

    intent: Literal["create_payment_link"] = "create_payment_link"
    customer_id: CustomerId = Field(description="The customer's id, exactly as list_customers returned it")
    amount_cents: int = Field(
        gt=0, le=MAX_AMOUNT_CENTS, description="The amount in cents (minor units), e.g. 75000 for 750.00"
    )
    currency: Literal["usd", "eur", "gbp"] = Field(description="The currency, lower case")
    description: str = Field(
        min_length=1, max_length=200, description="What the payment is for, as the customer will see it"
    )


def needs_approval(call: CreatePaymentLink) -> bool:
    """The approval policy: small links go out at once; larger ones wait for a person."""
    return call.amount_cents > APPROVAL_THRESHOLD_CENTS


def prefetch_customers(_thread: Thread) -> Sequence[Intent]:
    return [ListCustomers()]


class PaymentsSettings(PrefixedSettings):
    """The payments agent's own settings: PAYMENTS_SERVICE_URL, PAYMENTS_TIMEOUT_SECONDS."""

    env_prefix = "PAYMENTS_"
    service_url: str = "http://127.0.0.1:8765"
    timeout_seconds: float = Field(default=10.0, gt=0, le=60)


def build_payments(settings: PaymentsSettings | None = None) -> Agent:
    settings = settings or PaymentsSettings()
    service = ServiceClient("payments service", settings.service_url, settings.timeout_seconds)

    def list_customers(_call: ListCustomers, _ctx: ToolContext) -> JsonValue:
        return service.get("/customers")

    def create_payment_link(call: CreatePaymentLink, ctx: ToolContext) -> JsonValue:
        body = call.model_dump(mode="json", exclude={"intent"})
        return service.post("/payment_links", body, idempotency_key=ctx.idempotency_key)

    return Agent(
        name=NAME,
        description=DESCRIPTION,
        tools=(
            Tool(ListCustomers, list_customers, read_only=True),
            Tool(CreatePaymentLink, create_payment_link, requires_approval=needs_approval),
        ),
        prefetch=prefetch_customers,
        max_steps=8,
    )
