"""The whole local stack in Bedrock mode (`twelvefactor local up --provider bedrock`), offline.

The handlers use the Bedrock adapter; their boto3 reaches the Converse stand-in through
``AWS_ENDPOINT_URL_BEDROCK_RUNTIME``; the stand-in asks the scripted OpenAI-compatible model (the
embedded SmolLM2 in `local up`) with the tools turned into a guided schema, and answers ``toolUse``.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest

from tests.e2e.helpers import ConversationScripts, execution, intent, opening, stored_event_types
from tests.e2e.test_local_stack import NEWEST_TAG, launch, wait_for_status
from tests.support import poll_until
from twelvefactor import cli
from twelvefactor.core import pricing
from twelvefactor.core.events import TokenUsage
from twelvefactor.local.fake_openai import FakeOpenAI
from twelvefactor.local.stack import LlmEndpoint, LocalStack, as_provider

pytestmark = pytest.mark.e2e

HAIKU = "anthropic.claude-3-5-haiku-20241022-v1:0"


@pytest.fixture(scope="module")
def stack(fake_llm: FakeOpenAI) -> Iterator[LocalStack]:
    # A Bedrock model id, so the thread is priced (the scripted model answers whatever it is called)
    endpoint = LlmEndpoint(fake_llm.base_url, HAIKU, output_mode="json_object", kind="scripted")
    with as_provider(endpoint, "bedrock") as bedrock, LocalStack(bedrock) as running:
        yield running


def test_a_thread_runs_through_bedrock_converse_and_records_cached_tokens_and_its_cost(
    stack: LocalStack, scripts: ConversationScripts, fake_llm: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the stack in Bedrock mode, and a conversation that deploys to production after one answer
    # that is no intent: the decisions before and after it are offered the same intents, so they send
    # the same tools and system prompt (the per-decision offer changes the tools, hence the prefix)
    assert stack.environment["LLM_PROVIDER"] == "bedrock"
    assert stack.environment["AWS_ENDPOINT_URL_BEDROCK_RUNTIME"] == stack.llm.bedrock_url
    text = scripts.add(
        opening("Ship the backend via Bedrock"),
        intent("list_git_tags"),
        "not an intent",
        intent("deploy_backend", tag=NEWEST_TAG, environment="production"),
    )

    # When it is launched, and approved through the API
    thread_id = launch(stack, text)
    wait_for_status(stack, thread_id, "awaiting_approval")
    response = httpx.post(
        f"{stack.api_url}/threads/{thread_id}/responses", json={"kind": "approval", "approved": True}
    )
    assert response.status_code == 202
    poll_until(
        lambda: execution(stack, thread_id)["status"], lambda status: status == "SUCCEEDED", timeout=60
    )

    # Then the thread finished as in OpenAI mode
    assert stored_event_types(stack, thread_id)[-1] == "done"
    # And every model request went through the Converse stand-in (it asks with the tools as one schema)
    branches = [request["response_format"]["schema"]["anyOf"] for request in fake_llm.requests]
    assert branches and all({"intent"} <= set(b[0]["properties"]) for b in branches)
    # And the decisions recorded Bedrock's cache counts: each new prefix written, a repeated one read
    events = httpx.get(f"{stack.api_url}/threads/{thread_id}/events").json()["events"]
    usages = [event["usage"] for event in events if event.get("usage")]
    assert usages, events
    assert any(usage.get("cache_read_tokens") for usage in usages)

    # And GET /threads/{id} prices the usage at the model's rates, and `threads show` prints it
    view = httpx.get(f"{stack.api_url}/threads/{thread_id}").json()
    price = pricing.price_for(HAIKU)
    assert price is not None
    expected = sum((price.cost(TokenUsage(**usage)) for usage in usages), Decimal(0))
    assert Decimal(view["cost_usd"]) == expected.quantize(Decimal("0.000001")) > 0
    assert view["usage"]["cache_read_tokens"] == sum(usage.get("cache_read_tokens") or 0 for usage in usages)
    capsys.readouterr()
    assert cli.main(["threads", "--api-url", stack.api_url, "show", thread_id]) == 0
    shown = capsys.readouterr().out
    assert f"cost: ${view['cost_usd']}" in shown
    assert "read from the prompt cache" in shown
