"""Tools are structured outputs (factors 1 and 4).

Each intent is one pydantic model with a literal ``intent`` field; an agent's next step is the
discriminated union of its intents. The model's answer is validated against that union, never
trusted as-is, and whether a call needs approval is decided here, in code, from the policy.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from .events import JsonValue


class Intent(BaseModel):
    """Base of every intent model: the model must name exactly one intent and nothing extra."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    intent: str


class RequestHumanInput(Intent):
    """Ask a person for information, clarification or a decision, then wait for the answer."""

    intent: Literal["request_human_input"] = "request_human_input"
    question: str = Field(min_length=1, description="What you need to know, as one clear question")
    context: str = Field(default="", description="Why you are asking: what you know so far")
    urgency: Literal["low", "medium", "high"] = "medium"
    format: Literal["free_text", "yes_no", "multiple_choice"] = "free_text"
    choices: list[str] = Field(default_factory=list, description="The options, for multiple_choice")


class DoneForNow(Intent):
    """Finish: the task is complete (or cannot go further); the message goes to the person."""

    intent: Literal["done_for_now"] = "done_for_now"
    message: str = Field(min_length=1, description="What you did, or why you stopped")


BUILTIN_INTENTS: tuple[type[Intent], ...] = (RequestHumanInput, DoneForNow)


@dataclass(frozen=True)
class ToolContext:
    """What an executor may know about the call. ``idempotency_key`` is stable across retries."""

    thread_id: str
    call_id: str

    @property
    def idempotency_key(self) -> str:
        return f"{self.thread_id}:{self.call_id}"


Executor = Callable[[Any, ToolContext], JsonValue]
ApprovalPolicy = bool | Callable[[Any], bool]
# A done message templated by code from the validated call and its result (deterministic completion).
Completion = Callable[[Any, JsonValue], str]
# How long a read-only result stays current, so that the same call is not offered again (the loop
# guard, factor 8's result caching): until a new user message or a result of a tool that acts
# ("until_change"), until a new user message only ("until_request": nothing the agent does changes
# it), or never cached ("off": e.g. a clock or a job's progress).
Freshness = Literal["until_change", "until_request", "off"]


@dataclass(frozen=True)
class Grounded:
    """A field whose value must come from an earlier result in the thread, never from the model's
    imagination: every value found at ``path`` in the results of ``source`` (lists are walked, so
    ``tags.name`` is the name of every tag). The schema sent offers exactly those values."""

    source: str
    path: str


@dataclass(frozen=True)
class Tool:
    """One intent an agent can act on: its model, how it runs, and whether a human must approve.

    ``requires_approval`` is either a constant or a deterministic predicate on the validated call
    (e.g. production deploys only). A ``sync`` tool runs inside the reducer; an ``async`` tool is
    dispatched by its executor and its result arrives later through a callback. A ``read_only``
    tool changes nothing (a lookup): a later answer to the same call replaces an earlier one, so the
    context shows the earlier one as a marker. A tool that acts keeps every result: two payment
    links made on purpose with the same arguments are two links.
    """

    model: type[Intent]
    execute: Executor
    mode: Literal["sync", "async"] = "sync"
    requires_approval: ApprovalPolicy = False
    read_only: bool = False
    requires: tuple[str, ...] = ()
    grounded: Mapping[str, Grounded] = field(default_factory=dict)
    freshness: Freshness = "until_change"
    completes: Completion | None = None

    @property
    def name(self) -> str:
        return intent_name(self.model)

    def needs_approval(self, call: Intent) -> bool:
        if callable(self.requires_approval):
            return bool(self.requires_approval(call))
        return self.requires_approval


def intent_name(model: type[Intent]) -> str:
    names: tuple[object, ...] = getattr(model.model_fields["intent"].annotation, "__args__", ())
    match names:
        case (str() as name,):
            return name
    raise TypeError(f"{model.__name__}.intent must be a single Literal string")


@dataclass(frozen=True)
class IntentSet:
    """The discriminated union of an agent's intents, its validator and its JSON Schema."""

    models: tuple[type[Intent], ...]
    adapter: TypeAdapter[Any] = field(repr=False)
    by_name: Mapping[str, type[Intent]] = field(repr=False)

    @classmethod
    def of(cls, models: tuple[type[Intent], ...]) -> IntentSet:
        by_name = {intent_name(model): model for model in models}
        if len(by_name) != len(models):
            raise ValueError("intent names must be unique within an agent")
        union: Any = Annotated[Union[models], Field(discriminator="intent")]  # noqa: UP007
        return cls(models=models, adapter=TypeAdapter(union), by_name=by_name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.by_name)

    def json_schema(self) -> dict[str, Any]:
        """The union's JSON Schema, with `intent` required in every member.

        The models default `intent` so code can build them without repeating the name, but the
        model must always say which intent it means: constrained decoders only emit what the
        schema requires. Each call returns a fresh copy, which callers may reshape.
        """
        copy: dict[str, Any] = json.loads(self._schema_text)
        return copy

    @cached_property
    def _schema_text(self) -> str:
        # Generating the schema costs milliseconds and every model call needs it up to three times
        # (prompt, response format, answer unwrapping): generate once, hand out copies.
        schema = self.adapter.json_schema()
        for definition in schema.get("$defs", {}).values():
            if "intent" in definition.get("properties", {}):
                required = definition.setdefault("required", [])
                if "intent" not in required:
                    required.insert(0, "intent")
        return json.dumps(schema)

    def validate_json(self, text: str) -> Intent:
        result: Intent = self.adapter.validate_json(text)
        return result

    def validate_python(self, value: object) -> Intent:
        result: Intent = self.adapter.validate_python(value)
        return result
