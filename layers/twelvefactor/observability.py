"""What the runtime tells CloudWatch, derived from a thread's events (Powertools Metrics, EMF).

Every figure is read off the events a reduction added (factor 5: the events are the state), so a
metric can never disagree with the thread it describes. Each one goes out twice:

- without dimensions beyond Powertools' ``service``: the series the alarms in template.yaml watch
  (an alarm names exact dimensions, so it needs a series that does not depend on agent names);
- with ``Agent`` and, where it matters, ``Kind``/``Reason``/``Tool``: the breakdowns the dashboard
  shows. These use `EphemeralMetrics`, one EMF record per dimension set.

A reduction that crashed after storing a move and is retried counts only what the retry adds, but a
retried reduction that stored nothing counts again: the figures are at least once, like Lambda.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from aws_lambda_powertools.metrics import EphemeralMetrics, Metrics, MetricUnit

from .core import state
from .core.events import (
    Approval,
    ApprovalRequested,
    Done,
    Error,
    Escalation,
    Event,
    HumanRequest,
    HumanResponse,
    ToolCall,
    ToolDispatched,
    ToolResult,
    UserMessage,
)
from .core.ports import ChatMessage, LanguageModel, ModelReply
from .core.tools import IntentSet

NAMESPACE = "Twelvefactor"

Dimensions = tuple[tuple[str, str], ...]
WaitKind = Literal["approval", "question", "escalation", "callback"]


@dataclass(frozen=True)
class Point:
    """One metric value; ``dimensions`` are the breakdown beyond the ``service`` aggregate."""

    name: str
    value: float
    unit: MetricUnit = MetricUnit.Count
    dimensions: Dimensions = ()
    # False where the handler already sends the service-wide series under this name.
    aggregate: bool = True


def reduction_points(agent: str, events: Sequence[Event], new: Sequence[Event]) -> list[Point]:
    """The metrics of one reduction: ``events`` is the thread after it, ``new`` what it added."""
    before = events[: len(events) - len(new)]
    by_agent = (("Agent", agent),)
    points: list[Point] = []
    if new and before and all(isinstance(event, UserMessage) for event in before):
        points.append(Point("ThreadsStarted", 1, dimensions=by_agent))
    intents = {event.data.call_id: event.data.intent for event in events if isinstance(event, ToolCall)}
    for event in new:
        points += _event_points(event, by_agent, intents)
    points.append(Point("Tokens", state.total_tokens(new), dimensions=by_agent, aggregate=False))
    opened = _wait_opened(new[-1]) if new else None
    if opened is not None:
        points.append(Point("WaitsOpened", 1, dimensions=(*by_agent, ("Kind", opened))))
    answered = _wait_answered(before)
    if answered is not None:
        kind, seconds = answered
        points.append(Point("WaitsAnswered", 1, dimensions=(*by_agent, ("Kind", kind))))
        points.append(Point("WaitAge", seconds, MetricUnit.Seconds, (*by_agent, ("Kind", kind))))
    return points


def _event_points(event: Event, by_agent: Dimensions, intents: dict[str, str]) -> list[Point]:
    match event:
        case ToolCall(data=call):
            points = [Point("ToolCalls", 1, dimensions=(*by_agent, ("Tool", call.intent)))]
            if call.origin == "model":
                points.append(Point("ModelDecisions", 1, dimensions=(*by_agent, ("Kind", "tool_call"))))
            return points
        case HumanRequest():
            return [Point("ModelDecisions", 1, dimensions=(*by_agent, ("Kind", "question")))]
        case Done():
            return [
                Point("ModelDecisions", 1, dimensions=(*by_agent, ("Kind", "done"))),
                Point("ThreadsFinished", 1, dimensions=by_agent),
            ]
        case Error(data=error):
            points = [Point("Errors", 1, dimensions=(*by_agent, ("Kind", error.source)), aggregate=False)]
            if error.source == "llm":
                # An answer that was no valid decision is still a decision the model was asked for.
                points.append(Point("ModelDecisions", 1, dimensions=(*by_agent, ("Kind", "error"))))
                points.append(Point("LlmErrors", 1, dimensions=by_agent))
            if error.source == "tool":
                tool = intents.get(error.call_id or "", "unknown")
                points.append(Point("ToolErrors", 1, dimensions=(*by_agent, ("Tool", tool))))
            return points
        case Escalation(data=escalation):
            reason = (*by_agent, ("Reason", escalation.reason))
            return [Point("ThreadsEscalated", 1, dimensions=reason, aggregate=False)]
    return []


def _wait_opened(last: Event) -> WaitKind | None:
    match last:
        case ApprovalRequested():
            return "approval"
        case HumanRequest():
            return "question"
        case Escalation():
            return "escalation"
        case ToolDispatched():
            return "callback"
    return None


def _wait_answered(before: Sequence[Event]) -> tuple[WaitKind, float] | None:
    """The wait the reduction was resumed from: the thread ended with a wait and then its answer."""
    if len(before) < 2:
        return None
    wait, answer = before[-2], before[-1]
    kind = _wait_opened(wait)
    answers = isinstance(answer, Approval | HumanResponse | ToolResult | UserMessage)
    if kind is None or not answers:
        return None
    return kind, max(0.0, (answer.at - wait.at).total_seconds())


def cancellation_points(agent: str) -> list[Point]:
    return [Point("ThreadsCancelled", 1, dimensions=(("Agent", agent),))]


def emit(metrics: Metrics, points: Iterable[Point]) -> None:
    """Each point into the handler's metric set (flushed by its ``log_metrics``), and each breakdown
    as its own EMF record at once. Counts are summed per name; ages and latencies are distributions,
    so every value goes in."""
    points = list(points)
    totals: dict[str, float] = {}
    for point in points:
        if not point.aggregate:
            continue
        if point.unit is MetricUnit.Count:
            totals[point.name] = totals.get(point.name, 0) + point.value
        else:
            metrics.add_metric(name=point.name, unit=point.unit, value=point.value)
    for name, value in totals.items():
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    breakdowns: dict[Dimensions, list[Point]] = {}
    for point in points:
        if point.dimensions:
            breakdowns.setdefault(point.dimensions, []).append(point)
    for dimensions, grouped in breakdowns.items():
        record = EphemeralMetrics(namespace=NAMESPACE)
        for dimension, label in dimensions:
            record.add_dimension(name=dimension, value=label)
        for point in grouped:
            record.add_metric(name=point.name, unit=point.unit, value=point.value)
        record.flush_metrics()


class TimedModel:
    """The language model port, timed: each call's latency, answered or not, kept for the handler
    to send as ``LlmLatency`` (no metric is written here, so nothing piles up outside a handler)."""

    def __init__(self, model: LanguageModel) -> None:
        self._model = model
        self.latencies_ms: list[float] = []

    def decide(self, messages: Sequence[ChatMessage], intents: IntentSet) -> ModelReply:
        started = time.perf_counter()
        try:
            return self._model.decide(messages, intents)
        finally:
            self.latencies_ms.append((time.perf_counter() - started) * 1000)


def latency_points(latencies_ms: Sequence[float]) -> list[Point]:
    return [Point("LlmLatency", value, MetricUnit.Milliseconds) for value in latencies_ms]
