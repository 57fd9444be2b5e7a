"""Figure 5: many threads at once through the local stack's API and state machine.

The stack (`twelvefactor.local.stack.LocalStack`) is process-wide (moto's state, the handlers'
environment), so it runs in a worker process of its own: `python -m bench.throughput <spec>`.
"""

from __future__ import annotations

import itertools
import json
import logging
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from bench.harness import Harness
from bench.report import Figure, Summary, Verdict, ms
from bench.scenario import EVENTS_PER_TURN, STEPS_PER_TURN, TURN_TEXT

EXPECTED_TYPES = ["user_message", "tool_call", "tool_result", "tool_call", "tool_result", "done"]
# A thread's execution takes seconds; a missing one should fail the run soon, not after 15 minutes.
SECONDS_PER_THREAD = 9
MIN_DEADLINE_SECONDS = 120
POLL_SECONDS = 0.25
LAUNCH_ATTEMPTS = 5


def measure(h: Harness) -> Figure:
    threads = 2 if h.smoke else 100
    figure = Figure(
        5,
        "Throughput on the local stack",
        f"""
`twelvefactor.local.stack.LocalStack` in one worker process: moto server with Step Functions
executing our ASL, the handlers behind the local API gateway and the Lambda bridge, the fake
deployment service and the scripted fake LLM. {threads} threads are launched at once with
`POST /threads` (each with an `Idempotency-Key`, from {threads} client threads); the gateway serves
the Api function one request at a time, as one Lambda execution environment would, so launches
queue there (*launch p95*), while the executions' reducers overlap. Each thread is one
turn of {STEPS_PER_TURN} steps run by its own state machine execution. *Threads/s* is threads divided
by the time from the first launch to the last execution's end; *step latency* is the time
between consecutive events of a thread (their `at` stamps), so it includes queueing behind the
other threads on this 2-core machine. Then every thread is read back through `GET /threads/{{id}}`
and checked: exactly the {EVENTS_PER_TURN} expected events in order, no event id twice, one
SUCCEEDED execution per thread, one deploy per thread at the fake service.
""",
    )
    result = h.run_json([h.ours_python, "-m", "bench.throughput", json.dumps({"threads": threads})])
    latency = Summary.of(result["step_latencies"])
    launch = Summary.of(result["launch_latencies"])
    figure.headers = ["threads", "threads/s", "step latency p50", "p95", "max", "launch p95", "wall"]
    figure.rows.append(
        [
            str(threads),
            f"{threads / result['seconds']:.2f}",
            ms(latency.median),
            ms(latency.p95),
            ms(latency.high),
            ms(launch.p95),
            f"{result['seconds']:.1f} s",
        ]
    )
    if result["moto_errors"]:
        figure.notes.append(
            f"moto's server failed {result['moto_errors']} requests with HTTP 500 under this concurrency "
            "(its TransactWriteItems deep-copies the tables while other requests write to them: "
            "`dictionary changed size during iteration`); botocore retried them, as it would a "
            "DynamoDB 500, and the checks below show nothing was lost or written twice."
        )
    problems = result["problems"]
    figure.verdicts.append(
        Verdict(
            "zero lost or duplicated events (checked)",
            not problems,
            "all threads complete and exact" if not problems else "; ".join(problems[:5]),
        )
    )
    return figure


# --- the worker ----------------------------------------------------------------------------------


def run(spec: dict[str, Any]) -> dict[str, Any]:
    import httpx

    from bench.fake_llm import fake_llm
    from twelvefactor.local.stack import LlmEndpoint, LocalStack

    count = spec["threads"]
    server_errors = _ServerErrors()
    logging.getLogger("werkzeug").addHandler(server_errors)
    with fake_llm() as llm:
        endpoint = LlmEndpoint(base_url=llm.base_url, model="fake-model", kind="scripted")
        with LocalStack(endpoint) as stack, httpx.Client(base_url=stack.api_url, timeout=120) as api:

            def launch(index: int) -> tuple[str, float]:
                started = time.perf_counter()
                # A 409 means "in progress, retry with the same key" (Powertools idempotency; under
                # this load moto's DynamoDB also races). Retrying the same key is what a client
                # does; the exactly-once check below still counts every event.
                for attempt in range(LAUNCH_ATTEMPTS):
                    response = api.post(
                        "/threads",
                        json={"agent": "deploybot", "message": TURN_TEXT},
                        headers={"Idempotency-Key": f"bench-{index}"},
                    )
                    if response.status_code != 409 or attempt == LAUNCH_ATTEMPTS - 1:
                        break
                    time.sleep(0.2 * (attempt + 1))
                response.raise_for_status()
                return str(response.json()["thread_id"]), time.perf_counter() - started

            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=count) as pool:
                launched = list(pool.map(launch, range(count)))
            executions = _wait_for_executions(stack, count)
            seconds = time.perf_counter() - started
            views = [api.get(f"/threads/{thread_id}").json() for thread_id, _ in launched]
            deploys = httpx.get(f"{stack.services_url}/deploys").json()["deploys"]
    problems = _check(views, executions, deploys, count)
    return {
        "seconds": seconds,
        "launch_latencies": [latency for _, latency in launched],
        "step_latencies": [delta for view in views for delta in _step_deltas(view["events"])],
        "problems": problems,
        "moto_errors": server_errors.count,
    }


class _ServerErrors(logging.Handler):
    """Counts the requests moto's server failed (it logs each one through werkzeug)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def _wait_for_executions(stack: Any, count: int) -> Counter[str]:
    import boto3

    sfn = boto3.client("stepfunctions")
    allowed = max(MIN_DEADLINE_SECONDS, SECONDS_PER_THREAD * count)
    deadline = time.monotonic() + allowed
    while True:
        statuses: Counter[str] = Counter()
        for page in sfn.get_paginator("list_executions").paginate(stateMachineArn=stack.state_machine_arn):
            statuses.update(execution["status"] for execution in page["executions"])
        if sum(statuses.values()) >= count and statuses["RUNNING"] == 0:
            return statuses
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} threads launched, executions after {allowed}s: {dict(statuses)}")
        time.sleep(POLL_SECONDS)


def _check(
    views: list[dict[str, Any]], executions: Counter[str], deploys: list[dict[str, Any]], count: int
) -> list[str]:
    problems = []
    if len({view["thread_id"] for view in views}) != count:
        problems.append(f"{count} launches gave {len({view['thread_id'] for view in views})} threads")
    if executions != Counter({"SUCCEEDED": count}):
        problems.append(f"executions: {dict(executions)}")
    if len(deploys) != count:
        problems.append(f"{len(deploys)} deploys for {count} threads")
    seen_ids: set[str] = set()
    for view in views:
        types = [event["type"] for event in view["events"]]
        if types != EXPECTED_TYPES:
            problems.append(f"{view['thread_id']}: events {types}")
        if view["last_seq"] != len(EXPECTED_TYPES) - 1:
            problems.append(f"{view['thread_id']}: last_seq {view['last_seq']}")
        ids = [event["id"] for event in view["events"]]
        if len(set(ids)) != len(ids) or seen_ids & set(ids):
            problems.append(f"{view['thread_id']}: an event id appears twice")
        seen_ids |= set(ids)
    return problems


def _step_deltas(events: list[dict[str, Any]]) -> list[float]:
    stamps = [datetime.fromisoformat(event["at"]) for event in events]
    return [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(stamps)]


if __name__ == "__main__":
    print(json.dumps(run(json.loads(sys.argv[1]))))
