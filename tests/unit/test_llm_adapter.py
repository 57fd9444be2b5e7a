"""The real LLM adapter against a scripted OpenAI-compatible server on loopback (factor 1).

Nothing here fakes the HTTP client (the openai SDK): every test sends real HTTP to `FakeOpenAI`, then
checks both what the adapter sent (the structured-output request of each mode) and what it made of
the answer, and that the SDK's own retries follow the provider's statuses and retry-after.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import jsonschema
import pytest
from pydantic import BaseModel, ConfigDict, Field

import agents
from tests.unit.agent_fixtures import AGENT_NAME, DeployService, StepClock, build_agent, write_prompts
from twelvefactor.adapters.llm import OpenAIModel, model_from_settings, strict_schema, unwrap_strict_answer
from twelvefactor.core import control, replies
from twelvefactor.core.errors import LlmRejected, LlmUnavailable
from twelvefactor.core.events import Error, Thread, TokenUsage
from twelvefactor.core.ports import ChatMessage, Ports
from twelvefactor.core.prompts import JinjaPrompts
from twelvefactor.core.reducer import step
from twelvefactor.core.tools import BUILTIN_INTENTS, DoneForNow, Intent, IntentSet, RequestHumanInput
from twelvefactor.evals.scoring import VERDICT
from twelvefactor.local.fake_openai import Answer, FakeOpenAI, HttpError, ToolCallAnswer
from twelvefactor.settings import LlmSettings, OutputMode


class DeployOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    dry_run: bool = False
    reason: str = ""


class ListGitTags(Intent):
    """List the git tags that can be deployed."""

    intent: Literal["list_git_tags"] = "list_git_tags"


class DeployBackend(Intent):
    """Deploy a tag of the backend to an environment."""

    intent: Literal["deploy_backend"] = "deploy_backend"
    tag: str = Field(min_length=1)
    environment: Literal["staging", "production"]
    options: DeployOptions | None = None


INTENTS = IntentSet.of((ListGitTags, DeployBackend, *BUILTIN_INTENTS))
MESSAGES = [
    ChatMessage(role="system", content="You are deploybot. Answer with one intent."),
    ChatMessage(role="user", content="<user_message>Can you deploy the backend?</user_message>"),
]
DEPLOY = {"intent": "deploy_backend", "tag": "v1.2.3", "environment": "production"}
# Retries back off exponentially, as the openai SDK does; a provider's retry-after-ms (which the fake
# sends, as OpenAI does on 429) shortens the wait, so these tests stay fast without changing the client.
QUICK_RETRY = 0.01


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(model="deploybot-model") as server:
        yield server


def adapter(
    fake: FakeOpenAI, mode: OutputMode, *, timeout: float = 5.0, retries: int = 2, key: str | None = "sk-test"
) -> OpenAIModel:
    settings = LlmSettings(
        base_url=fake.base_url,
        model="deploybot-model",
        output_mode=mode,
        timeout_seconds=timeout,
        max_retries=retries,
    )
    return model_from_settings(settings, api_key=key)


@pytest.fixture
def ask(fake: FakeOpenAI) -> Iterator[Any]:
    """Ask one decision through a fresh adapter; every adapter is closed afterwards."""
    opened: list[OpenAIModel] = []

    def _ask(mode: OutputMode, **options: Any) -> Any:
        model = adapter(fake, mode, **options)
        opened.append(model)
        return model.decide(MESSAGES, INTENTS)

    yield _ask
    for model in opened:
        model.close()


def walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every schema object in a JSON Schema document."""
    if isinstance(node, dict):
        yield node
        for key, value in node.items():
            children = value.values() if key in ("properties", "$defs") else [value]
            for child in children:
                yield from walk(child)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


# --- the three structured-output modes ------------------------------------------------------------


def test_json_schema_mode_sends_strict_wrapper_and_unwraps_nulls_into_defaults(
    fake: FakeOpenAI, ask: Any
) -> None:
    # Given a strict-mode answer: the intent wrapped in "step", nulls standing in for omitted fields
    step = {
        "intent": "request_human_input",
        "question": "Which environment?",
        "context": None,
        "urgency": None,
        "format": "multiple_choice",
        "choices": ["staging", "production"],
    }
    fake.enqueue(Answer(json.dumps({"step": step}), prompt_tokens=321, completion_tokens=17))

    # When the adapter asks in json_schema mode
    reply = ask("json_schema")

    # Then it sent OpenAI's strict structured-output request with the wrapped union
    sent = fake.requests[0]
    assert sent["model"] == "deploybot-model"
    assert sent["messages"] == MESSAGES
    response_format = sent["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["strict"] is True
    assert response_format["json_schema"]["schema"] == strict_schema(INTENTS)
    # And the answer is unwrapped; the nulls became omissions, so the intent's defaults apply
    intent = INTENTS.validate_json(reply.content)
    assert intent == RequestHumanInput(
        question="Which environment?", format="multiple_choice", choices=["staging", "production"]
    )
    assert (intent.context, intent.urgency) == ("", "medium")
    # And the token usage reported by the provider is recorded on the reply
    assert reply.usage == TokenUsage(prompt_tokens=321, completion_tokens=17)


def test_json_schema_mode_removes_stand_in_nulls_inside_nested_objects(fake: FakeOpenAI, ask: Any) -> None:
    # Given a strict answer whose nested object carries a null for a field with a default
    step = {**DEPLOY, "options": {"dry_run": None, "reason": "hotfix"}}
    fake.enqueue(json.dumps({"step": step}))

    # When the adapter asks
    reply = ask("json_schema")

    # Then the nested null became the default, and the genuinely nullable field kept its value
    intent = INTENTS.validate_json(reply.content)
    assert intent == DeployBackend(
        tag="v1.2.3", environment="production", options=DeployOptions(dry_run=False, reason="hotfix")
    )


def test_json_object_mode_sends_the_union_schema_with_the_intent_required(fake: FakeOpenAI, ask: Any) -> None:
    # Given a guided-decoding server answering with a plain intent object
    fake.enqueue(Answer(json.dumps(DEPLOY), prompt_tokens=50, completion_tokens=9))

    # When the adapter asks in json_object mode
    reply = ask("json_object")

    # Then it sent json_object with the union schema (llama.cpp / vLLM guided decoding)
    response_format = fake.requests[0]["response_format"]
    assert response_format["type"] == "json_object"
    schema = response_format["schema"]
    branches = [schema["$defs"][ref["$ref"].removeprefix("#/$defs/")] for ref in schema["anyOf"]]
    assert {branch["properties"]["intent"]["const"] for branch in branches} == set(INTENTS.names)
    # And every branch requires the discriminator (pydantic alone leaves it optional)
    assert all("intent" in branch["required"] for branch in branches)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"tag": "v1.2.3", "environment": "production"}, schema)
    # And the answer passes through to the core's validation as the intent
    assert INTENTS.validate_json(reply.content) == DeployBackend(tag="v1.2.3", environment="production")
    assert reply.usage == TokenUsage(prompt_tokens=50, completion_tokens=9)


def test_tools_mode_sends_one_function_per_intent_and_turns_the_call_into_the_intent(
    fake: FakeOpenAI, ask: Any
) -> None:
    # Given a provider that answers with a native tool call
    arguments = {"tag": "v1.2.3", "environment": "production"}
    fake.enqueue(ToolCallAnswer("deploy_backend", arguments, prompt_tokens=80, completion_tokens=12))

    # When the adapter asks in tools mode
    reply = ask("tools")

    # Then it offered one function per intent, without the intent field, and required a call
    sent = fake.requests[0]
    assert sent["tool_choice"] == "required"
    functions = {tool["function"]["name"]: tool["function"] for tool in sent["tools"]}
    assert set(functions) == set(INTENTS.names)
    assert all("intent" not in function["parameters"]["properties"] for function in functions.values())
    assert functions["deploy_backend"]["parameters"]["required"] == ["tag", "environment"]
    assert functions["deploy_backend"]["description"] == "Deploy a tag of the backend to an environment."
    assert "response_format" not in sent
    # And the call comes back as the intent's JSON
    assert INTENTS.validate_json(reply.content) == DeployBackend(tag="v1.2.3", environment="production")
    assert reply.usage == TokenUsage(prompt_tokens=80, completion_tokens=12)


def test_tools_mode_with_unparseable_arguments_returns_them_for_the_core_to_record(
    fake: FakeOpenAI, ask: Any
) -> None:
    # Given a tool call whose arguments are not JSON
    fake.enqueue(ToolCallAnswer("deploy_backend", '{"tag": "v1.2.3", '))

    # When the adapter asks
    reply = ask("tools")

    # Then no exception: the raw call is the content, which fails validation and shows what was said
    assert "deploy_backend" in reply.content
    assert '"tag": "v1.2.3"' in reply.content
    with pytest.raises(ValueError):
        INTENTS.validate_json(reply.content)


@pytest.mark.parametrize("mode", ["json_schema", "json_object", "tools"])
def test_an_empty_answer_is_returned_as_empty_content_not_raised(
    fake: FakeOpenAI, ask: Any, mode: OutputMode
) -> None:
    # Given a provider that answers with nothing
    fake.enqueue(Answer("", completion_tokens=0, prompt_tokens=40))

    # When the adapter asks
    reply = ask(mode)

    # Then the reply is empty (the core records it as invalid output) and usage is still counted
    assert reply.content == ""
    assert reply.usage == TokenUsage(prompt_tokens=40, completion_tokens=0)


# --- strict schema ----------------------------------------------------------------------------------


def test_strict_schema_is_what_openai_strict_mode_accepts() -> None:
    # Given the pydantic union schema, which has a oneOf at the root and optional fields
    assert "oneOf" in INTENTS.json_schema()

    # When it is transformed for strict mode
    schema = strict_schema(INTENTS)

    # Then the root is one object, no union, wrapping the step
    assert schema["type"] == "object"
    assert "oneOf" not in schema
    assert "anyOf" not in schema
    assert schema["required"] == ["step"]
    nodes = list(walk(schema))
    objects = [node for node in nodes if node.get("type") == "object"]
    assert len(objects) == len(INTENTS.names) + 2  # the intents, DeployOptions, the wrapper
    for node in objects:
        # And every object forbids extra properties and requires all of its properties
        assert node["additionalProperties"] is False
        assert sorted(node["required"]) == sorted(node["properties"])
    # And no keyword strict mode rejects survives anywhere
    for node in nodes:
        assert not {"oneOf", "discriminator", "default", "minLength"} & set(node)


def test_strict_schema_accepts_nulls_for_optional_fields_and_rejects_missing_ones() -> None:
    # Given the strict schema
    schema = strict_schema(INTENTS)
    step = {"intent": "done_for_now", "message": "Deployed v1.2.3"}

    # When / Then a complete answer validates, and one with nulls for optional fields does too
    jsonschema.validate({"step": step}, schema)
    human = {
        "intent": "request_human_input",
        "question": "Which tag?",
        **dict.fromkeys(("context", "urgency", "format", "choices")),
    }
    jsonschema.validate({"step": human}, schema)
    # And omitting a field, or adding one, does not
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"step": {"intent": "request_human_input", "question": "Which tag?"}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"step": {**step, "extra": 1}}, schema)
    # And the discriminator may not be null
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"step": {**step, "intent": None}}, schema)


# --- failures: retries, timeouts, rejections ----------------------------------------------------------


def test_rate_limit_and_server_error_are_retried_until_an_answer(fake: FakeOpenAI, ask: Any) -> None:
    # Given a provider that rate-limits, then fails, then answers
    fake.enqueue(
        HttpError(429, "Rate limit reached", retry_after_seconds=QUICK_RETRY),
        HttpError(500, "The server had an error", retry_after_seconds=QUICK_RETRY),
        json.dumps({"intent": "done_for_now", "message": "done"}),
    )

    # When the adapter asks with two retries allowed
    reply = ask("json_object", retries=2)

    # Then it got the answer on the third request
    assert INTENTS.validate_json(reply.content) == DoneForNow(message="done")
    assert len(fake.requests) == 3


def test_exhausted_retries_raise_llm_unavailable(fake: FakeOpenAI, ask: Any) -> None:
    # Given a provider that keeps failing with 503
    fake.enqueue(*[HttpError(503, "overloaded", retry_after_seconds=QUICK_RETRY)] * 5)

    # When the adapter asks with three retries allowed (the openai SDK's default is two)
    with pytest.raises(LlmUnavailable, match=r"503.*overloaded"):
        ask("json_object", retries=3)

    # Then it tried exactly four times, then gave up
    assert len(fake.requests) == 4


def test_a_slow_answer_beyond_the_timeout_is_retried_then_raises_llm_unavailable(
    fake: FakeOpenAI, ask: Any
) -> None:
    # Given a provider slower than the adapter's timeout, every time
    slow = Answer(json.dumps(DEPLOY), delay_seconds=30)
    fake.enqueue(slow, slow)

    # When the adapter asks with a short timeout and one retry
    with pytest.raises(LlmUnavailable, match=r"did not answer within 0\.2s"):
        ask("json_object", timeout=0.2, retries=1)

    # Then the timed-out request was retried once
    assert len(fake.wait_for_requests(2)) == 2


def test_a_bad_api_key_raises_llm_rejected_without_retrying() -> None:
    # Given a provider that only accepts its own key
    with FakeOpenAI(api_key="sk-right") as provider:
        model = adapter(provider, "json_schema", key="sk-wrong")

        # When the adapter asks with another key
        with pytest.raises(LlmRejected, match="rejected the API key") as raised:
            model.decide(MESSAGES, INTENTS)
        model.close()

        # Then the key is not echoed back into the error (it would land in the thread)
        assert "sk-wrong" not in str(raised.value)
        # And nothing reached the model (a 401 is not retried)
        assert provider.requests == []


def test_a_missing_api_key_says_which_setting_to_set() -> None:
    # Given a provider that requires a key, and no key configured
    with FakeOpenAI(api_key="sk-right") as provider:
        model = adapter(provider, "json_schema", key=None)

        # When / Then the error names the missing setting
        with pytest.raises(LlmRejected, match="OPENAI_API_KEY"):
            model.decide(MESSAGES, INTENTS)
        model.close()


@pytest.mark.parametrize(
    ("status", "expected"),
    [(400, r"rejected the request \(400\): unknown parameter"), (404, "model 'deploybot-model'")],
)
def test_bad_request_and_unknown_model_raise_llm_rejected_at_once(
    fake: FakeOpenAI, ask: Any, status: int, expected: str
) -> None:
    # Given a provider that refuses the request itself
    fake.enqueue(HttpError(status, "unknown parameter"), "never reached")

    # When / Then the adapter raises LlmRejected with a clear message, after one request
    with pytest.raises(LlmRejected, match=expected):
        ask("json_schema", retries=3)
    assert len(fake.requests) == 1


def test_an_unreachable_endpoint_raises_llm_unavailable() -> None:
    # Given an endpoint where nothing listens any more
    with FakeOpenAI() as provider:
        model = adapter(provider, "json_object", retries=0)
    try:
        # When the adapter asks
        with pytest.raises(LlmUnavailable, match="could not connect"):
            model.decide(MESSAGES, INTENTS)
    finally:
        model.close()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog with twelvefactor's loggers at DEBUG. Powertools loggers are process-wide: a handler
    loaded earlier in the session (the local stack runs them at WARNING) leaves the `twelvefactor`
    logger's level set, and its children inherit it, whatever level the root logger has."""
    with caplog.at_level(logging.DEBUG, logger="twelvefactor"):
        yield caplog


def test_the_api_key_is_never_logged_or_rendered(logs: pytest.LogCaptureFixture) -> None:
    # Given a provider that wants its key, rate-limits once and then rejects a wrong key
    secret = "sk-do-not-leak-0123456789abcdef"
    with FakeOpenAI(api_key=secret) as provider:
        provider.enqueue(HttpError(429, "Rate limit reached", retry_after_seconds=QUICK_RETRY), "{}")
        model = adapter(provider, "json_object", key=secret)
        wrong = adapter(provider, "json_object", key=secret[:-1] + "X")

        # When both ask, with every logger recording everything (httpx and httpcore included)
        with logs.at_level(logging.DEBUG):
            model.decide(MESSAGES, INTENTS)
            with pytest.raises(LlmRejected) as rejected:
                wrong.decide(MESSAGES, INTENTS)
        model.close()
        wrong.close()

    # Then the retry was logged, and the key appears in no log line, error or repr
    assert "retry 1 of 2" in logs.text
    assert len(provider.requests) == 2
    rendered = [logs.text, str(rejected.value), repr(model), repr(model.client), repr(vars(model))]
    assert not [text for text in rendered if secret[:-1] in text]


def test_an_answer_cut_off_at_the_token_limit_is_returned_and_logged(
    fake: FakeOpenAI, ask: Any, logs: pytest.LogCaptureFixture
) -> None:
    # Given a provider that stopped at its token limit mid-answer
    fake.enqueue(Answer('{"intent": "done_for_now", "mess', finish_reason="length"))

    # When the adapter asks
    with logs.at_level(logging.WARNING, logger="twelvefactor.adapters.llm"):
        reply = ask("json_object")

    # Then the truncated text goes to the core (which records it as invalid) and the cause is logged
    assert reply.content == '{"intent": "done_for_now", "mess'
    assert "cut off at its token limit" in logs.text


def _error_event_after_asking(tmp_path: Path, base_url: str) -> Error:
    """The reducer's step with the real adapter at ``base_url``: the error event it compacted."""
    settings = LlmSettings(
        base_url=base_url, model="deploybot-model", output_mode="json_object", max_retries=0
    )
    model = model_from_settings(settings, api_key="sk-test")
    thread = Thread(id="thread-1", agent=AGENT_NAME).extended(
        replies.launch("Deploy the backend", at=datetime(2025, 1, 2, tzinfo=UTC), channel="api")
    )
    ports = Ports(llm=model, prompts=JinjaPrompts(write_prompts(tmp_path)), clock=StepClock())
    try:
        [event] = step(build_agent(DeployService()), thread, ports)
    finally:
        model.close()
    assert isinstance(event, Error)
    return event


@pytest.mark.parametrize(
    "failure",
    [
        HttpError(
            500, "upstream http://10.0.3.7:8000/v1/chat/completions failed (10.0.3.7, [fd00:ec2::254]:80)"
        ),
        HttpError(404, "no such model at llm.internal.example:8443"),
        HttpError(401, "bad key"),
        None,  # nothing listens any more: a connection error
    ],
)
def test_an_llm_failures_error_event_names_no_url_or_address(
    tmp_path: Path, logs: pytest.LogCaptureFixture, failure: HttpError | None
) -> None:
    # Given the real adapter aimed at a provider on loopback that fails, or is gone
    with FakeOpenAI(model="deploybot-model") as provider:
        base_url = provider.base_url
        if failure is not None:
            provider.enqueue(failure)
            # When the reducer asks the model and compacts the failure into the thread (factor 9)
            error = _error_event_after_asking(tmp_path, base_url)
    if failure is None:
        error = _error_event_after_asking(tmp_path, base_url)

    # Then the error event the model will read names no URL, host, port or address
    endpoint = base_url.split("//", 1)[1].split("/", 1)[0]
    host, port = endpoint.split(":")
    message = error.data.message
    assert message.startswith(("LlmUnavailable: ", "LlmRejected: "))
    for leak in ("http", "://", host, f":{port}", "10.0.3.7", "fd00:ec2", "llm.internal.example"):
        assert leak not in message, (leak, message)
    # ... while the log line for operators still says which endpoint failed
    assert endpoint in logs.text


# --- json_schema mode is consistent: the wrapper it asks for, and the nulls it allows -------------


def test_json_schema_mode_refuses_an_answer_without_its_step_wrapper(fake: FakeOpenAI, ask: Any) -> None:
    # Given a provider that ignores the strict format and answers the bare intent
    fake.enqueue(json.dumps(DEPLOY))

    # When the adapter asks in json_schema mode
    reply = ask("json_schema")

    # Then the answer is not taken as if it were an intent: the core's check refuses it, saying why
    assert reply.content.startswith('not the {"step": ...} object the json_schema mode asks for: ')
    with pytest.raises(control.InvalidAnswer, match="not a JSON object"):
        control.Offer(intents=INTENTS).check(reply.content)


def test_json_schema_mode_accepts_every_null_its_strict_schema_allows() -> None:
    # Given every intent of both real agents and the eval judge's verdict, each answered with a
    # null in every place the strict schema allows one
    registry = agents.build_registry()
    sets = [registry.get(name).intents for name in registry.names] + [VERDICT]
    for intents in sets:
        schema = strict_schema(intents)
        for name, model in intents.by_name.items():
            definition = schema["$defs"][model.__name__]
            step = {
                field: (name if field == "intent" else None if _allows_null(spec) else _example(spec))
                for field, spec in definition["properties"].items()
            }
            answer = json.dumps({"step": step})
            jsonschema.validate(json.loads(answer), schema)

            # When it is unwrapped, then validated as the core does
            intent = control.Offer(intents=intents).check(unwrap_strict_answer(answer, intents))

            # Then it is accepted as that intent
            assert intent.intent == name


def _allows_null(spec: dict[str, Any]) -> bool:
    return any(option.get("type") == "null" for option in spec.get("anyOf", ()))


def _example(spec: dict[str, Any]) -> Any:
    if "enum" in spec:
        return spec["enum"][0]
    if "pattern" in spec:  # the only patterned field of the shipped agents: oncall's deployment ids
        return "dep-0001"
    return {"string": "x", "integer": 100, "boolean": True, "array": []}[spec["type"]]


def test_openais_cached_prompt_tokens_are_recorded_as_cache_reads() -> None:
    # Given usage as the openai SDK parses it, with automatically cached prompt tokens
    from openai.types import CompletionUsage

    from twelvefactor.adapters.llm import usage_of

    usage = CompletionUsage.model_validate(
        {
            "prompt_tokens": 2006,
            "completion_tokens": 300,
            "total_tokens": 2306,
            "prompt_tokens_details": {"cached_tokens": 1920},
        }
    )
    # When it becomes the core's usage, Then the cached tokens are kept apart (OpenAI writes its cache
    # for free, so there is no write count), and without details there is no cache count at all
    assert usage_of(usage) == TokenUsage(prompt_tokens=2006, completion_tokens=300, cache_read_tokens=1920)
    plain = CompletionUsage(prompt_tokens=10, completion_tokens=2, total_tokens=12)
    assert usage_of(plain) == TokenUsage(prompt_tokens=10, completion_tokens=2)
