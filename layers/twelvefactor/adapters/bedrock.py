"""Amazon Bedrock through boto3's Converse API (factor 1), with the Lambda's IAM role and no key.

Two output modes (``LLM_OUTPUT_MODE``):

- ``tools`` (the default for Bedrock): one tool per intent and a forced tool choice (``any``, or
  the one tool when only one intent is offered), so every reply is exactly one intent.
- ``json_schema``: Converse structured output (``outputConfig.textFormat``), the same strict
  ``{"step": <union>}`` wrapper the chat-completions adapter sends, for models that support it.

Prompt caching: a ``cachePoint`` closes the stable prefix (the tools, then the system prompt), so the
catalogue and the instructions are read from Bedrock's cache on every later decision of a turn; the
thread follows, in order. Usage is recorded with the cache read and write tokens.

As with `twelvefactor.adapters.llm`, the answer is returned as the intent's JSON text and the core
validates it; errors become the core's `LlmUnavailable`/`LlmRejected` with no URL, host or address in
them (they land in the thread, factor 9). Retries are botocore's own (standard mode: throttling,
5xx, timeouts and connection errors, exponential backoff with jitter).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from typing import Any, Literal

from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from twelvefactor.adapters.llm import (
    DISCRIMINATOR,
    SCHEMA_NAME,
    call_as_intent,
    scrub_addresses,
    strict_schema,
    unwrap_strict_answer,
)
from twelvefactor.core.errors import LlmError, LlmRejected, LlmUnavailable
from twelvefactor.core.events import TokenUsage
from twelvefactor.core.ports import ChatMessage, ModelReply
from twelvefactor.core.tools import IntentSet

logger = logging.getLogger(__name__)

BedrockOutputMode = Literal["tools", "json_schema"]
CACHE_POINT: dict[str, Any] = {"cachePoint": {"type": "default"}}
DEFAULT_MAX_TOKENS = 1024
_MAX_MESSAGE_CHARS = 300
# Bedrock's error codes that mean "try again later", as botocore's standard retry mode treats them.
_UNAVAILABLE_CODES = frozenset(
    {
        "ThrottlingException",
        "ServiceUnavailableException",
        "InternalServerException",
        "ModelNotReadyException",
        "ModelTimeoutException",
    }
)


def client_config(*, timeout_seconds: float, max_retries: int) -> Config:
    """botocore's standard retries (``max_attempts`` counts the first attempt) and our timeout."""
    return Config(
        retries={"mode": "standard", "total_max_attempts": max_retries + 1},
        read_timeout=timeout_seconds,
        connect_timeout=min(timeout_seconds, 10.0),
    )


class BedrockModel:
    """`twelvefactor.core.ports.LanguageModel` over Bedrock's Converse API."""

    def __init__(
        self,
        client: Any,
        *,
        model_id: str,
        output_mode: BedrockOutputMode = "tools",
        temperature: float = 0.0,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        prompt_cache: bool = True,
        timeout_seconds: float = 60.0,
    ) -> None:
        self._client = client
        self.model_id = model_id
        self.output_mode: BedrockOutputMode = output_mode
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.prompt_cache = prompt_cache
        self.timeout_seconds = timeout_seconds

    def __repr__(self) -> str:
        return f"BedrockModel(model_id={self.model_id!r}, output_mode={self.output_mode!r})"

    def decide(self, messages: Sequence[ChatMessage], intents: IntentSet) -> ModelReply:
        request = self.request(messages, intents)
        try:
            answer = self._client.converse(**request)
        except (ClientError, BotoCoreError) as error:
            raise self._translate(error) from error
        if answer.get("stopReason") == "max_tokens":
            logger.warning("the model's answer was cut off at its token limit")
        return ModelReply(content=self._answer_text(answer, intents), usage=usage_of(answer.get("usage")))

    def close(self) -> None:
        """Nothing to release: the boto3 client is the runtime's, shared for the container's life."""

    # --- the request -------------------------------------------------------------------------

    def request(self, messages: Sequence[ChatMessage], intents: IntentSet) -> dict[str, Any]:
        """The Converse request: stable prefix (tools, system) closed by cache points, then the thread."""
        system: list[dict[str, Any]] = [{"text": m["content"]} for m in messages if m["role"] == "system"]
        if self.prompt_cache and system:
            system.append(CACHE_POINT)
        request: dict[str, Any] = {
            "modelId": self.model_id,
            "messages": conversation(messages),
            "inferenceConfig": {"temperature": self.temperature, "maxTokens": self.max_tokens},
        }
        if system:
            request["system"] = system
        match self.output_mode:
            case "tools":
                request["toolConfig"] = self._tool_config(intents)
            case "json_schema":
                structure = {
                    "jsonSchema": {"name": SCHEMA_NAME, "schema": json.dumps(strict_schema(intents))}
                }
                request["outputConfig"] = {"textFormat": {"type": "json_schema", "structure": structure}}
        return request

    def _tool_config(self, intents: IntentSet) -> dict[str, Any]:
        tools: list[dict[str, Any]] = [{"toolSpec": spec} for spec in tool_specs(intents)]
        names = list(intents.by_name)
        # One intent offered: name it; several: "any" still forces exactly a tool call, never prose.
        choice = {"tool": {"name": names[0]}} if len(names) == 1 else {"any": {}}
        if self.prompt_cache:
            tools.append(CACHE_POINT)
        return {"tools": tools, "toolChoice": choice}

    # --- the answer --------------------------------------------------------------------------

    def _answer_text(self, answer: dict[str, Any], intents: IntentSet) -> str:
        output = answer.get("output")
        message = output.get("message") if isinstance(output, dict) else None
        blocks = message.get("content") if isinstance(message, dict) else None
        blocks = [block for block in blocks if isinstance(block, dict)] if isinstance(blocks, list) else []
        text = "".join(block["text"] for block in blocks if isinstance(block.get("text"), str))
        uses = [block["toolUse"] for block in blocks if isinstance(block.get("toolUse"), dict)]
        if self.output_mode == "json_schema":
            return unwrap_strict_answer(text, intents)
        if not uses or not isinstance(uses[0].get("name"), str):
            return text  # no tool call: the core records whatever text came as invalid output
        raw = uses[0].get("input")
        arguments = raw if isinstance(raw, dict) else json.dumps(raw)
        return call_as_intent(uses[0]["name"], arguments, calls=len(uses))

    # --- errors ------------------------------------------------------------------------------

    def _translate(self, error: ClientError | BotoCoreError) -> LlmError:
        """The core's error in words the model may read: no endpoint, host, account or ARN."""
        logger.warning("Bedrock converse failed for model %s: %s", self.model_id, _short(str(error)))
        if isinstance(error, ReadTimeoutError | ConnectTimeoutError):
            return LlmUnavailable(f"the model provider did not answer within {self.timeout_seconds}s")
        if isinstance(error, EndpointConnectionError):
            return LlmUnavailable("could not connect to the model provider")
        if not isinstance(error, ClientError):
            return LlmUnavailable(f"the model provider failed: {_scrub(type(error).__name__)}")
        details = error.response.get("Error", {})
        code = str(details.get("Code", "unknown"))
        detail = _scrub(str(details.get("Message", "")))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _UNAVAILABLE_CODES or (isinstance(status, int) and status >= 500):
            return LlmUnavailable(f"the model provider kept failing ({code}) after retries: {detail}")
        if code in ("AccessDeniedException", "UnrecognizedClientException"):
            return LlmRejected(f"the model provider refused access to model {self.model_id!r}: {detail}")
        if code == "ResourceNotFoundException":
            return LlmRejected(f"model {self.model_id!r} was not found: {detail}")
        return LlmRejected(f"the model provider rejected the request ({code}): {detail}")


def conversation(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """The non-system messages as Converse wants them: starting with the user, roles alternating
    (consecutive messages of one role are joined), each a list of text blocks."""
    turns: list[dict[str, Any]] = []
    for message in messages:
        role = message["role"]
        if role == "system":
            continue
        if not turns and role != "user":
            turns.append({"role": "user", "content": [{"text": "(the thread follows)"}]})
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].append({"text": message["content"]})
        else:
            turns.append({"role": role, "content": [{"text": message["content"]}]})
    if not turns:
        turns.append({"role": "user", "content": [{"text": "(the thread is empty)"}]})
    return turns


def tool_specs(intents: IntentSet) -> list[dict[str, Any]]:
    """One toolSpec per intent; its name is the intent, so the discriminator field is left out."""
    specs = []
    for name, model in intents.by_name.items():
        schema = model.model_json_schema()
        schema.pop("title", None)
        description = schema.pop("description", None) or name.replace("_", " ")
        schema.get("properties", {}).pop(DISCRIMINATOR, None)
        schema["required"] = [n for n in schema.get("required", ()) if n != DISCRIMINATOR]
        specs.append({"name": name, "description": description, "inputSchema": {"json": schema}})
    return specs


def usage_of(usage: Any) -> TokenUsage | None:
    """Converse's usage as the core's. Bedrock counts cache reads and writes apart from
    ``inputTokens``; the core's ``prompt_tokens`` is every input token, so they are added in."""
    if not isinstance(usage, dict):
        return None
    fresh, output = usage.get("inputTokens"), usage.get("outputTokens")
    if not (isinstance(fresh, int) and isinstance(output, int)) or min(fresh, output) < 0:
        return None
    read, write = usage.get("cacheReadInputTokens"), usage.get("cacheWriteInputTokens")
    read = read if isinstance(read, int) and read >= 0 else None
    write = write if isinstance(write, int) and write >= 0 else None
    return TokenUsage(
        prompt_tokens=fresh + (read or 0) + (write or 0),
        completion_tokens=output,
        cache_read_tokens=read,
        cache_write_tokens=write,
    )


def model_from_settings(settings: Any) -> BedrockModel:
    """The adapter with a client of its own (the CLI's evals); in Lambda the runtime's client is used."""
    import boto3  # noqa: PLC0415 - the CLI pays for it only when Bedrock is the provider

    config = client_config(timeout_seconds=settings.timeout_seconds, max_retries=settings.max_retries)
    return model_from_client(
        boto3.client("bedrock-runtime", region_name=settings.bedrock_region, config=config), settings
    )


def model_from_client(client: Any, settings: Any) -> BedrockModel:
    """The adapter as configured (`twelvefactor.settings.LlmSettings`), over the runtime's client."""
    return BedrockModel(
        client,
        model_id=settings.model,
        output_mode=settings.bedrock_output_mode,
        temperature=settings.temperature,
        prompt_cache=settings.bedrock_prompt_cache,
        timeout_seconds=settings.timeout_seconds,
    )


# An ARN names the account, region and resource: not for the model's eyes either.
_ARN = re.compile(r"\barn:aws[\w-]*:[^\s'\"]+")


def _scrub(text: str) -> str:
    return _short(scrub_addresses(_ARN.sub("<arn>", text)))


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[: _MAX_MESSAGE_CHARS - 1] + "…"
