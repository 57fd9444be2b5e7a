"""Replay: a real thread becomes eval cases, one per decision the model made in it.

At each point where the reducer asked the model (see `why_model_not_asked`), the events before it
are the fixture and the event the model produced is the expectation: its intent, and the
arguments that identify what it acted on. Production surprises become regression tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.agent import Agent
from ..core.events import Done, Event, HumanRequest, Thread, ToolCall, dump_event
from ..core.tools import DoneForNow, RequestHumanInput, intent_name
from .cases import Case, Expectation, FieldCheck, why_model_not_asked


@dataclass(frozen=True)
class Replay:
    cases: tuple[Case, ...]
    # Decision points that yield no case (e.g. the model's answer was invalid), with the reason.
    skipped: tuple[str, ...]


def cases_from_thread(agent: Agent, thread: Thread) -> Replay:
    cases: list[Case] = []
    skipped: list[str] = []
    for index, event in enumerate(thread.events):
        prefix = thread.events[:index]
        if not prefix or why_model_not_asked(agent, prefix) is not None:
            continue
        expect = _expectation(event)
        if expect is None:
            skipped.append(f"event {index} ({event.type}): no intent to expect from it")
            continue
        name = _slug(f"{thread.id}-{index:03d}-{expect.intent[0]}")
        description = f"replayed from thread {thread.id}: the model's decision at event {index}"
        cases.append(Case(name=name, description=description, thread=prefix, expect=(expect,)))
    return Replay(cases=tuple(cases), skipped=tuple(skipped))


def _expectation(event: Event) -> Expectation | None:
    match event:
        case ToolCall(data=call):
            fields = {
                name: FieldCheck(equals=value) for name, value in call.arguments.items() if _pinned(value)
            }
            return Expectation(intent=(call.intent,), fields=fields)
        case HumanRequest():
            return Expectation(intent=(intent_name(RequestHumanInput),))
        case Done():
            return Expectation(intent=(intent_name(DoneForNow),))
    return None


def _pinned(value: Any) -> bool:
    """Identifiers (a tag, an environment, a number) are pinned; prose is worded differently on
    every run, so it is left to a judge rubric that a person can add to the written case."""
    return not (isinstance(value, str) and len(value.split()) > 1)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:100]


def case_document(case: Case) -> dict[str, Any]:
    """A case as a file holds it: the thread in full event envelopes, the checks spelled out."""
    alternatives = [_expectation_document(expect) for expect in case.expect]
    return {
        "description": case.description,
        "thread": [dump_event(event) for event in case.thread],
        "expect": alternatives[0] if len(alternatives) == 1 else alternatives,
    }


def _expectation_document(expect: Expectation) -> dict[str, Any]:
    document: dict[str, Any] = {
        "intent": expect.intent[0] if len(expect.intent) == 1 else list(expect.intent)
    }
    if expect.fields:
        document["fields"] = {
            path: check.model_dump(mode="json", exclude_unset=True) for path, check in expect.fields.items()
        }
    if expect.judge is not None:
        document["judge"] = expect.judge.model_dump(mode="json", exclude_none=True)
    return document


def write_cases(cases: tuple[Case, ...], directory: Path) -> list[Path]:
    import yaml  # noqa: PLC0415 - the eval extra; only writing replayed cases needs it

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for case in cases:
        path = directory / f"{case.name}.yaml"
        text = yaml.safe_dump(case_document(case), sort_keys=False, allow_unicode=True, width=100)
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths
