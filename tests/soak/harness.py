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
from pathlib import Path
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
SETTLE_SECONDS = 20.0
FAILURES = Path(__file__).resolve().parents[2] / ".cache" / "soak" / "failures.json"
MAX_ACTIONS = 8
# A caller retries a request whose outcome is unknown (a 5xx) until it has one. 8 tries were not
# enough at a 20% fault rate: a cancel takes about six port calls, so all 8 tries fail for about 1
# thread in 100, and that thread was reported "cancelled but an execution is still running" when the
# caller, not the runtime, had given up (seed 189569, thread 166: eight 5xx answers to one cancel).
MAX_RETRIES = 20


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
        text = INVARIANTS[self.invariant - 1]
        return f"invariant {self.invariant} ({text}) broken on {self.thread_id}: {self.detail}"


@dataclass
class SoakResult:
    seed: int
    rate: float
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
            "rate": self.rate,
            "threads": self.threads,
            "actions": dict(sorted(Counter(r.kind for r in self.requests).items())),
            "action_outcomes": dict(sorted(Counter(r.outcome for r in self.requests).items())),
            "faults": dict(sorted(self.faults.items())),
            "faults_total": sum(self.faults.values()),
            "thread_ends": dict(sorted(self.ends.items())),
            "invariants": [
                {
                    "invariant": text,
                    "checks": self.checks[number],
                    "violations": sum(v.invariant == number for v in self.violations),
                }
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
    concurrency: int = 12
    budget_seconds: float = 0.0  # 0: no limit; else no thread starts after this long
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
        self._started = started = time.monotonic()
        with ThreadPoolExecutor(self.concurrency) as pool:
            driven = list(pool.map(self._drive, range(self.threads)))
        thread_ids = [thread_id for thread_id in driven if thread_id is not None]
        ends, checks, violations = self._check(thread_ids)
        return SoakResult(
            self.seed,
            self.rate,
            len(thread_ids),
            list(self.requests),
            Counter(self.plan.injected),
            ends,
            checks,
            violations,
            time.monotonic() - started,
        )

    def _drive(self, number: int) -> str | None:
        if self.budget_seconds and time.monotonic() - self._started > self.budget_seconds:
            return None  # the run's time is up: threads not started are not counted
        rng = random.Random(f"{self.seed}:driver:{number}")
        key = f"soak-{self.seed}-{number}"
        channel = rng.choice(("api", "slack", "email"))
        # The id a launch key gives (the Api function scopes the caller's Idempotency-Key).
        thread_id = runtime._thread_id_for(f"api:{key}" if channel == "api" else key)
        self._launch(rng, channel, thread_id, key, number)
        for step in range(MAX_ACTIONS):
            thread = self._settle(thread_id)
            if thread is None:
                return thread_id  # never created (the launch failed every time) or stuck: the checks say
            current = state.status(thread.events)
            marker = f"soak-{self.seed}-{number}-{step}"
            if current.is_final:
                if rng.random() < 0.3:
                    self._api(
                        thread_id,
                        "late_approval",
                        api_event(
                            "api-respond-approve",
                            thread_id=thread_id,
                            body={"kind": "approval", "approved": True, "comment": marker},
                        ),
                        marker,
                    )
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

    def _launch(self, rng: random.Random, channel: str, thread_id: str, key: str, number: int) -> None:
        text = f"Deploy the backend, please (soak thread {number})"
        deliveries = 2 if rng.random() < 0.25 else 1  # a duplicate delivery of the launch
        for _ in range(deliveries):
            if channel == "api":
                event = api_event("api-launch", body={"agent": "deploybot", "message": text})
                event["headers"]["Idempotency-Key"] = key
                event["multiValueHeaders"]["Idempotency-Key"] = [key]
                self._api(thread_id, "launch", event)
            else:
                self._service(thread_id, "launch", lambda: self._launch_on(channel, text, key, number))

    def _launch_on(self, channel: str, text: str, key: str, number: int) -> None:
        ref = (
            SlackRef(team_id="T0SOAK", channel_id="C0SOAK", thread_ts=f"{number}.0001")
            if channel == "slack"
            else EmailRef(
                address="ann@ops.example.com", subject="deploy", message_id=f"<{key}@mail.example.com>"
            )
        )
        runtime.current().launch("deploybot", text, channel=channel, reply_to=ref, launch_key=key)  # type: ignore[arg-type]

    def _answer(
        self,
        rng: random.Random,
        thread_id: str,
        current: ThreadStatus,
        events: tuple[Event, ...],
        marker: str,
    ) -> None:
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
                    late = (
                        approve
                        if current is ThreadStatus.AWAITING_APPROVAL
                        else {"kind": "response", "text": marker}
                    )
                    self._api(
                        thread_id,
                        "late_answer",
                        api_event("api-respond-approve", thread_id=thread_id, body=late),
                        marker,
                    )
            case "approve" | "double_click":
                for _ in range(2 if kind == "double_click" else 1):
                    self._api(
                        thread_id,
                        kind,
                        api_event("api-respond-approve", thread_id=thread_id, body=approve),
                        marker,
                    )
            case "reject":
                body = {"kind": "approval", "approved": False, "comment": f"not now ({marker})"}
                self._api(
                    thread_id, kind, api_event("api-respond-reject", thread_id=thread_id, body=body), marker
                )
            case "callback_approve" | "callback_text":
                if wait is not None:
                    payload = (
                        {"approved": True, "comment": marker}
                        if kind == "callback_approve"
                        else {"text": marker}
                    )
                    self._api(thread_id, kind, signed_callback_event(wait.callback_id, payload), marker)
            case "text" | "duplicate_text":
                body = {"kind": "response", "text": marker}
                for _ in range(2 if kind == "duplicate_text" else 1):
                    self._api(
                        thread_id, kind, api_event("api-respond-text", thread_id=thread_id, body=body), marker
                    )
            case "follow_up":
                thread = self.store.load_outline(thread_id)[1]
                self._follow_up(thread_id, thread, marker)

    def _follow_up(self, thread_id: str, thread: Thread, marker: str) -> None:
        channel = thread.events[0].data.channel if thread.events else "api"  # type: ignore[union-attr]
        self._service(
            thread_id,
            "follow_up",
            lambda: runtime.current().follow_up(
                thread_id, f"one more thing: {marker}", channel=channel, sender=None
            ),
            marker,
        )

    def _meanwhile(self, thread_id: str, events: list[Event]) -> None:
        """A reducer is about to write: now and then a cancel lands first, as a person's would."""
        rng = self.plan.rng(thread_id, "meanwhile")
        if rng.random() < 0.04:
            self._api(thread_id, "cancel_meanwhile", api_event("api-cancel", thread_id=thread_id))

    # --- requests -------------------------------------------------------------------------------

    def _api(self, thread_id: str, kind: str, event: dict[str, Any], marker: str | None = None) -> int:
        """Send the request as a caller does: again (the same request) while its outcome is unknown."""
        for _attempt in range(MAX_RETRIES):
            with running("api", thread_id):
                try:
                    status = self.stack.api(event).status
                except Exception:
                    status = 0
            self._record(Request(thread_id, kind, status, marker))
            if Request(thread_id, kind, status).outcome != "unknown":
                return status
            time.sleep(0.05)
        return status

    def _service(
        self, thread_id: str, kind: str, call: Callable[[], object], marker: str | None = None
    ) -> int:
        """A Slack or email trigger's call into the runtime, as its handler makes it; redelivered
        (Slack and SES retry) while it fails."""
        for _attempt in range(MAX_RETRIES):
            with running("api", thread_id):
                try:
                    call()
                    status = 1
                except NotWaiting:
                    status = 409
                except Exception:
                    status = 0
            self._record(Request(thread_id, kind, status, marker))
            if status:
                return status
            time.sleep(0.05)
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
            except Exception:
                return None
            current = state.status(thread.events)
            if current.is_waiting and self.store.get_wait(thread_id) is not None:
                return thread
            if current.is_final:
                return thread  # (its execution may still be finishing: the checks wait for that)
            time.sleep(0.1)
        return None

    def _running_threads(self) -> set[str]:
        pages = self.stack.sfn.get_paginator("list_executions").paginate(
            stateMachineArn=self.stack.state_machine_arn, statusFilter="RUNNING"
        )
        return {e["name"].rpartition("-")[0] for page in pages for e in page["executions"]}

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
            except Exception:
                continue  # never launched: invariant 5 checks it wrote nothing
        self._check_deploys(threads, checks, violations)
        table = boto3.resource("dynamodb", region_name=REGION).Table(
            runtime.current().settings(_store_settings()).threads_table
        )
        running = self._running_threads()
        deadline = time.monotonic() + 2 * SETTLE_SECONDS
        while time.monotonic() < deadline and any(
            state.status(threads[thread_id].events).is_final for thread_id in running & set(threads)
        ):
            time.sleep(0.5)  # an ended thread's execution may still be on its way to Finished
            running = self._running_threads()
            threads = {thread_id: self.store.load(thread_id)[1] for thread_id in threads}
        for thread_id, thread in threads.items():
            current = state.status(thread.events)
            escalated = current is ThreadStatus.AWAITING_HUMAN and isinstance(thread.events[-1], Escalation)
            ends["escalated" if escalated else current.value] += 1
            checks.update((2, 3, 4))
            violations += _settled(thread_id, thread.events)
            violations += _gap_free(thread_id, thread.events, table)
            violations += self._agrees(thread_id, thread.events, thread_id in running)
        self._check_markers(threads, checks, violations)
        if violations:
            self._dump(threads, violations)
        return ends, checks, violations

    def _check_deploys(
        self, threads: dict[str, Thread], checks: Counter[int], violations: list[Violation]
    ) -> None:
        """1. Every deploy the service performed is one tool_result in one thread."""
        recorded: Counter[str] = Counter()
        for thread in threads.values():
            for event in thread.events:
                if isinstance(event, ToolResult) and isinstance(event.data.result, dict):
                    deployment = event.data.result.get("deployment_id")
                    if deployment:
                        recorded[str(deployment)] += 1
        deploys = httpx.get(f"{self.stack.deploy_service_url}/deploys").json()["deploys"]
        performed = [str(deploy["deployment_id"]) for deploy in deploys]
        for deployment in performed:
            checks[1] += 1
            if recorded[deployment] != 1:
                violations.append(Violation(1, deployment, f"recorded {recorded[deployment]} times"))
        for deployment in set(recorded) - set(performed):
            violations.append(Violation(1, deployment, "a recorded deploy the service never performed"))

    def _agrees(self, thread_id: str, events: tuple[Event, ...], running: bool) -> list[Violation]:
        """4. The thread ended done, cancelled, escalated or waiting, and Step Functions agrees."""
        current = state.status(events)
        wait = self.store.get_wait(thread_id)
        problem = None
        if current.is_final:
            problem = "but an execution is still running" if running else None
        elif current.is_waiting:
            if wait is None:
                problem = "with no wait saved"
            elif wait.task_token and not running:
                problem = "on a task token whose execution ended"
            elif not wait.task_token and running:
                problem = "escalated, yet an execution still runs"
        else:
            problem = f"stuck ({[event.type for event in events][-4:]})"
        return [Violation(4, thread_id, f"{current.value} {problem}")] if problem else []

    def _check_markers(
        self, threads: dict[str, Thread], checks: Counter[int], violations: list[Violation]
    ) -> None:
        """5. A refused input wrote nothing; an accepted one was written once (one with an unknown
        outcome, a 5xx the caller retried, at most once)."""
        texts: Counter[str] = Counter()
        for thread in threads.values():
            for event in thread.events:
                texts.update(_markers(json.dumps(dump_event(event))))
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
                detail = f"{marker} written {texts[marker]} times after {kinds}"
                violations.append(Violation(5, requests[0].thread_id, detail))

    def _dump(self, threads: dict[str, Thread], violations: list[Violation]) -> None:
        """What a failing run leaves for its reader: each broken thread's events, requests and
        executions, in .cache/soak/failures.json."""
        pages = self.stack.sfn.get_paginator("list_executions").paginate(
            stateMachineArn=self.stack.state_machine_arn
        )
        # Every page: a run of more than a page of executions would show the broken threads none.
        executions = [execution for page in pages for execution in page["executions"]]
        broken = {v.thread_id for v in violations} & set(threads)
        if any(v.invariant == 1 for v in violations) or not broken:
            broken = set(threads)
        report = {
            thread_id: {
                "events": [
                    f"{e.type} {json.dumps(dump_event(e)['data'])[:160]}" for e in threads[thread_id].events
                ],
                "requests": [(r.kind, r.status) for r in self.requests if r.thread_id == thread_id],
                "executions": [
                    (
                        e["name"],
                        e["status"],
                        self._last_states(e["executionArn"]) if e["status"] != "SUCCEEDED" else [],
                    )
                    for e in executions
                    if e["name"].rpartition("-")[0] == thread_id
                ],
            }
            for thread_id in sorted(broken)
        }
        for thread_id in {r.thread_id for r in self.requests} - set(threads):
            report[thread_id] = {
                "never created": [(r.kind, r.status) for r in self.requests if r.thread_id == thread_id]
            }
        FAILURES.parent.mkdir(parents=True, exist_ok=True)
        FAILURES.write_text(
            json.dumps({"violations": [str(v) for v in violations], "threads": report}, indent=2)
        )

    def _last_states(self, execution_arn: str) -> list[str]:
        # The whole history, its last events kept: moto ignores reverseOrder and would give the first.
        pages = self.stack.sfn.get_paginator("get_execution_history").paginate(executionArn=execution_arn)
        events = [event for page in pages for event in page["events"]][-12:]
        details = [
            {key: value for key, value in event.items() if key.endswith("Details")} for event in events
        ]
        return [
            f"{event['type']} {json.dumps(detail, default=str)[:300]}"
            for event, detail in zip(events, details, strict=True)
        ]


def _settled(thread_id: str, events: tuple[Event, ...]) -> list[Violation]:
    """2. No call left unsettled (but after an escalation, which a person's answer re-runs), and no
    call or outcome recorded twice."""
    found = []
    unsettled = state.unsettled_tool_call(events)
    if unsettled is not None and not isinstance(events[-1], Escalation):
        detail = f"{unsettled.data.call_id} is unsettled at {state.status(events).value}"
        found.append(Violation(2, thread_id, detail))
    calls = [event.data.call_id for event in events if isinstance(event, ToolCall)]
    outcomes = [call_id for event in events if (call_id := state.outcome_call_id(event))]
    if len(calls) != len(set(calls)) or len(outcomes) != len(set(outcomes)):
        found.append(Violation(2, thread_id, f"recorded twice: calls {calls}, outcomes {outcomes}"))
    return found


def _gap_free(thread_id: str, events: tuple[Event, ...], table: Any) -> list[Violation]:
    """3. The stored sequence numbers run 0..n-1 and no event is there twice."""
    seqs = [
        int(str(item["sk"]).partition("#")[2])
        for item in _items(table, thread_id)
        if str(item["sk"]).startswith("EVENT#")
    ]
    if seqs == list(range(len(events))) and len({event.id for event in events}) == len(events):
        return []
    return [Violation(3, thread_id, f"sequence numbers {seqs[:8]}... for {len(events)} events")]


def _tagged(function: str, handler: Any) -> Any:
    def run(event: dict[str, Any], context: Any) -> Any:
        name = "failure" if function == "reducer" and "error" in event else function
        with running(name, str(event.get("thread_id", ""))):
            return handler(event, context)

    return run


def _items(table: Any, thread_id: str) -> list[dict[str, Any]]:
    from boto3.dynamodb.conditions import Key

    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"KeyConditionExpression": Key("pk").eq(f"THREAD#{thread_id}")}
    while True:
        page = table.query(**kwargs)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _markers(text: str) -> list[str]:
    import re

    return re.findall(r"soak-\d+-\d+-\d+", text)


def _store_settings() -> Any:
    from twelvefactor.settings import StoreSettings

    return StoreSettings
