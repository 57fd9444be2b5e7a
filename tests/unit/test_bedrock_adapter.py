"""The Bedrock adapter (factor 1) through real boto3 against the Converse stand-in on loopback.

moto has no Converse, so `FakeBedrock` speaks its REST shape (``POST /model/{modelId}/converse``) and
boto3 reaches it unchanged: by ``endpoint_url`` here, by ``AWS_ENDPOINT_URL_BEDROCK_RUNTIME`` in the
runtime test. The recorded answers follow the response shapes in AWS's Converse API reference
(``output.message.content[].toolUse``, ``stopReason``, ``usage`` with the cache token counts).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.unit.agent_fixtures import AGENT_NAME, DeployService, StepClock, build_agent, write_prompts
from tests.unit.test_llm_adapter import DEPLOY, INTENTS, MESSAGES
from twelvefactor.adapters.bedrock import CACHE_POINT, BedrockModel, client_config, usage_of
from twelvefactor.adapters.llm import strict_schema
from twelvefactor.core import replies
from twelvefactor.core.errors import LlmRejected, LlmUnavailable
from twelvefactor.core.events import Error, Thread, TokenUsage, ToolCall
from twelvefactor.core.ports import Ports
from twelvefactor.core.prompts import JinjaPrompts
from twelvefactor.core.reducer import step
from twelvefactor.core.tools import DoneForNow, IntentSet
from twelvefactor.local.fake_bedrock import ConverseError, FakeBedrock, Scripted, tool_answer

MODEL_ID = "anthropic.claude-3-5-haiku-20241022-v1:0"

# A Converse response as AWS's API reference documents it, with prompt caching reported.
DOCUMENTED_RESPONSE: dict[str, Any] = {
    "output": {
        "message": {
            "role": "assistant",
            "content": [
                {
                    "toolUse": {
                        "toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q",
                        "name": "deploy_backend",
                        "input": {"tag": "v1.2.3", "environment": "production"},
                    }
                }
            ],
        }
    },
    "stopReason": "tool_use",
    "usage": {
        "inputTokens": 120,
        "outputTokens": 34,
        "totalTokens": 1578,
        "cacheReadInputTokens": 1400,
        "cacheWriteInputTokens": 24,
    },
    "metrics": {"latencyMs": 812},
}


@pytest.fixture
def script() -> Scripted:
    return Scripted()


@pytest.fixture
def bedrock(script: Scripted) -> Iterator[FakeBedrock]:
    with FakeBedrock(script) as server:
        yield server


def client(url: str, *, retries: int = 2, timeout: float = 5.0) -> Any:
    return boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=client_config(timeout_seconds=timeout, max_retries=retries),
    )


def model(url: str, **options: Any) -> BedrockModel:
    retries = options.pop("retries", 2)
    return BedrockModel(client(url, retries=retries), model_id=MODEL_ID, **options)


def test_tools_mode_forces_a_tool_call_and_closes_the_stable_prefix_with_cache_points(
    bedrock: FakeBedrock, script: Scripted
) -> None:
    # Given Bedrock answering with the documented tool-use response
    script.enqueue(json.loads(json.dumps(DOCUMENTED_RESPONSE)))

    # When the adapter asks for one decision
    reply = model(bedrock.url).decide(MESSAGES, INTENTS)

    # Then it sent Converse's shape: the model id in the path, one tool per intent, a forced choice
    model_id, sent = script.requests[0]
    assert model_id == MODEL_ID
    tools = sent["toolConfig"]["tools"]
    assert [t["toolSpec"]["name"] for t in tools[:-1]] == list(INTENTS.by_name)
    assert sent["toolConfig"]["toolChoice"] == {"any": {}}
    deploy = next(t["toolSpec"] for t in tools[:-1] if t["toolSpec"]["name"] == "deploy_backend")
    assert "intent" not in deploy["inputSchema"]["json"]["properties"]
    # ... the cache points close the stable prefix: after the tools and after the system prompt
    assert tools[-1] == CACHE_POINT
    assert sent["system"] == [{"text": MESSAGES[0]["content"]}, CACHE_POINT]
    # ... and the thread follows as user/assistant messages of text blocks
    assert sent["messages"] == [{"role": "user", "content": [{"text": MESSAGES[1]["content"]}]}]
    # And the tool call came back as the intent's JSON, with every input token counted
    assert json.loads(reply.content) == DEPLOY
    assert reply.usage == TokenUsage(
        prompt_tokens=120 + 1400 + 24, completion_tokens=34, cache_read_tokens=1400, cache_write_tokens=24
    )


def test_one_offered_intent_is_named_in_the_tool_choice(bedrock: FakeBedrock, script: Scripted) -> None:
    # Given only one intent offered for this decision
    only = IntentSet.of((DoneForNow,))
    script.enqueue(tool_answer("done_for_now", {"message": "done"}))

    # When the adapter asks
    reply = model(bedrock.url, prompt_cache=False).decide(MESSAGES, only)

    # Then the choice names that tool, and without caching no cache point is sent
    sent = script.requests[0][1]
    assert sent["toolConfig"]["toolChoice"] == {"tool": {"name": "done_for_now"}}
    assert CACHE_POINT not in sent["toolConfig"]["tools"]
    assert CACHE_POINT not in sent["system"]
    assert only.validate_json(reply.content) == DoneForNow(message="done")


def test_json_schema_mode_sends_converse_structured_output_and_unwraps_the_answer(
    bedrock: FakeBedrock, script: Scripted
) -> None:
    # Given a model answering the strict wrapper as text
    text = json.dumps({"step": {**DEPLOY, "options": None}})
    answer = tool_answer("unused", {})
    answer["output"]["message"]["content"] = [{"text": text}]
    answer["stopReason"] = "end_turn"
    script.enqueue(answer)

    # When the adapter asks in json_schema mode
    reply = model(bedrock.url, output_mode="json_schema").decide(MESSAGES, INTENTS)

    # Then it sent outputConfig.textFormat with the strict schema as a JSON string, and no tools
    sent = script.requests[0][1]
    assert "toolConfig" not in sent
    text_format = sent["outputConfig"]["textFormat"]
    assert text_format["type"] == "json_schema"
    assert json.loads(text_format["structure"]["jsonSchema"]["schema"]) == strict_schema(INTENTS)
    # And the answer was unwrapped into the intent
    assert INTENTS.validate_json(reply.content) == INTENTS.validate_json(json.dumps(DEPLOY))


def test_throttling_is_retried_by_botocore_until_an_answer(bedrock: FakeBedrock, script: Scripted) -> None:
    # Given Bedrock throttling once, then answering
    script.enqueue(
        ConverseError(429, "ThrottlingException", "Too many requests"),
        tool_answer("done_for_now", {"message": "done"}),
    )

    # When the adapter asks with retries allowed
    reply = model(bedrock.url, retries=2).decide(MESSAGES, INTENTS)

    # Then the second request got the answer
    assert INTENTS.validate_json(reply.content) == DoneForNow(message="done")
    assert len(script.requests) == 2


def test_exhausted_retries_raise_llm_unavailable(bedrock: FakeBedrock, script: Scripted) -> None:
    # Given Bedrock unavailable every time
    script.enqueue(*[ConverseError(503, "ServiceUnavailableException", "busy")] * 3)

    # When / Then the adapter gives up after one retry with LlmUnavailable
    with pytest.raises(LlmUnavailable, match="ServiceUnavailableException"):
        model(bedrock.url, retries=1).decide(MESSAGES, INTENTS)
    assert len(script.requests) == 2


def test_access_denied_is_rejected_at_once_and_names_no_arn_host_or_url(
    bedrock: FakeBedrock, script: Scripted
) -> None:
    # Given an IAM refusal whose message names the role's ARN and an internal endpoint
    message = (
        "User: arn:aws:sts::123456789012:assumed-role/reducer/fn is not authorized to perform "
        "bedrock:InvokeModel via https://bedrock-runtime.internal.example:8443/model (10.0.3.7)"
    )
    script.enqueue(ConverseError(403, "AccessDeniedException", message), tool_answer("never", {}))

    # When the adapter asks
    with pytest.raises(LlmRejected, match="refused access") as raised:
        model(bedrock.url, retries=3).decide(MESSAGES, INTENTS)

    # Then it was not retried, and the text the thread records names no ARN, account, host or address
    assert len(script.requests) == 1
    text = str(raised.value)
    for leak in ("arn:", "123456789012", "https://", "internal.example", "10.0.3.7", "127.0.0.1"):
        assert leak not in text, (leak, text)


def test_nothing_listening_raises_llm_unavailable() -> None:
    # Given a stand-in that has stopped
    with FakeBedrock(Scripted()) as gone:
        url = gone.url

    # When / Then the adapter says it could not connect, naming no address
    with pytest.raises(LlmUnavailable, match="could not connect") as raised:
        model(url, retries=0).decide(MESSAGES, INTENTS)
    assert "127.0.0.1" not in str(raised.value)


def test_usage_is_none_when_bedrock_reports_none_and_cache_fields_are_optional() -> None:
    # Given usage without cache fields, and no usage at all
    # Then the first has no cache counts (old threads and non-caching models look the same), the second none
    assert usage_of({"inputTokens": 5, "outputTokens": 2, "totalTokens": 7}) == TokenUsage(
        prompt_tokens=5, completion_tokens=2
    )
    assert usage_of(None) is None
    assert usage_of({"inputTokens": -1, "outputTokens": 2}) is None


def test_the_stand_in_reports_a_cache_write_then_reads_for_the_same_prefix(
    bedrock: FakeBedrock, script: Scripted
) -> None:
    # Given two decisions with the same system prompt and catalogue
    script.enqueue(
        tool_answer("list_git_tags", {}, input_tokens=3000),
        tool_answer("list_git_tags", {}, input_tokens=3000),
    )
    adapter = model(bedrock.url)

    # When the adapter asks twice
    first, second = adapter.decide(MESSAGES, INTENTS), adapter.decide(MESSAGES, INTENTS)

    # Then the first wrote the prefix to the cache and the second read it; totals stay the same
    assert first.usage is not None and second.usage is not None
    assert first.usage.cache_write_tokens and not first.usage.cache_read_tokens
    assert second.usage.cache_read_tokens == first.usage.cache_write_tokens
    assert first.usage.prompt_tokens == second.usage.prompt_tokens == 3000


def test_a_decision_event_records_the_cached_tokens(
    tmp_path: Path, bedrock: FakeBedrock, script: Scripted
) -> None:
    # Given the reducer deciding through Bedrock, which reports cache reads
    script.enqueue(json.loads(json.dumps(DOCUMENTED_RESPONSE)))
    thread = Thread(id="thread-1", agent=AGENT_NAME).extended(
        replies.launch("Deploy v1.2.3 to production", at=datetime(2025, 1, 2, tzinfo=UTC), channel="api")
    )
    ports = Ports(llm=model(bedrock.url), prompts=JinjaPrompts(write_prompts(tmp_path)), clock=StepClock())

    # When the reducer steps
    events = step(build_agent(DeployService()), thread, ports)

    # Then the decision event carries the cache read and write tokens
    decisions = [e for e in events if isinstance(e, ToolCall | Error)]
    assert decisions and decisions[0].usage is not None
    assert decisions[0].usage.cache_read_tokens == 1400
    assert decisions[0].usage.cache_write_tokens == 24
