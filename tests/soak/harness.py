"""The seeded soak: many threads through random schedules of human and caller actions, with faults
at every port, then five invariants checked over everything that happened.

What runs is the integration stack (tests/integration/stack.py): the real Api, Reducer and Notify
handlers, the real state machine executed by moto, moto's DynamoDB holding the threads, the fake
deployment service doing the deploys. The ports are wrapped by `faults` so a seeded share of calls
fail. Each thread is driven by its own generator (seeded by the run's seed and the thread's
number) from a pool of driver threads, so threads interleave with each other, with the state
machine's executions and, through `meanwhile`, with a reducer in the middle of a move.

A failing run names its seed; ``make soak SEED=<seed>`` replays the same schedules and faults (the
moments at which moto's execution threads reach them may differ).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import boto3
import httpx

from tests.integration.conftest import REGION
from tests.integration.stack import Stack, api_event, signed_callback_event
from tests.soak import faults
from tests.soak.faults import FaultPlan, FaultyChannel, FaultyStore, FaultyWorkflow, SoakModel, running
from twelvefactor import runtime
from twelvefactor.core import state
from twelvefactor.core.channels import EmailRef, SlackRef
from twelvefactor.core.errors import NotWaiting
from twelvefactor.core.events import Escalation, Event, Thread, ToolCall, ToolResult, dump_event
from twelvefactor.core.state import ThreadStatus

INVARIANTS = (
    "Every deploy the fake service performed appears exactly once, as a tool_result in exactly one thread",
    "No thread ends with an unrecorded or unsettled call",
    "Every event sequence is gap-free and has no duplicates",
    "Every thread ends done, cancelled, escalated or waiting, with a Step Functions state that agrees",
    "A refused input wrote nothing (and an accepted one was written once)",
)
SETTLE_SECONDS = 30.0
MAX_ACTIONS = 8
MAX_RETRIES = 3


@dataclass
class Request:
    thread_id: str
    kind: str
    status: int  # the HTTP status, 0 when the handler raised (a crash), 1 for a service call that returned
    marker: str | None = None

    @property
    def outcome(self) -> str:
        if self.status in (0,) or self.status >= 500:
            return "unknown"
        return "refused" if self.status >= 400 else "accepted"


@dataclass
class Violation:
    invariant: int
    thread_id: str
    detail: str

    def __str__(self) -> str:
        return f"invariant {self.invariant} ({INVARIANTS[self.invariant - 1]}) broken on {self.thread_id}: {self.detail}"


@dataclass
class SoakResult:
    seed: int
    threads: int
    requests: list[Request]
    faults: Counter[str]
    ends: Counter[str]
    checks: Counter[int]
    violations: list[Violation]
    seconds: float

    def figures(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "threads": self.threads,
            "actions": dict(sorted(Counter(r.kind for r in self.requests).items())),
            "action_outcomes": dict(sorted(Counter(r.outcome for r in self.requests).items())),
            "faults": dict(sorted(self.faults.items())),
            "faults_total": sum(self.faults.values()),
            "thread_ends": dict(sorted(self.ends.items())),
            "invariants": [
                {"invariant": text, "checks": self.checks[number], "violations": sum(v.invariant == number for v in self.violations)}
                for number, text in enumerate(INVARIANTS, start=1)
            ],
            "outcome": "pass" if not self.violations else "fail",
            "seconds": round(self.seconds),
        }


@dataclass
class Soak:
    stack: Stack
    seed: int
    threads: int
    rate: float = 0.08
    concurrency: int = 8
    requests: list[Request] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.plan = FaultPlan(self.seed, self.rate)
        plain = runtime.reset()
        self.store = plain.store  # the driver's and the checks' view: never faulty
        self.channels = {"slack": FaultyChannel(self.plan, "slack"), "email": FaultyChannel(self.plan, "ses")}
        runtime.reset(
            llm=SoakModel(self.plan),
            store=FaultyStore(plain.store, self.plan, self._meanwhile),
            workflow=FaultyWorkflow(plain.workflow, self.stack.sfn, self.plan),
            channels=dict(self.channels),
        )
        for logical_id, name in (("ReducerFunction", "reducer"), ("NotifyFunction", "notify")):
            self.stack.bridge.register(logical_id, _tagged(name, self.stack.handler(logical_id)))

    # --- driving --------------------------------------------------------------------------------

    def run(self) -> SoakResult:
        started = time.monotonic()
        with ThreadPoolExecutor(self.concurrency) as pool:
            thread_ids = list(pool.map(self._drive, range(self.threads)))
        ends, checks, violations = self._check(thread_ids)
        return SoakResult(
            self.seed, self.threads, list(self.requests), Counter(self.plan.injected), ends, checks, violations,
            time.monotonic() - started,
        )

    def _drive(self, number: int) -> str:
        rng = random.Random(f"{self.seed}:driver:{number}")
        key = f"soak-{self.seed}-{number}"
        thread_id = runtime._thread_id_for(key)  # noqa: SLF001 - the id a launch key gives
        self._launch(rng, thread_id, key, number)
        for step in range(MAX_ACTIONS):
            thread = self._settle(thread_id)
            if thread is None:
                return thread_id  # never created (the launch failed every time) or stuck: the checks say
            current = state.status(thread.events)
            marker = f"soak-{self.seed}-{number}-{step}"
            if current.is_final:
                if rng.random() < 0.3:
                    self._api(thread_id, "late_approval", api_event("api-respond-approve", thread_id=thread_id, body={"kind": "approval", "approved": True, "comment": marker}), marker)
                if current is ThreadStatus.DONE and rng.random() < 0.4:
                    self._follow_up(thread_id, thread, marker)
                    continue
                return thread_id
            if not current.is_waiting:
                return thread_id  # stuck runnable: the checks report it
            self._answer(rng, thread_id, current, thread.events, marker)
        if rng.random() < 0.3:
            self._api(thread_id, "cancel", api_event("api-cancel", thread_id=thread_id))
        self._settle(thread_id)
        return thread_id

    def _launch(self, rng: random.Random, thread_id: str, key: str, number: int) -> None:
        channel = rng.choice(("api", "slack", "email"))
        text = f"Deploy the backend, please (soak thread {number})"
        deliveries = 2 if rng.random() < 0.25 else 1  # a duplicate delivery of the launch
        for _ in range(deliveries):
            for _attempt in range(MAX_RETRIES):
                if channel == "api":
                    event = api_event("api-launch", body={"agent": "deploybot", "message": text})
                    event["headers"]["Idempotency-Key"] = key
                    event["multiValueHeaders"]["Idempotency-Key"] = [key]
                    status = self._api(thread_id, "launch", event)
                else:
                    status = self._service(thread_id, "launch", lambda: self._launch_on(channel, text, key, number))
                if status and status < 500:
                    break

    def _launch_on(self, channel: str, text: str, key: str, number: int) -> None:
        ref = (
            SlackRef(team_id="T0SOAK", channel_id="C0SOAK", thread_ts=f"{number}.0001")
            if channel == "slack"
            else EmailRef(address="ann@ops.example.com", subject="deploy", message_id=f"<{key}@mail.example.com>")
        )
        runtime.current().launch("deploybot", text, channel=channel, reply_to=ref, launch_key=key)  # type: ignore[arg-type]

    def _answer(self, rng: random.Random, thread_id: str, current: ThreadStatus, events: tuple[Event, ...], marker: str) -> None:
        wait = self.store.get_wait(thread_id)
        choices = ["cancel", "timeout"]
        if current is ThreadStatus.AWAITING_APPROVAL:
            choices += ["approve", "approve", "reject", "double_click", "callback_approve"]
        elif current is ThreadStatus.AWAITING_HUMAN:
            choices += ["text", "text", "duplicate_text", "callback_text", "follow_up"]
        kind = rng.choice(choices)
        approve = {"kind": "approval", "approved": True, "comment": marker}
        match kind:
            case "cancel":
                self._api(thread_id, "cancel", api_event("api-cancel", thread_id=thread_id))
            case "timeout":
                if wait is not None and wait.task_token:
                    faults.time_out(wait.task_token)
                    self._record(Request(thread_id, "wait_timeout", 1))
                    self._settle(thread_id)
                    late = approve if current is ThreadStatus.AWAITING_APPROVAL else {"kind": "response", "text": marker}
                    self._api(thread_id, "late_answer", api_event("api-respond-approve", thread_id=thread_id, body=late), marker)
            case "approve" | "double_click":
                for _ in range(2 if kind == "double_click" else 1):
                    self._api(thread_id, kind, api_event("api-respond-approve", thread_id=thread_id, body=approve), marker)
            case "reject":
                body = {"kind": "approval", "approved": False, "comment": f"not now ({marker})"}
                self._api(thread_id, kind, api_event("api-respond-reject", thread_id=thread_id, body=body), marker)
            case "callback_approve" | "callback_text":
                if wait is not None:
                    payload = {"approved": True, "comment": marker} if kind == "callback_approve" else {"text": marker}
                    self._api(thread_id, kind, signed_callback_event(wait.callback_id, payload), marker)
            case "text" | "duplicate_text":
                body = {"kind": "response", "text": marker}
                for _ in range(2 if kind == "duplicate_text" else 1):
                    self._api(thread_id, kind, api_event("api-respond-text", thread_id=thread_id, body=body), marker)
            case "follow_up":
                thread = self.store.load_outline(thread_id)[1]
                self._follow_up(thread_id, thread, marker)

    def _follow_up(self, thread_id: str, thread: Thread, marker: str) -> None:
        channel = thread.events[0].data.channel if thread.events else "api"  # type: ignore[union-attr]
        self._service(
            thread_id, "follow_up",
            lambda: runtime.current().follow_up(thread_id, f"one more thing: {marker}", channel=channel, sender=None),
            marker,
        )

    def _meanwhile(self, thread_id: str, events: list[Event]) -> None:
        """A reducer is about to write: now and then a cancel lands first, as a person's would."""
        rng = self.plan.rng(thread_id, "meanwhile")
        if rng.random() < 0.04:
            self._api(thread_id, "cancel_meanwhile", api_event("api-cancel", thread_id=thread_id))

    # --- requests -------------------------------------------------------------------------------

    def _api(self, thread_id: str, kind: str, event: dict[str, Any], marker: str | None = None) -> int:
        with running("api", thread_id):
            try:
                status = self.stack.api(event).status
            except Exception:  # noqa: BLE001 - an invocation that died is what the caller sees as a 5xx
                status = 0
        self._record(Request(thread_id, kind, status, marker))
        return status

    def _service(self, thread_id: str, kind: str, call: Callable[[], object], marker: str | None = None) -> int:
        """A Slack or email trigger's call into the runtime, as its handler makes it."""
        with running("api", thread_id):
            try:
                call()
                status = 1
            except NotWaiting:
                status = 409
            except Exception:  # noqa: BLE001
                status = 0
        self._record(Request(thread_id, kind, status, marker))
        return status

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def _settle(self, thread_id: str) -> Thread | None:
        """Wait until the thread waits (with its wait saved) or has ended with no running execution."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline:
            try:
                thread = self.store.load(thread_id)[1]
            except Exception:  # noqa: BLE001 - not created yet
                return None
            current = state.status(thread.events)
            if current.is_waiting and self.store.get_wait(thread_id) is not None:
                return thread
            if current.is_final and not self._running(thread_id):
                return thread
            time.sleep(0.05)
        return None

    def _running(self, thread_id: str) -> list[str]:
        executions = self.stack.sfn.list_executions(stateMachineArn=self.stack.state_machine_arn, statusFilter="RUNNING")
        return [e["executionArn"] for e in executions["executions"] if e["name"].rpartition("-")[0] == thread_id]

    # --- the invariants -------------------------------------------------------------------------

    def _check(self, thread_ids: list[str]) -> tuple[Counter[str], Counter[int], list[Violation]]:
        ends: Counter[str] = Counter()
        checks: Counter[int] = Counter()
        violations: list[Violation] = []
        threads: dict[str, Thread] = {}
        for thread_id in thread_ids:
            self._settle(thread_id)
            try:
                threads[thread_id] = self.store.load(thread_id)[1]
            except Exception:  # noqa: BLE001
                continue  # never launched: invariant 5 checks it wrote nothing
        # 1. every deploy is one tool_result in one thread
        recorded: Counter[str] = Counter()
        for thread in threads.values():
            for event in thread.events:
                if isinstance(event, ToolResult) and isinstance(event.data.result, dict):
                    deployment = event.data.result.get("deployment_id")
                    if deployment:
                        recorded[str(deployment)] += 1
        performed = [str(d["deployment_id"]) for d in httpx.get(f"{self.stack.deploy_service_url}/deploys").json()["deploys"]]
        for deployment in performed:
            checks[1] += 1
            if recorded[deployment] != 1:
                violations.append(Violation(1, deployment, f"recorded {recorded[deployment]} times"))
        for deployment in set(recorded) - set(performed):
            violations.append(Violation(1, deployment, "a recorded deploy the service never performed"))
        table = boto3.resource("dynamodb", region_name=REGION).Table(runtime.current().settings(_store_settings()).threads_table)
        running = {
            e["name"].rpartition("-")[0]
            for e in self.stack.sfn.list_executions(stateMachineArn=self.stack.state_machine_arn, statusFilter="RUNNING")["executions"]
        }
        for thread_id, thread in threads.items():
            events = thread.events
            current = state.status(events)
            wait = self.store.get_wait(thread_id)
            escalated = current is ThreadStatus.AWAITING_HUMAN and isinstance(events[-1], Escalation)
            ends["escalated" if escalated else current.value] += 1
            # 2. no unrecorded or unsettled call
            checks[2] += 1
            unsettled = state.unsettled_tool_call(events)
            if unsettled is not None and not isinstance(events[-1], Escalation):
                violations.append(Violation(2, thread_id, f"{unsettled.data.call_id} is unsettled at {current.value}"))
            calls = [e.data.call_id for e in events if isinstance(e, ToolCall)]
            if len(calls) != len(set(calls)):
                violations.append(Violation(2, thread_id, f"a call id recorded twice: {calls}"))
            outcomes = [state.outcome_call_id(e) for e in events if state.outcome_call_id(e)]
            if len(outcomes) != len(set(outcomes)):
                violations.append(Violation(2, thread_id, f"a call's outcome recorded twice: {outcomes}"))
            # 3. gap-free, no duplicates
            checks[3] += 1
            keys = [item["sk"] for item in _items(table, thread_id) if str(item["sk"]).startswith("EVENT#")]
            seqs = [int(str(key).partition("#")[2]) for key in keys]
            if seqs != list(range(1, len(seqs) + 1)) or len({e.id for e in events}) != len(events) or len(seqs) != len(events):
                violations.append(Violation(3, thread_id, f"sequence numbers {seqs[:5]}... for {len(events)} events"))
            # 4. a known end, and Step Functions agrees
            checks[4] += 1
            if current.is_final:
                if thread_id in running:
                    violations.append(Violation(4, thread_id, f"{current.value} but an execution is still running"))
            elif current.is_waiting:
                if wait is None:
                    violations.append(Violation(4, thread_id, f"{current.value} with no wait saved"))
                elif wait.task_token and thread_id not in running:
                    violations.append(Violation(4, thread_id, f"{current.value} on a task token whose execution ended"))
                elif not wait.task_token and thread_id in running:
                    violations.append(Violation(4, thread_id, "escalated, yet an execution still runs"))
            else:
                violations.append(Violation(4, thread_id, f"stuck at {current.value} ({[e.type for e in events][-4:]})"))
        # 5. a refused input wrote nothing; an accepted one was written once
        texts: Counter[str] = Counter()
        for thread in threads.values():
            for event in thread.events:
                body = json.dumps(dump_event(event))
                for marker in _markers(body):
                    texts[marker] += 1
        by_marker: dict[str, list[Request]] = {}
        for request in self.requests:
            if request.marker:
                by_marker.setdefault(request.marker, []).append(request)
        for marker, requests in by_marker.items():
            checks[5] += len(requests)
            accepted = sum(r.outcome == "accepted" for r in requests)
            unknown = sum(r.outcome == "unknown" for r in requests)
            if not accepted <= texts[marker] <= accepted + unknown:
                kinds = [(r.kind, r.status) for r in requests]
                violations.append(Violation(5, requests[0].thread_id, f"{marker} written {texts[marker]} times after {kinds}"))
        return ends, checks, violations


def _tagged(function: str, handler: Any) -> Any:
    def run(event: dict[str, Any], context: Any) -> Any:
        name = "failure" if function == "reducer" and "error" in event else function
        with running(name, str(event.get("thread_id", ""))):
            return handler(event, context)

    return run


def _items(table: Any, thread_id: str) -> list[dict[str, Any]]:
    from boto3.dynamodb.conditions import Key  # noqa: PLC0415

    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"KeyConditionExpression": Key("pk").eq(f"THREAD#{thread_id}")}
    while True:
        page = table.query(**kwargs)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _markers(text: str) -> list[str]:
    import re  # noqa: PLC0415

    return re.findall(r"soak-\d+-\d+-\d+", text)


def _store_settings() -> Any:
    from twelvefactor.settings import StoreSettings  # noqa: PLC0415

    return StoreSettings
