"""Run cases against a model: render with the agent's real prompt, ask, validate, score, repeat.

The results are pydantic models so that ``--json`` writes them and ``--compare`` reads them back
with the same definitions; derived numbers (pass rates, medians) are computed fields, recomputed
on load rather than trusted from the file.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, computed_field

from ..core import control
from ..core.agent import Agent
from ..core.errors import LlmError
from ..core.events import Thread
from ..core.ports import ChatMessage, LanguageModel, PromptRenderer
from .cases import Case
from .scoring import ask_judge, judge_messages, meeting

# A thread id is never rendered into the prompt; a fixed one keeps cases independent of it.
EVAL_THREAD_ID = "eval"
MAX_OUTPUT_CHARS = 2_000


class _Result(BaseModel):
    # Ignore extra keys on load: computed fields are written out but recomputed when read back.
    model_config = ConfigDict(extra="ignore", frozen=True)


class ModelNotAsked(LlmError):
    """A suite's first attempt could not ask the model (unreachable, key refused, model unknown): the
    run stops there, since every other attempt would wait out the same failure and score nothing."""


class Attempt(_Result):
    passed: bool
    # The model could not be asked: a failure of the run, which says nothing about the prompt.
    unasked: bool = False
    intent: str | None = None
    failures: tuple[str, ...] = ()
    latency_s: float = Field(ge=0)
    tokens: int | None = None
    judge_tokens: int | None = None
    output: str = ""


class CaseResult(_Result):
    case: str
    attempts: tuple[Attempt, ...]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def passes(self) -> int:
        return sum(attempt.passed for attempt in self.attempts)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def runs(self) -> int:
        return len(self.attempts)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def pass_rate(self) -> float:
        return self.passes / self.runs if self.attempts else 0.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def median_latency_s(self) -> float | None:
        return statistics.median(a.latency_s for a in self.attempts) if self.attempts else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def tokens_per_run(self) -> int | None:
        """Mean tokens of one decision (prompt + completion), when the endpoint reports usage."""
        counted = [attempt.tokens for attempt in self.attempts if attempt.tokens is not None]
        return round(statistics.mean(counted)) if counted else None

    def first_failure(self) -> str | None:
        return next((attempt.failures[0] for attempt in self.attempts if attempt.failures), None)


class SuiteResult(_Result):
    agent: str
    threshold: float
    repeat: int
    cases: tuple[CaseResult, ...]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def pass_rate(self) -> float:
        runs = sum(case.runs for case in self.cases)
        return sum(case.passes for case in self.cases) / runs if runs else 0.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def passed(self) -> bool:
        return self.pass_rate >= self.threshold


class EvalRun(_Result):
    """One ``twelvefactor eval`` invocation: what was asked, of which model, and how it went."""

    version: int = 1
    started_at: datetime
    model: str
    output_mode: str
    suites: tuple[SuiteResult, ...]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def passed(self) -> bool:
        return all(suite.passed for suite in self.suites)

    def unasked(self) -> list[Attempt]:
        """Attempts that could not ask the model: while any exist, the pass rates are incomplete."""
        return [
            attempt
            for suite in self.suites
            for case in suite.cases
            for attempt in case.attempts
            if attempt.unasked
        ]


class EvalRunner:
    """Asks `llm` for the next step of each case; `judge` grades free text (defaults to `llm`)."""

    def __init__(
        self,
        agent: Agent,
        prompts: PromptRenderer,
        llm: LanguageModel,
        *,
        judge: LanguageModel | None = None,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.agent = agent
        self.prompts = prompts
        self.llm = llm
        self.judge = judge or llm
        self.timer = timer
        self._answered = False

    def run(
        self,
        cases: Sequence[Case],
        *,
        repeat: int,
        threshold: float,
        on_case: Callable[[CaseResult], None] | None = None,
    ) -> SuiteResult:
        results = []
        for case in cases:
            result = self.run_case(case, repeat=repeat)
            if on_case is not None:
                on_case(result)
            results.append(result)
        return SuiteResult(agent=self.agent.name, threshold=threshold, repeat=repeat, cases=tuple(results))

    def run_case(self, case: Case, *, repeat: int) -> CaseResult:
        thread = Thread(id=EVAL_THREAD_ID, agent=self.agent.name, events=case.thread)
        # What the reducer would offer at this point: the same schema, prompt and checks as a run.
        offer = control.offer(self.agent, thread)
        # Rendered once: the prompt is deterministic, so every repeat sends the same request.
        messages = self.prompts.render(self.agent, thread, offer)
        attempts = tuple(self._attempt(case, thread, messages, offer) for _ in range(repeat))
        return CaseResult(case=case.name, attempts=attempts)

    def _attempt(
        self, case: Case, thread: Thread, messages: Sequence[ChatMessage], offer: control.Offer
    ) -> Attempt:
        started = self.timer()
        try:
            reply = self.llm.decide(messages, offer.intents)
        except LlmError as error:
            if not self._answered:
                raise ModelNotAsked(f"the model could not be asked: {error}") from error
            latency = self.timer() - started
            return Attempt(passed=False, unasked=True, failures=(f"model: {error}",), latency_s=latency)
        self._answered = True
        latency = self.timer() - started
        tokens = reply.usage.total_tokens if reply.usage is not None else None
        output = reply.content[:MAX_OUTPUT_CHARS]
        try:
            answer = offer.check(reply.content)
        except control.InvalidAnswer as error:
            # The error event the reducer would record: invalid, not offered, or outside a grounded enum.
            failure = f"refused: {str(error)[:300]}"
            return Attempt(passed=False, failures=(failure,), latency_s=latency, tokens=tokens, output=output)
        met, failures = meeting(case.expect, answer)
        judge_tokens = None
        unasked = False
        # The judge is asked only about answers that met every deterministic check, and only until
        # one alternative's rubric says yes.
        for expect in met:
            if expect.judge is None:
                failures = []
                break
            context = self.agent.context.render(thread.events)
            outcome = ask_judge(self.judge, judge_messages(expect.judge, answer, context))
            failures += outcome.failures
            unasked = unasked or outcome.unasked
            if outcome.usage is not None:
                judge_tokens = (judge_tokens or 0) + outcome.usage.total_tokens
            if not outcome.failures:
                failures = []
                break
        return Attempt(
            passed=not failures,
            unasked=unasked and bool(failures),
            intent=answer.intent,
            failures=tuple(failures),
            latency_s=latency,
            tokens=tokens,
            judge_tokens=judge_tokens,
            output=output,
        )
