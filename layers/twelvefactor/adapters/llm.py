"""The chat-completions LLM adapter: any OpenAI-compatible endpoint, through the openai SDK (factor 1).

OpenAI, Azure OpenAI, vLLM, Ollama and llama.cpp's server differ in how they constrain an answer
to a schema, so the structured-output mode is a setting (``LLM_OUTPUT_MODE``):

- ``json_schema``: OpenAI strict structured outputs. Strict mode refuses a union at the root and
  a handful of keywords, so the union is wrapped as ``{"step": <union>}`` in a strict-compatible
  form and the answer is unwrapped again.
- ``json_object``: ``{"type": "json_object", "schema": ...}``, the guided decoding of llama.cpp's
  server and vLLM (llama.cpp's server rejects the ``json_schema`` type).
- ``tools``: native tool calling, one function per intent, a call required.

Whatever the mode, ``decide`` returns the JSON text of one intent object and the core validates it
with the intents' own pydantic models: nothing here trusts the model. The HTTP is the openai SDK's,
with its own retries (408, 409, 429, 5xx, timeouts and connection errors, exponential backoff with
jitter, a provider's ``retry-after`` honoured). Amazon Bedrock is `twelvefactor.adapters.bedrock`.
Only the reducer (and the CLI's eval and local stack) import this module; the SDK is imported at
module initialisation so that a SnapStart snapshot already holds it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from ipaddress import ip_address
from typing import Any
from urllib.parse import urlsplit

import openai

from twelvefactor.core.errors import LlmError, LlmRejected, LlmUnavailable
from twelvefactor.core.events import TokenUsage
from twelvefactor.core.ports import ChatMessage, ModelReply
from twelvefactor.core.tools import IntentSet
from twelvefactor.settings import LlmSettings, OutputMode

logger = logging.getLogger(__name__)

# What the openai SDK talks to when no base URL is configured.
DEFAULT_BASE_URL = "https://api.openai.com/v1"
# The SDK refuses to start without a key; local servers (llama.cpp, vLLM, Ollama) need none and ignore
# this one. A provider that does need a key answers 401, and the error then says which setting to set.
NO_API_KEY = "no-api-key-configured"
WRAPPER_KEY = "step"
UNWRAPPED_MARKER = 'not the {"step": ...} object the json_schema mode asks for'
SCHEMA_NAME = "next_step"
DISCRIMINATOR = "intent"
# Strict mode refuses these keywords. Dropping them loses nothing: the core validates every answer
# with the intents' pydantic models, which still enforce lengths, defaults and the discriminator.
_STRICT_UNSUPPORTED = frozenset(
    {
        "default",
        "discriminator",
        "title",
        "examples",
        "minLength",
        "maxLength",
        "minProperties",
        "maxProperties",
        "uniqueItems",
        "patternProperties",
        "propertyNames",
        "unevaluatedProperties",
        "contains",
        "minContains",
        "maxContains",
    }
)
# Keys whose values are maps of names to schemas, not keywords.
_NAMED_SCHEMAS = ("properties", "$defs")
_MAX_MESSAGE_CHARS = 300


class OpenAIModel:
    """`twelvefactor.core.ports.LanguageModel` over an OpenAI-compatible chat completions endpoint."""

    def __init__(
        self,
        *,
        model: str,
        output_mode: OutputMode = "json_schema",
        base_url: str | None = None,
        api_key: str | None = None,
        timeout_seconds: float = 60.0,
        max_retries: int = 3,
        temperature: float = 0.0,
    ) -> None:
        self.model = model
        self.output_mode: OutputMode = output_mode
        self.temperature = temperature
        self.timeout_seconds = timeout_seconds
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self._has_api_key = bool(api_key)
        self.client = openai.OpenAI(
            base_url=self.base_url,
            api_key=api_key or NO_API_KEY,
            timeout=timeout_seconds,
            max_retries=max_retries,
        )

    def __repr__(self) -> str:
        return f"OpenAIModel(model={self.model!r}, base_url={self.base_url!r})"

    def decide(self, messages: Sequence[ChatMessage], intents: IntentSet) -> ModelReply:
        request: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": message["role"], "content": message["content"]} for message in messages],
            "temperature": self.temperature,
            **self._output_format(intents),
        }
        try:
            completion = self.client.chat.completions.create(**request)
        except openai.APIError as error:
            raise self._translate(error) from error
        choice = completion.choices[0] if completion.choices else None
        if choice is not None and choice.finish_reason == "length":
            # Cut off at the token limit: the core will record the truncated answer as invalid.
            logger.warning("the model's answer was cut off at its token limit")
        return ModelReply(content=self._answer_text(choice, intents), usage=usage_of(completion.usage))

    def list_models(self) -> list[str]:
        """The model ids the endpoint serves (``GET {base_url}/models``); `check_llm` asks it once."""
        return [model.id for model in self.client.models.list()]

    def close(self) -> None:
        self.client.close()

    # --- the three modes ---------------------------------------------------------------------

    def _output_format(self, intents: IntentSet) -> dict[str, Any]:
        match self.output_mode:
            case "json_schema":
                strict = {"name": SCHEMA_NAME, "strict": True, "schema": strict_schema(intents)}
                return {"response_format": {"type": "json_schema", "json_schema": strict}}
            case "json_object":
                # llama.cpp's and vLLM's extension: the SDK passes unknown body fields through as given.
                return {"response_format": {"type": "json_object", "schema": guided_schema(intents)}}
            case "tools":
                return {"tools": tool_definitions(intents), "tool_choice": "required"}

    def _answer_text(self, choice: Any, intents: IntentSet) -> str:
        # An empty or missing answer is returned as "", which the core records as invalid output.
        message = getattr(choice, "message", None)
        content = _text(getattr(message, "content", None))
        match self.output_mode:
            case "json_schema":
                refusal = _text(getattr(message, "refusal", None))
                return unwrap_strict_answer(content or refusal or "", intents)
            case "json_object":
                return content or ""
            case "tools":
                return _tool_call_as_intent(getattr(message, "tool_calls", None), content)

    # --- errors ------------------------------------------------------------------------------

    def _translate(self, error: openai.APIError) -> LlmError:
        """The core's error, in words the model may read: it becomes an error event in the thread
        (factor 9), so it names no endpoint, host or address; the log line for operators does."""
        status = error.status_code if isinstance(error, openai.APIStatusError) else None
        raw = provider_message(error)
        logger.warning("the model endpoint %s failed (status %s): %s", self.base_url, status, _short(raw))
        detail = _short(scrub_addresses(raw, hosts=(urlsplit(self.base_url).hostname or "",)))
        if isinstance(error, openai.APITimeoutError):
            return LlmUnavailable(f"the model provider did not answer within {self.timeout_seconds}s")
        if status is None:
            return LlmUnavailable(f"could not connect to the model provider: {detail}")
        if status == 401:
            hint = "" if self._has_api_key else " (no API key is configured: set OPENAI_API_KEY)"
            return LlmRejected(f"the model provider rejected the API key{hint}: {detail}")
        if status == 403:
            return LlmRejected(f"the model provider refused access to model {self.model!r}: {detail}")
        if status == 404:
            return LlmRejected(f"model {self.model!r} or its endpoint was not found: {detail}")
        if status in (408, 409, 429) or status >= 500:
            return LlmUnavailable(f"the model provider kept failing ({status}) after retries: {detail}")
        return LlmRejected(f"the model provider rejected the request ({status}): {detail}")


def provider_message(error: openai.APIError) -> str:
    """The provider's own words (``{"error": {"message": ...}}``), else the transport's."""
    body = error.body
    inner = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(inner, dict) and isinstance(inner.get("message"), str):
        return str(inner["message"])
    if isinstance(inner, str) and inner:
        return inner
    cause = error.__cause__
    if isinstance(error, openai.APIConnectionError) and cause is not None and str(cause):
        return str(cause)
    return error.message


def usage_of(usage: Any) -> TokenUsage | None:
    """The SDK's usage as the core's, with OpenAI's automatically cached prompt tokens."""
    prompt, completion = getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None)
    if not (isinstance(prompt, int) and isinstance(completion, int)) or min(prompt, completion) < 0:
        return None
    details = getattr(usage, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None)
    return TokenUsage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        cache_read_tokens=cached if isinstance(cached, int) and cached > 0 else None,
    )


# What an address looks like in a provider's or a transport's words: a URL, a host with a port,
# an IPv4 or IPv6 literal. Each candidate is checked before it is replaced (`_address_like`).
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
_HOST_PORT = re.compile(r"\b(?:localhost|(?:[A-Za-z0-9-]+\.)+[A-Za-z0-9-]+):\d{1,5}\b")
_IP_CANDIDATE = re.compile(r"\[?[0-9A-Fa-f:.]*[:.][0-9A-Fa-f:.]*(?:%[\w.-]+)?\]?(?::\d{1,5})?")


def scrub_addresses(text: str, *, hosts: Sequence[str] = ()) -> str:
    """``text`` without URLs, host:port pairs, IP addresses or the given host names: an error the
    model reads must not teach it (or whoever reads the thread) where internal services live."""
    text = _URL.sub("<url>", text)
    text = _HOST_PORT.sub("<host>", text)
    text = _IP_CANDIDATE.sub(
        lambda match: "<address>" if _address_like(match.group()) else match.group(), text
    )
    for host in filter(None, hosts):
        text = re.sub(re.escape(host), "<host>", text, flags=re.IGNORECASE)
    return text


def _address_like(candidate: str) -> bool:
    bare = candidate.strip("[]")
    if "]:" in candidate:
        bare = candidate[1 : candidate.index("]")]
    elif bare.count(":") == 1 and "." in bare:
        bare = bare.split(":")[0]  # an IPv4 address with its port
    try:
        ip_address(bare.split("%", 1)[0])
    except ValueError:
        return False
    return True


def model_from_settings(settings: LlmSettings, api_key: str | None = None) -> OpenAIModel:
    """The adapter as configured; ``api_key`` overrides the setting (e.g. resolved from a secret)."""
    if api_key is None and settings.api_key is not None:
        api_key = settings.api_key.get_secret_value()
    return OpenAIModel(
        model=settings.model,
        output_mode=settings.output_mode,
        base_url=settings.base_url,
        api_key=api_key,
        timeout_seconds=settings.timeout_seconds,
        max_retries=settings.max_retries,
        temperature=settings.temperature,
    )


# --- schemas -----------------------------------------------------------------------------------


def strict_schema(intents: IntentSet) -> dict[str, Any]:
    """The union wrapped as ``{"step": <union>}`` in the subset of JSON Schema strict mode accepts.

    Every object lists all its properties as required and forbids others; an optional property
    becomes nullable instead (``unwrap_strict_answer`` turns its null back into an omission, so
    pydantic applies the default). A free-form object (``dict[str, Any]``) cannot be expressed and
    becomes the empty object.
    """
    union = intents.json_schema()
    definitions = union.pop("$defs", {})
    wrapped: dict[str, Any] = {
        "type": "object",
        "properties": {WRAPPER_KEY: union},
        "required": [WRAPPER_KEY],
    }
    if definitions:
        wrapped["$defs"] = definitions
    strict: dict[str, Any] = _strictify(wrapped)
    return strict


def guided_schema(intents: IntentSet) -> dict[str, Any]:
    """The union for guided decoding, with the discriminator required in every branch.

    pydantic leaves ``intent`` optional (it has a default), so a grammar built from its schema
    would let a model omit the one field that says which intent it chose.
    """
    union = intents.json_schema()
    union.pop("discriminator", None)
    if "oneOf" in union:
        union["anyOf"] = union.pop("oneOf")
    for branch in (union, *union.get("$defs", {}).values()):
        if DISCRIMINATOR in branch.get("properties", {}):
            branch["required"] = [
                DISCRIMINATOR,
                *(n for n in branch.get("required", ()) if n != DISCRIMINATOR),
            ]
    return union


def tool_definitions(intents: IntentSet) -> list[dict[str, Any]]:
    """One function per intent; the function's name is the intent, so the field is left out."""
    tools = []
    for name, model in intents.by_name.items():
        parameters = model.model_json_schema()
        parameters.pop("title", None)
        description = parameters.pop("description", None) or name.replace("_", " ")
        parameters.get("properties", {}).pop(DISCRIMINATOR, None)
        parameters["required"] = [n for n in parameters.get("required", ()) if n != DISCRIMINATOR]
        function = {"name": name, "description": description, "parameters": parameters}
        tools.append({"type": "function", "function": function})
    return tools


def _strictify(node: Any) -> Any:
    if isinstance(node, list):
        return [_strictify(item) for item in node]
    if not isinstance(node, dict):
        return node
    strict: dict[str, Any] = {}
    for key, value in node.items():
        if key in _STRICT_UNSUPPORTED:
            continue
        if key in _NAMED_SCHEMAS:
            strict[key] = {name: _strictify(schema) for name, schema in value.items()}
        elif key == "oneOf":
            strict["anyOf"] = _strictify(value)
        elif key == "const":
            strict["enum"] = [value]
        else:
            strict[key] = _strictify(value)
    if strict.get("type") == "object" or "properties" in strict:
        properties: dict[str, Any] = strict.setdefault("properties", {})
        required = set(node.get("required", ()))
        for name, schema in properties.items():
            # A constant (the discriminator) can always be given, so it stays required and non-null.
            if name not in required and "const" not in node["properties"][name]:
                properties[name] = _nullable(schema)
        strict["required"] = list(properties)
        strict["additionalProperties"] = False
    return strict


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    if _accepts_null(schema, {}):
        return schema
    inner = {key: value for key, value in schema.items() if key != "description"}
    nullable: dict[str, Any] = {"anyOf": [inner, {"type": "null"}]}
    if "description" in schema:
        nullable["description"] = schema["description"]
    return nullable


def _accepts_null(schema: dict[str, Any], definitions: dict[str, Any]) -> bool:
    schema = _resolve(schema, definitions)
    kind = schema.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return True
    branches = [*schema.get("anyOf", ()), *schema.get("oneOf", ())]
    return any(_accepts_null(branch, definitions) for branch in branches)


def _resolve(schema: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    reference = schema.get("$ref")
    if isinstance(reference, str) and reference.startswith("#/$defs/"):
        resolved: dict[str, Any] = definitions.get(reference.removeprefix("#/$defs/"), schema)
        return resolved
    return schema


# --- answers -----------------------------------------------------------------------------------


def unwrap_strict_answer(text: str, intents: IntentSet) -> str:
    """``{"step": {...}}`` -> the intent's JSON text, with strict mode's stand-in nulls removed.

    The schema sent requires the wrapper, so an answer without it did not follow the request: it
    is marked as such (the core records it as invalid output, with the answer as given), never
    accepted as if it were an intent. Anything that is not JSON is returned unchanged, so the
    core's validation error shows exactly what the model said.
    """
    try:
        answer = json.loads(text, strict=False)
    except ValueError:
        return text
    if (
        not isinstance(answer, dict)
        or set(answer) != {WRAPPER_KEY}
        or not isinstance(answer[WRAPPER_KEY], dict)
    ):
        return f"{UNWRAPPED_MARKER}: {text}"
    union = intents.json_schema()
    step = _drop_stand_in_nulls(answer[WRAPPER_KEY], union, union.get("$defs", {}))
    return json.dumps(step)


def _drop_stand_in_nulls(value: Any, schema: dict[str, Any], definitions: dict[str, Any]) -> Any:
    """Walk the value along the original schema; a null where null was never allowed means omitted."""
    schema = _resolve(schema, definitions)
    branches = [
        _resolve(branch, definitions) for branch in (*schema.get("oneOf", ()), *schema.get("anyOf", ()))
    ]
    if branches:
        fitting = next((branch for branch in branches if _fits(value, branch)), None)
        return value if fitting is None else _drop_stand_in_nulls(value, fitting, definitions)
    if isinstance(value, dict) and "properties" in schema:
        properties: dict[str, Any] = schema["properties"]
        required = set(schema.get("required", ()))
        kept = {}
        for name, item in value.items():
            if name not in properties:
                kept[name] = item
            elif item is None and name not in required and not _accepts_null(properties[name], definitions):
                continue
            else:
                kept[name] = _drop_stand_in_nulls(item, properties[name], definitions)
        return kept
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_drop_stand_in_nulls(item, schema["items"], definitions) for item in value]
    return value


def _fits(value: Any, schema: dict[str, Any]) -> bool:
    """Whether a union branch is the one the value took: its keys, and its constants, match."""
    if not isinstance(value, dict):
        return "properties" not in schema
    properties: dict[str, Any] = schema.get("properties", {})
    if not set(value) <= set(properties):
        return False
    return all(
        value.get(name) == definition["const"]
        for name, definition in properties.items()
        if "const" in definition
    )


def _tool_call_as_intent(calls: Any, content: str | None) -> str:
    if not calls:
        # No function call: a server without tool support may still have answered in text.
        return content or ""
    function = getattr(calls[0], "function", None)
    name, raw = getattr(function, "name", None), getattr(function, "arguments", None)
    if not isinstance(name, str):
        return content or ""
    return call_as_intent(name, raw if isinstance(raw, str) else "", calls=len(calls))


def call_as_intent(name: str, raw_arguments: str | dict[str, Any], *, calls: int = 1) -> str:
    """One tool call as the intent's JSON text: the tool's name is the intent."""
    if isinstance(raw_arguments, dict):
        arguments: Any = dict(raw_arguments)
    else:
        try:
            # strict=False: raw control characters in a string are read, then cleaned by the core.
            arguments = json.loads(raw_arguments or "{}", strict=False)
        except ValueError:
            arguments = None
    if not isinstance(arguments, dict):
        # Shown as-is in the core's error, so the next attempt can see what went wrong.
        return f"{name}({raw_arguments})"
    if calls > 1:
        logger.warning("the model made %d tool calls; only the first is used", calls)
    arguments.pop(DISCRIMINATOR, None)
    return json.dumps({DISCRIMINATOR: name, **arguments})


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[: _MAX_MESSAGE_CHARS - 1] + "…"
