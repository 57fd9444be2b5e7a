"""Eval cases as files: ``evals/<agent>/<case>.yaml`` (or ``.json``) and ``evals/<agent>/config.yaml``.

A case is a thread fixture (the events so far) and what the model's next step must look like::

    description: the first step on a deploy request is to look at the tags
    thread:
      - user_message: Can you deploy the backend?
    expect:
      intent: list_git_tags          # or a list: any of these intents passes
      fields:                        # dotted paths into the intent's JSON
        environment: {one_of: [staging, production]}
        tag: v1.4.2                  # a bare value means {equals: ...}
      judge: The question names both options.   # optional LLM-as-judge rubric

``expect`` may also be a list of such alternatives; the answer passes if it meets any of them.

Each thread item is either a real event envelope (``{type, id, at, data}``; ``id`` and ``at`` may be
left out) or the shorthand ``{<event type>: <data>}``. In the shorthand a value that is not a
mapping stands for the event's main field (``user_message: text``, ``tool_call: intent``,
``tool_result: result``, ``approval: approved``, ``done: message`` ...), and ``call_id``,
``intent`` and ``arguments`` default to those of the latest tool call, so a fixture reads like the
conversation it describes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..core import control, state
from ..core.agent import Agent
from ..core.errors import TwelvefactorError
from ..core.events import Event, JsonValue, Thread, dump_event
from ..core.reducer import Move, next_move

CASE_SUFFIXES = (".yaml", ".yml", ".json")
CONFIG_STEM = "config"
# Fixture timestamps are fixed so that a case renders the same prompt on every run.
FIXTURE_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)

# The field a bare (non-mapping) shorthand value stands for, per event type.
_MAIN_FIELD = {
    "user_message": "text",
    "tool_call": "intent",
    "tool_result": "result",
    "approval": "approved",
    "human_request": "question",
    "human_response": "text",
    "error": "message",
    "escalation": "message",
    "done": "message",
    "cancelled": "reason",
}
_EVENT_TYPES = (*_MAIN_FIELD, "approval_requested")
# Which of the latest tool call's fields an event inherits when the fixture leaves them out.
_INHERITS = {
    "tool_result": ("call_id", "intent"),
    "approval_requested": ("call_id", "intent", "arguments"),
    "approval": ("call_id",),
}


class CaseError(TwelvefactorError):
    """A case file (or a suite's config) that cannot be used; the message names the file."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Range(_Model):
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounded(self) -> Range:
        if self.min is None and self.max is None:
            raise ValueError("a range needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"range min {self.min} is above max {self.max}")
        return self


class FieldCheck(_Model):
    """Checks on one field of the model's answer; every check given must hold."""

    equals: JsonValue = None
    one_of: list[JsonValue] | None = None
    regex: str | None = None
    range: Range | None = None
    mentions: list[str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare_value_means_equals(cls, value: Any) -> Any:
        return value if isinstance(value, Mapping) else {"equals": value}

    @field_validator("mentions", mode="before")
    @classmethod
    def _one_mention(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("regex")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"bad regex {pattern!r}: {error}") from None
        return pattern

    @model_validator(mode="after")
    def _not_empty(self) -> FieldCheck:
        if not self.model_fields_set:
            raise ValueError("a field check needs equals, one_of, regex, range or mentions")
        return self

    @property
    def has_equals(self) -> bool:
        # `equals: null` is a real expectation, so presence is read from the fields set.
        return "equals" in self.model_fields_set


class Judge(_Model):
    """A rubric for free text, graded yes/no by a model (the same endpoint as the one evaluated)."""

    rubric: str = Field(min_length=1)
    # Show the judge only this field of the answer; None shows the whole answer.
    field: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare_rubric(cls, value: Any) -> Any:
        return {"rubric": value} if isinstance(value, str) else value


class Expectation(_Model):
    intent: tuple[str, ...] = Field(min_length=1, description="Any of these intents passes")
    fields: dict[str, FieldCheck] = Field(default_factory=dict)
    judge: Judge | None = None

    @field_validator("intent", mode="before")
    @classmethod
    def _one_intent(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class Case(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,100}$")
    description: str = ""
    thread: tuple[Event, ...] = Field(min_length=1)
    # Alternatives: the answer passes if it meets any one of them (e.g. retry the call, or ask).
    expect: tuple[Expectation, ...] = Field(min_length=1)

    @field_validator("thread", mode="before")
    @classmethod
    def _expand(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple):
            raise ValueError("thread must be a list of events")
        return expand_events(value)

    @field_validator("expect", mode="before")
    @classmethod
    def _one_expectation(cls, value: Any) -> Any:
        return [value] if isinstance(value, Mapping) else value

    @property
    def intents(self) -> tuple[str, ...]:
        return tuple(name for expect in self.expect for name in expect.intent)


class SuiteConfig(_Model):
    """``evals/<agent>/config.yaml``: the bar a prompt change must clear."""

    threshold: float = Field(default=1.0, ge=0, le=1, description="Lowest acceptable overall pass rate")
    repeat: int = Field(default=1, ge=1, le=100, description="Runs per case unless --repeat says otherwise")
    # A bar per model (by LLM_MODEL's name), so a small local model can gate at its own level while
    # a hosted one keeps the general bar.
    thresholds: dict[str, float] = Field(default_factory=dict, description="Per-model thresholds")

    @field_validator("thresholds")
    @classmethod
    def _rates(cls, value: dict[str, float]) -> dict[str, float]:
        bad = sorted(name for name, rate in value.items() if not 0 <= rate <= 1)
        if bad:
            raise ValueError(f"thresholds must be between 0 and 1: {', '.join(bad)}")
        return value

    def threshold_for(self, model: str) -> float:
        return self.thresholds.get(model, self.threshold)


# --- the shorthand ----------------------------------------------------------------------------


def expand_events(items: Sequence[Any]) -> list[dict[str, Any]]:
    """Turn fixture items (envelopes or shorthand) into full event envelopes."""
    events: list[dict[str, Any]] = []
    latest_call: dict[str, Any] | None = None
    for index, item in enumerate(items):
        event = _expand_one(index, item, latest_call, events[-1] if events else None)
        if event["type"] == "tool_call" and isinstance(event.get("data"), Mapping):
            latest_call = dict(event["data"])
        events.append(event)
    return events


def _expand_one(
    index: int, item: Any, latest_call: dict[str, Any] | None, previous: dict[str, Any] | None
) -> dict[str, Any]:
    if isinstance(item, BaseModel):
        item = dump_event(item)  # type: ignore[arg-type]  # an event built in code, e.g. by replay
    if not isinstance(item, Mapping):
        raise ValueError(f"thread item {index} must be a mapping, got {item!r}")
    if "type" in item:
        envelope = dict(item)
    elif len(item) == 1 and next(iter(item)) in _EVENT_TYPES:
        kind, value = next(iter(item.items()))
        envelope = {"type": kind, "data": _shorthand_data(kind, value, index, latest_call, previous)}
    else:
        raise ValueError(
            f"thread item {index} is neither an event envelope nor {{<event type>: <data>}}: {dict(item)!r}"
        )
    envelope.setdefault("id", f"evt-{index:03d}")
    envelope.setdefault("at", (FIXTURE_EPOCH + timedelta(seconds=index)).isoformat())
    return envelope


def _shorthand_data(
    kind: str, value: Any, index: int, latest_call: dict[str, Any] | None, previous: dict[str, Any] | None
) -> dict[str, Any]:
    if value is None:
        data: dict[str, Any] = {}
    elif isinstance(value, Mapping):
        data = dict(value)
    else:
        data = {_MAIN_FIELD[kind]: value}
    if kind == "tool_call":
        data.setdefault("call_id", f"call-{index}")  # the reducer's own numbering
        data.setdefault("arguments", {})
    inherited = _INHERITS.get(kind, ())
    if kind == "error":
        data.setdefault("source", _error_source(previous))
        inherited = ("call_id",) if data["source"] == "tool" else ()
    for name in inherited:
        if name not in data:
            if latest_call is None or name not in latest_call:
                raise ValueError(f"thread item {index} ({kind}) needs {name}: no tool call before it has one")
            data[name] = latest_call[name]
    return data


def _error_source(previous: dict[str, Any] | None) -> str:
    """An error right after a call (or its approval) is that tool failing; otherwise the model's."""
    return "tool" if previous is not None and previous["type"] in ("tool_call", "approval") else "llm"


# --- loading ----------------------------------------------------------------------------------


def load_case(path: Path) -> Case:
    raw = _read_document(path)
    if not isinstance(raw, Mapping):
        raise CaseError(f"{path}: a case file holds a mapping with thread and expect")
    try:
        return Case.model_validate({"name": path.stem, **raw})
    except ValidationError as error:
        raise CaseError(f"{path}: {_summary(error)}") from None


def load_cases(directory: Path, names: Sequence[str] = ()) -> list[Case]:
    """Every case file in the directory, in file name order; `names` keeps only those cases."""
    if not directory.is_dir():
        raise CaseError(f"{directory}: no such eval directory")
    paths = sorted(
        path for path in directory.iterdir() if path.suffix in CASE_SUFFIXES and path.stem != CONFIG_STEM
    )
    cases = [load_case(path) for path in paths]
    if names:
        unknown = sorted(set(names) - {case.name for case in cases})
        if unknown:
            raise CaseError(f"{directory}: no case named {', '.join(unknown)}")
        cases = [case for case in cases if case.name in names]
    if not cases:
        raise CaseError(f"{directory}: no case files (*.yaml, *.yml, *.json)")
    return cases


def load_config(directory: Path) -> SuiteConfig:
    for suffix in CASE_SUFFIXES:
        path = directory / f"{CONFIG_STEM}{suffix}"
        if path.is_file():
            raw = _read_document(path)
            try:
                return SuiteConfig.model_validate(raw or {})
            except ValidationError as error:
                raise CaseError(f"{path}: {_summary(error)}") from None
    return SuiteConfig()


def _read_document(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise CaseError(f"{path}: not valid JSON: {error}") from None
    try:
        import yaml  # noqa: PLC0415 - only YAML case files need it; JSON cases work without the extra
    except ImportError:
        raise CaseError(f"{path}: YAML case files need PyYAML: pip install 'twelvefactor[eval]'") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise CaseError(f"{path}: not valid YAML: {error}") from None


def _summary(error: ValidationError) -> str:
    parts = []
    for detail in error.errors()[:5]:
        where = ".".join(str(part) for part in detail["loc"]) or "case"
        parts.append(f"{where}: {detail['msg']}")
    return "; ".join(parts)


# --- fitness for an agent ---------------------------------------------------------------------


def why_model_not_asked(agent: Agent, events: Sequence[Event]) -> str | None:
    """Why the reducer would not ask the model at this point (None when it would).

    Mirrors the order of checks in `twelvefactor.core.reducer.step`, so a case (or a replayed
    decision point) is only ever a place where the real loop calls the model.
    """
    thread = Thread(id="eval", agent=agent.name, events=tuple(events))
    match next_move(agent, thread):
        case Move.ASK_MODEL:
            return None
        case Move.COMPLETE:
            return "the last result ends the turn with a done message code writes, so no model is asked"
        case Move.RUN_TOOL | Move.NONE:
            return f"the thread is {state.status(events).value}, so the reducer would not ask the model"
        case Move.PREFETCH:
            return (
                f"{agent.name} prefetches before its first decision: put the prefetched events in the thread"
            )
        case Move.ESCALATE_ERRORS:
            return "the error budget is spent, so the reducer would escalate"
        case Move.ESCALATE_STEPS:
            return "the step budget is spent, so the reducer would escalate"
    return None


def problems(agent: Agent, case: Case) -> list[str]:
    """What makes a well-formed case unusable for this agent: typos in intent or field names, or a
    thread at which the model is never asked."""
    found = []
    for expect in case.expect:
        unknown = [name for name in expect.intent if name not in agent.intents.by_name]
        if unknown:
            known = ", ".join(agent.intents.names)
            found.append(f"unknown intent {', '.join(unknown)} (the agent has {known})")
        models = [agent.intents.by_name[name] for name in expect.intent if name in agent.intents.by_name]
        judged = expect.judge.field if expect.judge else None
        for path in [*expect.fields, *([judged] if judged else [])]:
            top = path.split(".")[0]
            if models and not any(top in model.model_fields for model in models):
                found.append(f"no intent in {' or '.join(expect.intent)} has a field {top!r}")
    reason = why_model_not_asked(agent, case.thread)
    if reason is not None:
        found.append(reason)
        return found
    # A case may only expect what the reducer would offer there: anything else could never pass.
    offered = control.offer(agent, case.thread)
    for expect in case.expect:
        for name in expect.intent:
            if name in offered.withheld:
                found.append(f"expects {name}, which code does not offer here: {offered.withheld[name]}")
    return found


def validate_for(agent: Agent, cases: Sequence[Case], directory: Path) -> None:
    errors = [f"{directory / case.name}: {problem}" for case in cases for problem in problems(agent, case)]
    if errors:
        raise CaseError("\n".join(errors))
