"""Which intents the model may choose next, decided by code from the thread (factor 8).

`offer(agent, thread)` is the one function that answers it. The reducer, the structured-output
schema of every output mode (through `Offer.intents`), the prompt's list of steps, `twelvefactor
prompt render` and the eval runner all call it, so they never disagree. From the agent's policy
on its tools it derives:

- prerequisites: a tool whose ``requires`` names a tool with no result in the thread yet is not
  offered (no deploy before the tags are listed);
- grounded fields: a field whose values must come from an earlier result carries exactly those
  values as an enum, and a tool whose grounded field has no value to take yet is not offered (the
  executor is never called with an invented tag or customer id);
- the loop guard: a read-only call identical (same intent and arguments) to one already answered
  is refused while its result is current; a read-only tool without fields is then not offered at
  all. A result is current until something newer could have changed it: a new user message (a new
  request: the person may have changed the world since) or, for the default ``until_change``
  freshness, a result of a tool that acts. A human response answers the agent's own question
  within the same request, and an approval is a verdict on one call: neither is news about the
  world, so both leave lookups current.

The narrowing lives in the schema and at the end of the prompt, never in the system prompt or the
earlier events, so the request's cacheable prefix stays the same from one decision to the next.

`Offer.check` turns the model's answer into an intent or an `InvalidAnswer` whose message becomes
a compact error event: invalid JSON, an intent not offered (with the reason), a control character
in a string, a value outside a grounded enum, or a repeated lookup (pointing at the earlier result).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal, cast

from pydantic import Field, TypeAdapter, ValidationError, create_model

from .events import Event, JsonValue, Thread, ToolCall, ToolResult, UserMessage
from .tools import Intent, IntentSet, Tool

if TYPE_CHECKING:
    from .agent import Agent

# C0 and C1 control characters other than tab and newline: never stored in a thread. Constrained
# decoders can emit them raw inside JSON strings (a grammar allows any character there).
_FORBIDDEN_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_MAX_VALUES_SHOWN = 8


class InvalidAnswer(ValueError):
    """The model's answer cannot be acted on; the message is what the thread's error event says."""


@dataclass(frozen=True)
class Offer:
    """What the model may choose at one decision, and why the rest is withheld."""

    intents: IntentSet
    # Intent name -> why it is not offered now (shown in the error if the model names it anyway).
    withheld: Mapping[str, str] = field(default_factory=dict)
    # Loop-guard key (intent and canonical arguments) -> the call id whose result is still current.
    answered: Mapping[str, str] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        return self.intents.names

    def check(self, text: str) -> Intent:
        """The answer as a validated intent, or `InvalidAnswer` saying exactly what is wrong."""
        try:
            # strict=False: a raw newline or tab inside a string (seen from grammar-constrained
            # decoders) is read as the character it is, then cleaned below like any other string.
            value = json.loads(text, strict=False)
        except ValueError:
            raise InvalidAnswer(f"invalid model output (not a JSON object): {text}") from None
        name = value.get("intent") if isinstance(value, dict) else None
        if isinstance(name, str) and name in self.withheld:
            raise InvalidAnswer(f"{name} is not offered now: {self.withheld[name]}")
        value = clean_strings(value)
        try:
            intent = self.intents.validate_python(value)
        except ValidationError as error:
            raise InvalidAnswer(f"invalid model output ({validation_summary(error)}): {text}") from None
        earlier = self.answered.get(
            call_key(intent.intent, intent.model_dump(mode="json", exclude={"intent"}))
        )
        if earlier is not None:
            raise InvalidAnswer(
                f"{intent.intent} with these arguments was already answered ({earlier}) and that result "
                "is still current: it was not run again; read its result above"
            )
        return intent


def offer(agent: Agent, thread: Thread | Sequence[Event]) -> Offer:
    """The intents the model may choose next in this thread, with grounded fields narrowed."""
    events = thread.events if isinstance(thread, Thread) else tuple(thread)
    answered = current_lookups(agent, events)
    have_results = {event.data.intent for event in events if isinstance(event, ToolResult)}
    models: list[type[Intent]] = []
    withheld: dict[str, str] = {}
    for tool in agent.tools:
        reason, choices = _assess(tool, events, have_results, answered)
        if reason is not None:
            withheld[tool.name] = reason
        else:
            models.append(narrowed_model(tool.model, choices))
    builtins = tuple(model for name, model in agent.intents.by_name.items() if agent.tool(name) is None)
    return Offer(intents=_intent_set(tuple(models) + builtins), withheld=withheld, answered=answered)


def _assess(
    tool: Tool, events: Sequence[Event], have_results: set[str], answered: Mapping[str, str]
) -> tuple[str | None, tuple[tuple[str, tuple[str, ...]], ...]]:
    missing = [name for name in tool.requires if name not in have_results]
    if missing:
        return f"it needs a {' and a '.join(missing)} result in the thread first", ()
    choices = []
    for field_name, grounded in tool.grounded.items():
        values = grounded_values(tool, field_name, events)
        if not values:
            return f"no {grounded.source} result gives a {field_name} to use yet", ()
        choices.append((field_name, values))
    fields = set(tool.model.model_fields) - {"intent"}
    earlier = answered.get(call_key(tool.name, {}))
    if not fields and earlier is not None:
        return f"it was already answered ({earlier}) and that result is still current: read it above", ()
    return None, tuple(choices)


def current_lookups(agent: Agent, events: Sequence[Event]) -> dict[str, str]:
    """Loop-guard key -> call id, for every read-only call whose latest result is still current."""
    arguments: dict[str, Mapping[str, Any]] = {}
    current: dict[str, tuple[Tool, str]] = {}
    for event in events:
        match event:
            case ToolCall(data=decided):
                arguments[decided.call_id] = decided.arguments
            case ToolResult(data=result):
                tool = agent.tool(result.intent)
                if tool is None:
                    continue
                if tool.read_only and tool.freshness != "off" and result.call_id in arguments:
                    current[call_key(tool.name, arguments[result.call_id])] = (tool, result.call_id)
                elif not tool.read_only:
                    # Something changed: the lookups that could see the change are no longer current.
                    current = {
                        key: kept for key, kept in current.items() if kept[0].freshness == "until_request"
                    }
            case UserMessage():
                current = {}
    return {key: call_id for key, (_tool, call_id) in current.items()}


def call_key(intent: str, arguments: Mapping[str, Any]) -> str:
    """Identical calls have identical keys: the intent and its arguments in canonical JSON."""
    return f"{intent}({json.dumps(arguments, sort_keys=True, separators=(',', ':'))})"


def grounded_values(tool: Tool, field_name: str, events: Sequence[Event]) -> tuple[str, ...]:
    """The values the field may take: found in the source's results, latest result first, each
    once, and only those the field's own type accepts (a value that could never pass validation,
    e.g. a tag with a slash, is not offered either)."""
    grounded = tool.grounded[field_name]
    check = _field_adapter(tool.model, field_name)
    found: dict[str, None] = {}
    for event in reversed(events):
        if isinstance(event, ToolResult) and event.data.intent == grounded.source:
            for value in _walk(event.data.result, grounded.path.split(".")):
                if isinstance(value, str) and value not in found:
                    try:
                        check.validate_python(value)
                    except ValidationError:
                        continue
                    found[value] = None
    return tuple(found)


def _walk(value: JsonValue, path: Sequence[str]) -> Iterator[JsonValue]:
    if isinstance(value, list):
        for item in value:
            yield from _walk(item, path)
    elif not path:
        yield value
    elif isinstance(value, dict) and path[0] in value:
        yield from _walk(value[path[0]], path[1:])


@lru_cache(maxsize=256)
def _field_adapter(model: type[Intent], field_name: str) -> TypeAdapter[Any]:
    info = model.model_fields[field_name]
    return TypeAdapter(info.rebuild_annotation())


@lru_cache(maxsize=512)
def narrowed_model(model: type[Intent], choices: tuple[tuple[str, tuple[str, ...]], ...]) -> type[Intent]:
    """The intent's model with each grounded field turned into an enum of its allowed values.

    Cached: a thread's consecutive decisions mostly offer the same values, and building a model
    costs a few milliseconds."""
    if not choices:
        return model
    overrides: dict[str, Any] = {}
    for field_name, values in choices:
        info = model.model_fields[field_name]
        allowed: Any = Literal[values]
        overrides[field_name] = (allowed, Field(description=info.description))
    narrowed = create_model(
        model.__name__, __base__=model, __module__=model.__module__, __doc__=model.__doc__, **overrides
    )
    return cast(type[Intent], narrowed)


@lru_cache(maxsize=256)
def _intent_set(models: tuple[type[Intent], ...]) -> IntentSet:
    return IntentSet.of(models)


def clean_strings(value: Any, where: str = "") -> Any:
    """Every string in the answer with CR/CRLF made LF; any other control character refused."""
    if isinstance(value, str):
        cleaned = value.replace("\r\n", "\n").replace("\r", "\n")
        bad = _FORBIDDEN_CONTROL.search(cleaned)
        if bad is not None:
            raise InvalidAnswer(
                f"invalid model output: {where or 'a string'} contains the control character "
                f"U+{ord(bad.group()):04X}"
            )
        return cleaned
    if isinstance(value, dict):
        return {key: clean_strings(item, f"{where}.{key}".lstrip(".")) for key, item in value.items()}
    if isinstance(value, list):
        return [clean_strings(item, f"{where}.{index}".lstrip(".")) for index, item in enumerate(value)]
    return value


def validation_summary(error: ValidationError) -> str:
    parts = []
    for detail in error.errors()[:3]:
        where = ".".join(str(part) for part in detail["loc"]) or "output"
        message = detail["msg"]
        expected = (detail.get("ctx") or {}).get("expected")
        if (
            detail["type"] == "literal_error"
            and isinstance(expected, str)
            and expected.count(",") >= _MAX_VALUES_SHOWN
        ):
            message = "Input is not one of the values offered"
        parts.append(f"{where}: {message}")
    return "; ".join(parts)
