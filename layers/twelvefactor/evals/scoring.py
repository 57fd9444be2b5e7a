"""Scoring one answer of the model: the intent, field checks, and an optional LLM-as-judge rubric.

Every check returns the reasons it failed (empty when it passed), so a report can say *why* a
case failed, not only that it did.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, ValidationError

from ..core.context import escape
from ..core.errors import LlmError
from ..core.events import TokenUsage
from ..core.ports import ChatMessage, LanguageModel
from ..core.tools import Intent, IntentSet
from .cases import Expectation, FieldCheck, Judge

_MISSING = object()


def lookup(data: Any, path: str) -> Any:
    """The value at a dotted path (``a.b.0``), or `_MISSING`."""
    value = data
    for part in path.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def check_field(path: str, check: FieldCheck, value: Any) -> list[str]:
    if value is _MISSING:
        return [f"{path}: missing"]
    failures = []
    if check.has_equals and value != check.equals:
        failures.append(f"{path}: expected {check.equals!r}, got {value!r}")
    if check.one_of is not None and value not in check.one_of:
        failures.append(f"{path}: expected one of {check.one_of!r}, got {value!r}")
    if check.regex is not None and not (isinstance(value, str) and re.search(check.regex, value)):
        failures.append(f"{path}: {value!r} does not match /{check.regex}/")
    if check.range is not None:
        failures += _check_range(path, check, value)
    if check.mentions is not None:
        text = (value if isinstance(value, str) else json.dumps(value)).casefold()
        missing = [term for term in check.mentions if term.casefold() not in text]
        if missing:
            failures.append(f"{path}: does not mention {', '.join(repr(term) for term in missing)}")
    return failures


def _check_range(path: str, check: FieldCheck, value: Any) -> list[str]:
    assert check.range is not None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return [f"{path}: expected a number, got {value!r}"]
    low, high = check.range.min, check.range.max
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}]"
        return [f"{path}: {value} is outside {bounds}"]
    return []


def check_answer(expect: Expectation, answer: Intent) -> list[str]:
    """The deterministic checks: the intent, then each field of the validated answer."""
    if answer.intent not in expect.intent:
        wanted = " or ".join(expect.intent)
        return [f"intent: expected {wanted}, got {answer.intent}"]
    data = answer.model_dump(mode="json")
    failures: list[str] = []
    for path, check in expect.fields.items():
        failures += check_field(path, check, lookup(data, path))
    return failures


def meeting(expectations: Sequence[Expectation], answer: Intent) -> tuple[list[Expectation], list[str]]:
    """The alternatives the answer meets (in case order), and why it misses when it meets none.

    Only the alternatives that expected the answer's intent explain a miss; when none did, the
    one failure is the intent itself.
    """
    met: list[Expectation] = []
    failures: list[str] = []
    for expect in expectations:
        missed = check_answer(expect, answer)
        if not missed:
            met.append(expect)
        elif answer.intent in expect.intent:
            failures += missed
    if met or failures:
        return met, failures if not met else []
    wanted = " or ".join(dict.fromkeys(name for expect in expectations for name in expect.intent))
    return [], [f"intent: expected {wanted}, got {answer.intent}"]


# --- LLM as judge ---------------------------------------------------------------------------


class Verdict(Intent):
    """The judge's answer: does the agent's step satisfy the rubric?"""

    intent: Literal["verdict"] = "verdict"
    verdict: Literal["yes", "no"]
    reason: str = Field(default="", description="One sentence: why")


VERDICT = IntentSet.of((Verdict,))

# No answer format here: the verdict's shape travels with the request in whatever output mode the
# adapter uses (a strict {"step": ...} wrapper, a grammar, or a function call), as for the agent.
JUDGE_SYSTEM = """\
You grade one step taken by an AI agent. You see the conversation so far, the agent's answer and \
a rubric. Give the verdict "yes" if the answer satisfies the rubric and "no" if it does not, with \
a one-sentence reason."""


@dataclass(frozen=True)
class JudgeOutcome:
    failures: tuple[str, ...]
    usage: TokenUsage | None = None
    # The judge could not be asked: the attempt's verdict is missing, not negative.
    unasked: bool = False


def judge_messages(judge: Judge, answer: Intent, context: str) -> list[ChatMessage]:
    data = answer.model_dump(mode="json")
    shown = data if judge.field is None else lookup(data, judge.field)
    shown_text = shown if isinstance(shown, str) else json.dumps(shown, indent=2)
    user = "\n\n".join(
        [
            f"<conversation>\n{context}\n</conversation>",
            f"<answer>\n{escape(shown_text)}\n</answer>",
            f"<rubric>\n{escape(judge.rubric)}\n</rubric>",
        ]
    )
    return [
        {"role": "system", "content": JUDGE_SYSTEM},
        {"role": "user", "content": user},
    ]


def ask_judge(llm: LanguageModel, messages: Sequence[ChatMessage]) -> JudgeOutcome:
    """A "no", an unreachable judge and an unreadable verdict all fail the attempt, with the reason."""
    try:
        reply = llm.decide(messages, VERDICT)
    except LlmError as error:
        return JudgeOutcome((f"judge: could not ask the model ({error})",), unasked=True)
    try:
        verdict = VERDICT.validate_json(reply.content)
    except ValidationError:
        return JudgeOutcome((f"judge: unreadable verdict {reply.content[:200]!r}",), reply.usage)
    assert isinstance(verdict, Verdict)
    if verdict.verdict == "yes":
        return JudgeOutcome((), reply.usage)
    return JudgeOutcome((f"judge: no ({verdict.reason})" if verdict.reason else "judge: no",), reply.usage)
