"""Cost in dollars: usage times the dated price table, per thread, and the per-agent cost budget."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from pathlib import Path

import pytest
from genai_prices import Usage, calc_price

from tests.unit.agent_fixtures import harness, intent_json
from twelvefactor.core import pricing, replies, state
from twelvefactor.core.events import Done, Escalation, TokenUsage, ToolCall, parse_event
from twelvefactor.core.ports import ModelReply
from twelvefactor.core.state import ThreadStatus

HAIKU = "anthropic.claude-3-5-haiku-20241022-v1:0"
LOCAL_MODELS = {"smollm2-135m"}


@pytest.mark.parametrize("model", sorted(set(pricing.PRICES) - LOCAL_MODELS))
def test_every_price_in_the_table_agrees_with_its_source(model: str) -> None:
    # Given a usage with fresh, cached-read, cache-written and output tokens
    usage = TokenUsage(
        prompt_tokens=10_000, completion_tokens=700, cache_read_tokens=6_000, cache_write_tokens=0
    )
    price = pricing.price_for(model)
    assert price is not None
    write = 1_500 if price.cache_write is not None else 0
    usage = usage.model_copy(update={"cache_write_tokens": write})

    # When both price it
    provider = "openai" if model.startswith("gpt-") else "aws"
    expected = calc_price(
        Usage(input_tokens=10_000, output_tokens=700, cache_read_tokens=6_000, cache_write_tokens=write),
        model_ref=model,
        provider_id=provider,
    ).total_price

    # Then the table's figure is genai-prices' figure
    assert price.cost(usage) == expected


def test_a_cross_region_profile_is_priced_as_its_model_and_an_unknown_model_is_unknown() -> None:
    assert pricing.price_for(f"us.{HAIKU}") == pricing.price_for(HAIKU) is not None
    assert pricing.price_for("some-self-hosted-model") is None
    assert pricing.cost_of([], None) is None
    assert pricing.format_usd(None) == "unknown"


def test_old_stored_usage_without_cache_fields_still_loads() -> None:
    # Given a decision event stored before cache tokens were recorded
    stored = {
        "type": "done",
        "id": "evt-1",
        "at": "2025-01-02T03:04:05Z",
        "usage": {"prompt_tokens": 10, "completion_tokens": 2},
        "data": {"message": "ok"},
    }
    # When it is read, Then it loads with no cache counts, and is priced as all-fresh input
    event = parse_event(stored)
    assert isinstance(event, Done)
    assert event.usage == TokenUsage(prompt_tokens=10, completion_tokens=2)
    assert event.usage is not None and event.usage.cache_read_tokens is None


def test_a_thread_costs_the_sum_of_its_decisions(tmp_path: Path) -> None:
    # Given two decisions with usage, one of them reading the prompt cache
    first = ModelReply(intent_json("list_git_tags"), TokenUsage(prompt_tokens=2_000, completion_tokens=20))
    second = ModelReply(
        intent_json("done_for_now", message="v1.2.3 is the newest"),
        TokenUsage(prompt_tokens=2_100, completion_tokens=30, cache_read_tokens=1_800),
    )
    h = harness(tmp_path, [first, second])
    h.launch("Which tag is newest?")
    thread = h.run()

    # When the thread is priced at Claude 3.5 Haiku's rates
    cost = pricing.cost_of(thread.events, pricing.price_for(HAIKU))

    # Then it is each decision's usage at the input, output and cache-read rates
    expected = (
        Decimal(2_000) * Decimal("0.8") + 20 * 4 + 300 * Decimal("0.8") + 1_800 * Decimal("0.08") + 30 * 4
    ) / Decimal(1_000_000)
    assert cost == expected
    assert pricing.total_usage(thread.events) == TokenUsage(
        prompt_tokens=4_100, completion_tokens=50, cache_read_tokens=1_800, cache_write_tokens=0
    )


def test_a_spent_cost_budget_escalates_and_a_human_reply_starts_a_new_allowance(tmp_path: Path) -> None:
    # Given an agent allowed $0.01 per launch, and a model whose every decision costs $0.008 at Haiku's rates
    costly = TokenUsage(prompt_tokens=10_000, completion_tokens=0)
    h = harness(
        tmp_path,
        [ModelReply(intent_json("list_git_tags"), costly)] * 3 + [intent_json("done_for_now", message="ok")],
    )
    h.agent = dataclasses.replace(h.agent, max_cost_usd=Decimal("0.01"))
    h.ports = dataclasses.replace(h.ports, price=pricing.price_for(HAIKU))
    h.launch("List the tags, please")

    # When the loop runs
    thread = h.run()

    # Then the model was asked twice ($0.016 spent), and a person is asked with a cost-budget escalation
    assert len(h.model.calls) == 2
    assert isinstance(thread.events[-1], Escalation)
    assert thread.events[-1].data.reason == "cost_budget"
    assert "$0.010000" in thread.events[-1].data.message
    assert state.status(thread.events) is ThreadStatus.AWAITING_HUMAN

    # When the person answers, Then the model is asked again: the allowance counts from their message
    h.respond(replies.TextReply(text="go on"))
    h.run()
    assert len(h.model.calls) == 4
    # (the loop guard ran the lookup once: its repeats, still current, were refused, not run)
    assert len(h.events_of(ToolCall)) == 1


def test_no_price_means_no_cost_budget(tmp_path: Path) -> None:
    # Given an expensive-looking model with no known price and a tiny budget
    costly = TokenUsage(prompt_tokens=10_000_000, completion_tokens=0)
    h = harness(
        tmp_path,
        [ModelReply(intent_json("list_git_tags"), costly), intent_json("done_for_now", message="ok")],
    )
    h.agent = dataclasses.replace(h.agent, max_cost_usd=Decimal("0.000001"))
    h.launch("List the tags")

    # When the loop runs, Then nothing is escalated: an unknown price is never taken as spent
    thread = h.run()
    assert h.events_of(Escalation) == []
    assert state.status(thread.events) is ThreadStatus.DONE
