"""EventBridge as a trigger (factor 11): which detail-types launch which agent, and callbacks.

An event whose detail carries a ``callback_id`` answers a pending wait (an async tool's result or
a person's answer relayed by another system); otherwise its detail-type picks an agent from the
configured launch rules and its detail becomes the first message. Anything else is not ours.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class LaunchRuleError(ValueError):
    """EVENTBRIDGE_LAUNCH_RULES is not a list of "detail-type=agent" pairs."""


def parse_launch_rules(text: str) -> dict[str, str]:
    """ "Deployment Requested=deploybot, Invoice Overdue=payments" -> {detail-type: agent}."""
    rules: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        detail_type, separator, agent = item.rpartition("=")
        if not separator or not detail_type.strip() or not agent.strip():
            raise LaunchRuleError(f"launch rule {item!r} is not 'detail-type=agent'")
        rules[detail_type.strip()] = agent.strip()
    return rules


class CallbackDetail(BaseModel):
    """The detail of an event that answers a wait; every other field is the answer itself."""

    model_config = ConfigDict(extra="allow", frozen=True)
    callback_id: str = Field(min_length=1, max_length=160)

    @property
    def payload(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def launch_message(detail: dict[str, Any]) -> str:
    """The detail as the agent's first message: compact, stable JSON the context renderer escapes."""
    return json.dumps(detail, sort_keys=True, separators=(",", ":"))


def describe_invalid(error: ValidationError, shown: int = 3) -> str:
    """What is wrong with an event, field by field ("missing 'detail-type'; 'time': Input should be a
    valid datetime"), for the log line that says why it was ignored."""
    problems = []
    for problem in error.errors()[:shown]:
        where = ".".join(str(part) for part in problem["loc"]) or "the event"
        problems.append(
            f"missing {where!r}" if problem["type"] == "missing" else f"{where!r}: {problem['msg']}"
        )
    more = error.error_count() - shown
    return "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")
