"""payments, a second small agent after the seed's ``create_payment_link`` example::

    create_payment_link(amount, customer="cust_128934ddasf9", product="prod_8675309",
                        price="prc_09874329fds", quantity=1, memo="Hey Jeff - ...")

Those ids must come from lookups, never from the model's imagination, so they are grounded fields
(`twelvefactor.core.control`): the schema sent offers exactly the ids ``list_customers``,
``list_products`` and ``list_prices`` returned, and anything else is refused before the executor
runs. The customer list is pre-fetched (factor 13); the products and prices are lookups the model
makes, each offered until answered (the loop guard). Links above a threshold wait for a person's
approval, and a created link ends the turn with its url in a message code writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from twelvefactor.core.agent import Agent
from twelvefactor.core.events import JsonValue, Thread
from twelvefactor.core.tools import Executor, Grounded, Intent, Tool, ToolContext
from twelvefactor.settings import PrefixedSettings

from ._service import ServiceClient

NAME = "payments"
DESCRIPTION = "a billing assistant that creates payment links for known customers, products and prices."
# In minor units of the link's currency; anything above needs a person's approval.
APPROVAL_THRESHOLD_CENTS = 10_000
MAX_AMOUNT_CENTS = 10_000_000
MAX_QUANTITY = 100

# Ids only: nothing the service could read as a path or a second argument.
ObjectId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class ListCustomers(Intent):
    """List the customers a payment link can be created for, with their ids."""

    intent: Literal["list_customers"] = "list_customers"


class ListProducts(Intent):
    """List the products on sale, with their ids."""

    intent: Literal["list_products"] = "list_products"


class ListPrices(Intent):
    """List the prices (each of one product, with its amount in cents), with their ids."""

    intent: Literal["list_prices"] = "list_prices"


class CreatePaymentLink(Intent):
    """Create a payment link asking one customer to pay for a quantity of one product at one price."""

    intent: Literal["create_payment_link"] = "create_payment_link"
    customer: ObjectId = Field(description="The customer's id, exactly as list_customers returned it")
    product: ObjectId = Field(description="The product's id, exactly as list_products returned it")
    price: ObjectId = Field(description="The id of one of the product's prices, as list_prices returned it")
    quantity: int = Field(default=1, ge=1, le=MAX_QUANTITY, description="How many, usually 1")
    amount_cents: int = Field(
        gt=0, le=MAX_AMOUNT_CENTS, description="The total in cents: the price's unit_amount times quantity"
    )
    memo: str = Field(min_length=1, max_length=500, description="A note to the customer about the payment")


def needs_approval(call: CreatePaymentLink) -> bool:
    """The approval policy: small links go out at once; larger ones wait for a person."""
    return call.amount_cents > APPROVAL_THRESHOLD_CENTS


def prefetch_customers(_thread: Thread) -> Sequence[Intent]:
    return [ListCustomers()]


def link_created(call: CreatePaymentLink, result: JsonValue) -> str:
    """The done message, with the link the service returned (the model's summaries dropped it)."""
    url = result.get("url") if isinstance(result, dict) else None
    amount = f"{call.amount_cents / 100:,.2f}"
    where = f": {url}" if isinstance(url, str) else "."
    return f"Created a payment link for {call.customer} ({call.quantity} x {call.product}, {amount}){where}"


class PaymentsSettings(PrefixedSettings):
    """The payments agent's own settings: PAYMENTS_SERVICE_URL, PAYMENTS_TIMEOUT_SECONDS."""

    env_prefix = "PAYMENTS_"
    service_url: str = "http://127.0.0.1:8765"
    timeout_seconds: float = Field(default=10.0, gt=0, le=60)


def build_payments(settings: PaymentsSettings | None = None) -> Agent:
    settings = settings or PaymentsSettings()
    service = ServiceClient("payments service", settings.service_url, settings.timeout_seconds)

    def lookup(path: str) -> Executor:
        def execute(_call: Intent, _ctx: ToolContext) -> JsonValue:
            return service.get(path)

        return execute

    def create_payment_link(call: CreatePaymentLink, ctx: ToolContext) -> JsonValue:
        body = call.model_dump(mode="json", exclude={"intent"})
        return service.post("/payment_links", body, idempotency_key=ctx.idempotency_key)

    return Agent(
        name=NAME,
        description=DESCRIPTION,
        tools=(
            Tool(ListCustomers, lookup("/customers"), read_only=True),
            Tool(ListProducts, lookup("/products"), read_only=True),
            Tool(ListPrices, lookup("/prices"), read_only=True),
            Tool(
                CreatePaymentLink,
                create_payment_link,
                requires_approval=needs_approval,
                grounded={
                    "customer": Grounded(source="list_customers", path="customers.id"),
                    "product": Grounded(source="list_products", path="products.id"),
                    "price": Grounded(source="list_prices", path="prices.id"),
                },
                completes=link_created,
            ),
        ),
        prefetch=prefetch_customers,
        max_steps=8,
    )
