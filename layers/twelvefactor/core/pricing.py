"""What a thread's model calls cost in dollars: recorded usage times a dated price table.

The table is copied from the ``genai-prices`` package (a maintained price source, version 0.2.3,
published 2026-11; read 2026-12-04) for the models this project is run with; a test checks every
entry still agrees with the package, so the table cannot drift from its source unnoticed. The
package itself stays out of the Lambda layer: its 1.6 MB data module costs about 0.2 s of import
for a handful of prices. USD per million tokens. A model missing here has no known price: its cost
is shown as unknown, never as zero.

Usage semantics follow the providers: ``prompt_tokens`` counts every input token; the cache read
and write tokens are part of it and are billed at their own rates.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from .events import Approval, DecisionEvent, Event, HumanResponse, TokenUsage, UserMessage

PRICES_SOURCE = "genai-prices 0.2.3 (2026-11)"
PRICES_READ_ON = "2026-12-04"
_MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens; a cache rate of None means the provider bills no such tokens apart."""

    input: Decimal
    output: Decimal
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None

    def cost(self, usage: TokenUsage) -> Decimal:
        read = usage.cache_read_tokens or 0
        write = usage.cache_write_tokens or 0
        fresh = max(usage.prompt_tokens - read - write, 0)
        total = fresh * self.input + usage.completion_tokens * self.output
        total += read * (self.input if self.cache_read is None else self.cache_read)
        total += write * (self.input if self.cache_write is None else self.cache_write)
        return total / _MILLION


def _price(input_: str, output: str, read: str | None = None, write: str | None = None) -> ModelPrice:
    return ModelPrice(
        Decimal(input_),
        Decimal(output),
        None if read is None else Decimal(read),
        None if write is None else Decimal(write),
    )


# model id -> price; Bedrock ids as Bedrock names them (regional endpoints' prices).
PRICES: dict[str, ModelPrice] = {
    # OpenAI (prompt caching is automatic; cached input is billed at the read rate)
    "gpt-4o-mini": _price("0.15", "0.6", "0.075"),
    "gpt-4o": _price("2.5", "10", "1.25"),
    "gpt-4.1": _price("2", "8", "0.5"),
    "gpt-4.1-mini": _price("0.4", "1.6", "0.1"),
    "gpt-4.1-nano": _price("0.1", "0.4", "0.025"),
    # Amazon Bedrock
    "anthropic.claude-3-5-haiku-20241022-v1:0": _price("0.8", "4", "0.08", "1"),
    "anthropic.claude-3-7-sonnet-20250219-v1:0": _price("3", "15", "0.3", "3.75"),
    "anthropic.claude-sonnet-4-20250514-v1:0": _price("3", "15", "0.3", "3.75"),
    "anthropic.claude-haiku-4-5-20251001-v1:0": _price("1.1", "5.5", "0.11", "1.375"),
    "amazon.nova-micro-v1:0": _price("0.035", "0.14", "0.00875"),
    "amazon.nova-lite-v1:0": _price("0.06", "0.24", "0.015"),
    "amazon.nova-pro-v1:0": _price("0.8", "3.2", "0.2"),
    # The embedded model runs on this machine: no per-token bill.
    "smollm2-135m": _price("0", "0"),
}
# A cross-region inference profile names its model with a geography in front (us., eu., apac., global.).
_PROFILE_PREFIX = re.compile(r"^(?:us|eu|apac|jp|au|ca|us-gov|global)\.")


def price_for(model: str) -> ModelPrice | None:
    """The model's price, or None when the table does not know it."""
    return PRICES.get(model) or PRICES.get(_PROFILE_PREFIX.sub("", model))


def total_usage(events: Iterable[Event]) -> TokenUsage:
    """Every decision's usage, summed (cache counts included, zero when none were reported)."""
    prompt = completion = read = write = 0
    for event in events:
        if isinstance(event, DecisionEvent) and event.usage is not None:
            prompt += event.usage.prompt_tokens
            completion += event.usage.completion_tokens
            read += event.usage.cache_read_tokens or 0
            write += event.usage.cache_write_tokens or 0
    return TokenUsage(
        prompt_tokens=prompt, completion_tokens=completion, cache_read_tokens=read, cache_write_tokens=write
    )


def cost_of(events: Iterable[Event], price: ModelPrice | None) -> Decimal | None:
    """The events' model cost in USD, or None when the price is unknown."""
    if price is None:
        return None
    return sum(
        (price.cost(event.usage) for event in events if isinstance(event, DecisionEvent) and event.usage),
        Decimal(0),
    )


def format_usd(cost: Decimal | None) -> str:
    """``$0.000808`` (six places: a turn on a small model costs fractions of a cent), or "unknown"."""
    return "unknown" if cost is None else f"${cost.quantize(Decimal('0.000001'))}"


def cost_budget_spent(events: list[Event], price: ModelPrice | None, budget: Decimal | None) -> str | None:
    """Why the agent's cost budget is spent, or None. Like the step budget it counts since a person
    last spoke (their answer to the escalation starts a new allowance); an unknown price or no
    budget checks nothing."""
    if budget is None or price is None:
        return None
    since = len(events)
    while since > 0 and not isinstance(events[since - 1], UserMessage | HumanResponse | Approval):
        since -= 1
    spent = cost_of(events[since:], price)
    if spent is None or spent < budget:
        return None
    return f"cost budget of {format_usd(budget)} spent ({format_usd(spent)} since the last message)"
