"""The soak's faults: every port of the runtime wrapped so that a seeded draw makes it fail.

Each wrapper implements the port it wraps (LanguageModel, ThreadStore, Workflow, HumanChannel) and
calls the real adapter underneath (moto's DynamoDB and Step Functions, the fake deployment
service). Whether a call fails is drawn from a generator seeded with the run's seed, the thread the
call is for and how many draws that thread has had at that port, so a thread meets the same faults
in a replay whatever the other threads are doing.

Which function is running (and for which thread) comes from `invocation`, set around every handler
the soak invokes: a crash is the reducer's or Notify's, a DynamoDB throttle in the Api function is
the caller's 503.
"""

from __future__ import annotations

import contextvars
import json
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from twelvefactor.adapters.ports import ChannelError, ConcurrentAppend, StorageError
from twelvefactor.adapters.stepfunctions import StepFunctionsError
from twelvefactor.core.channels import ChannelRef, Notification
from twelvefactor.core.errors import LlmRejected, LlmUnavailable
from twelvefactor.core.events import Event, TokenUsage
from twelvefactor.core.ports import ChatMessage, ModelReply
from twelvefactor.core.tools import IntentSet


@dataclass(frozen=True)
class Invocation:
    function: str  # "api", "reducer", "failure" (the reducer's record_failure), "notify", "driver"
    thread_id: str


invocation: contextvars.ContextVar[Invocation | None] = contextvars.ContextVar(
    "soak_invocation", default=None
)


@contextmanager
def running(function: str, thread_id: str) -> Iterator[None]:
    token = invocation.set(Invocation(function, thread_id))
    try:
        yield
    finally:
        invocation.reset(token)


class Crash(RuntimeError):
    """Stands in for a Lambda killed (timeout, out of memory) at the point of the draw."""


@dataclass
class FaultPlan:
    """The seeded draws, and the count of each fault injected (the soak's figures)."""

    seed: int
    rate: float
    injected: Counter[str] = field(default_factory=Counter)
    _draws: Counter[tuple[str, str]] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def rng(self, thread_id: str, port: str) -> random.Random:
        with self._lock:
            self._draws[(thread_id, port)] += 1
            count = self._draws[(thread_id, port)]
        return random.Random(f"{self.seed}:{thread_id}:{port}:{count}")

    def draw(self, port: str, kinds: Sequence[str], rate: float | None = None) -> str | None:
        """A fault kind for this call, or None. Calls outside a soak invocation never fail."""
        current = invocation.get()
        if current is None or current.function == "driver":
            return None
        rng = self.rng(current.thread_id, port)
        if rng.random() >= (self.rate if rate is None else rate):
            return None
        kind = rng.choice(list(kinds))
        with self._lock:
            self.injected[kind] += 1
        return kind


# --- the model ------------------------------------------------------------------------------------


def _intent(name: str, **arguments: Any) -> str:
    return json.dumps({"intent": name, **arguments})


class SoakModel:
    """A model per thread: each decision is drawn from the thread's own generator. It deploys (to
    staging, which runs at once, or to production, which needs approval), lists tags, asks a
    person, or finishes; a share of its answers are faults (429, 5xx, timeouts after the adapter's
    retries, a rejected request, garbage, a schema-invalid intent)."""

    FAULTS = ("llm_429", "llm_5xx", "llm_timeout", "llm_rejected", "llm_garbage", "llm_schema_invalid")

    def __init__(self, plan: FaultPlan) -> None:
        self._plan = plan

    def decide(self, messages: Sequence[ChatMessage], intents: IntentSet) -> ModelReply:
        usage = TokenUsage(prompt_tokens=100, completion_tokens=20)
        match self._plan.draw("llm", self.FAULTS):
            case "llm_429":
                raise LlmUnavailable("rate limited (HTTP 429) after 3 attempts")
            case "llm_5xx":
                raise LlmUnavailable("the provider answered HTTP 503 after 3 attempts")
            case "llm_timeout":
                raise LlmUnavailable("the request timed out after 3 attempts")
            case "llm_rejected":
                raise LlmRejected("HTTP 400: the request was refused")
            case "llm_garbage":
                return ModelReply(content="Sure! I'll deploy it {", usage=usage)
            case "llm_schema_invalid":
                return ModelReply(content=_intent("deploy_backend", tag=5, environment="moon"), usage=usage)
        current = invocation.get()
        rng = self._plan.rng(current.thread_id if current else "", "llm-decision")
        choice = rng.choices(("staging", "production", "tags", "ask", "done"), weights=(2, 3, 1, 2, 3), k=1)[
            0
        ]
        content = {
            "staging": _intent("deploy_backend", tag="v1.2.3", environment="staging"),
            "production": _intent(
                "deploy_frontend" if rng.random() < 0.5 else "deploy_backend",
                tag="v1.2.2",
                environment="production",
            ),
            "tags": _intent("list_git_tags"),
            "ask": _intent("request_human_input", question="Which tag should go out?"),
            "done": _intent("done_for_now", message="All done."),
        }[choice]
        if json.loads(content)["intent"] not in intents.names:
            # Code offers a deploy only after a list_git_tags result (core/control.py): a model that
            # follows the offer lists the tags first, as the real one is told to.
            content = _intent("list_git_tags" if "list_git_tags" in intents.names else "done_for_now")
            if "done_for_now" in content:
                content = _intent("done_for_now", message="All done.")
        return ModelReply(content=content, usage=usage)


# --- DynamoDB (the store) and the reducer's and Notify's crashes ------------------------------------


_STORE_FAULTS = ("dynamodb_throttled", "dynamodb_timeout")
_WRITE_FAULTS = (
    "dynamodb_throttled",
    "dynamodb_conditional_failure",
    "dynamodb_timeout",
    "dynamodb_timeout_after_write",
)


class FaultyStore:
    """The real DynamoDB store; a draw may throttle a call, time it out (before or after the write
    landed), fail a conditional write, or kill the reducer or Notify right before or after it.
    `meanwhile` is called before a reducer's append: the soak uses it to land a cancel or an answer
    in the middle of a move."""

    def __init__(self, store: Any, plan: FaultPlan, meanwhile: Callable[[str, list[Event]], None]) -> None:
        self._store = store
        self._plan = plan
        self._meanwhile = meanwhile

    def append(self, thread_id: str, events: list[Event], **kwargs: Any) -> int:
        current = invocation.get()
        if current is not None and current.function == "reducer":
            self._meanwhile(thread_id, events)
        self._crash("before")
        fault = self._plan.draw("dynamodb", _WRITE_FAULTS)
        if fault == "dynamodb_throttled":
            raise StorageError("PutItem failed: ProvisionedThroughputExceededException (throttled)")
        if fault == "dynamodb_conditional_failure":
            raise ConcurrentAppend("the conditional write failed")
        if fault == "dynamodb_timeout":
            raise StorageError("PutItem failed: Read timeout on endpoint URL")
        seq: int = self._store.append(thread_id, events, **kwargs)
        if fault == "dynamodb_timeout_after_write":
            raise StorageError("PutItem failed: Read timeout on endpoint URL (the write landed)")
        self._crash("after")
        return seq

    def _crash(self, when: str) -> None:
        current = invocation.get()
        if current is not None and current.function in ("reducer", "notify"):
            kind = self._plan.draw(
                f"crash-{when}", (f"{current.function}_crash_{when}_write",), rate=self._plan.rate / 2
            )
            if kind:
                raise Crash(f"the {current.function} was killed {when} a write")

    def _read(self, name: str) -> Callable[..., Any]:
        method = getattr(self._store, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            fault = self._plan.draw("dynamodb", _STORE_FAULTS, rate=self._plan.rate / 2)
            if fault == "dynamodb_throttled":
                raise StorageError(f"{name} failed: ThrottlingException (throttled)")
            if fault == "dynamodb_timeout":
                raise StorageError(f"{name} failed: Read timeout on endpoint URL")
            return method(*args, **kwargs)

        return call

    def save_wait(self, wait: Any) -> None:
        self._crash("before")
        self._read("save_wait")(wait)
        self._crash("after")

    def __getattr__(self, name: str) -> Any:
        if name in (
            "load",
            "load_outline",
            "get_wait",
            "clear_wait",
            "events_after",
            "find_wait_by_callback",
        ):
            return self._read(name)
        return getattr(self._store, name)


# --- Step Functions -----------------------------------------------------------------------------


class FaultyWorkflow:
    """The real Step Functions adapter (moto); a draw may throttle a call (after boto3's retries),
    or time the wait out just before an answer resumes it, so the answer meets a real InvalidToken
    or TaskTimedOut."""

    def __init__(self, workflow: Any, sfn: Any, plan: FaultPlan) -> None:
        self._workflow = workflow
        self._sfn = sfn
        self._plan = plan

    def start(self, thread_id: str, launch_seq: int) -> str:
        self._throttle("StartExecution")
        arn: str = self._workflow.start(thread_id, launch_seq)
        return arn

    def resume(self, task_token: str, output: dict[str, object]) -> None:
        fault = self._plan.draw("stepfunctions", ("sfn_throttled", "sfn_invalid_token"))
        if fault == "sfn_throttled":
            raise StepFunctionsError(
                "SendTaskSuccess failed with ThrottlingException: Rate exceeded", "ThrottlingException"
            )
        if fault == "sfn_invalid_token":
            # The wait times out at this very moment, as TimeoutSeconds would make it: the real
            # token is then refused by the real service.
            time_out(task_token)
        self._workflow.resume(task_token, output)

    def fail(self, task_token: str, error: str, cause: str) -> None:
        self._throttle("SendTaskFailure")
        self._workflow.fail(task_token, error, cause)

    def cancel(self, thread_id: str) -> None:
        self._throttle("StopExecution")
        self._workflow.cancel(thread_id)

    def running(self, thread_id: str) -> bool:
        self._throttle("ListExecutions")
        found: bool = self._workflow.running(thread_id)
        return found

    def _throttle(self, operation: str) -> None:
        if self._plan.draw("stepfunctions", ("sfn_throttled",), rate=self._plan.rate / 2):
            raise StepFunctionsError(
                f"{operation} failed with ThrottlingException: Rate exceeded", "ThrottlingException"
            )


def time_out(task_token: str) -> None:
    """Time a wait out as its TimeoutSeconds would: the paused task ends in States.Timeout (which
    the state machine's Catch takes), and the token is refused from then on with TaskTimedOut.

    Done on moto's callback endpoint, the way moto's own timeout does it. SendTaskFailure with the
    error "States.Timeout" is not the same thing: Step Functions refuses a custom error name in the
    reserved "States." namespace, and moto's interpreter failed the whole execution on it
    (States.Runtime, past every Catch), which left the threads of earlier soaks with an answer and
    no execution (seed 189569)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.stepfunctions.parser.asl.eval.callback.callback import (
        CallbackConsumerTimeout,
        CallbackOutcomeTimedOut,
    )
    from moto.stepfunctions.responses import get_backend

    for execution in get_backend(DEFAULT_ACCOUNT_ID, "us-east-1")._get_executions():
        worker = execution.exec_worker
        endpoint = worker.env.callback_pool_manager.get(task_token) if worker is not None else None
        if endpoint is not None:
            endpoint.notify(CallbackOutcomeTimedOut(callback_id=task_token))
            endpoint.report(CallbackConsumerTimeout())
            return


# --- Slack and SES ------------------------------------------------------------------------------


@dataclass
class FaultyChannel:
    """A channel that records what it was asked to send, and fails a share of the sends."""

    plan: FaultPlan
    kind: str
    sent: list[Notification] = field(default_factory=list)

    def send(self, ref: ChannelRef, notification: Notification) -> None:
        if self.plan.draw(self.kind, (f"{self.kind}_send_failed",)):
            raise ChannelError(f"{self.kind} refused the message (soak)")
        self.sent.append(notification)
