"""Our side of a benchmark run: drive deploybot through twelvefactor's own composition root.

    python -m bench.ours_worker '{"threads": 2, "turns": 3, "prefix": "t", "warmup": true}'

A turn is what the Api function and the reducer function do for it: `Runtime.launch` (or
`follow_up`) appends the person's message, then `Runtime.reduce` steps the thread to the end,
persisting every move in DynamoDB. Step Functions is left out here (the state machine only
passes the thread id along; figure 5 measures the whole stack): the workflow port records the
starts instead. Prints one JSON object shaped like `bench.peers.langgraph_worker`'s.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from bench.instrument import Meter
from bench.scenario import EVENTS_PER_TURN, TURN_TEXT
from twelvefactor.runtime import Runtime


class RecordedStarts:
    """The Workflow port without Step Functions: this run calls the reducer itself."""

    def __init__(self) -> None:
        self.started: list[tuple[str, int]] = []

    def start(self, thread_id: str, launch_seq: int) -> str:
        self.started.append((thread_id, launch_seq))
        return f"{thread_id}-{launch_seq}"

    def resume(self, task_token: str, output: dict[str, object]) -> None:
        raise AssertionError("the benchmark's turns never pause")

    def fail(self, task_token: str, error: str, cause: str) -> None:
        raise AssertionError("the benchmark's turns never pause")

    def cancel(self, thread_id: str) -> None:
        raise AssertionError("the benchmark never cancels")

    def running(self, thread_id: str) -> bool:
        raise AssertionError("the benchmark's turns never pause")


def turn(rt: Runtime, launch_key: str, thread_id: str | None) -> tuple[str, str]:
    if thread_id is None:
        thread_id = rt.launch("deploybot", TURN_TEXT, channel="api", launch_key=launch_key).thread_id
    else:
        rt.follow_up(thread_id, TURN_TEXT, channel="api", sender=None)
    return thread_id, rt.reduce(thread_id).status


def run(spec: dict[str, Any]) -> dict[str, Any]:
    meter = Meter(os.environ["OPENAI_BASE_URL"])
    rt = Runtime(workflow=RecordedStarts())
    records: list[dict[str, Any]] = []
    problems: list[str] = []
    thread_ids: dict[str, str] = {}
    with meter.installed():
        if spec.get("warmup"):
            # First use builds the clients and loads lazily imported modules: not a step's cost.
            turn(rt, f"{spec['prefix']}-warmup", None)
        for index in range(spec["threads"]):
            name = f"{spec['prefix']}-{index}"
            thread_id: str | None = None
            for number in range(spec["turns"]):
                meter.take()
                started, cpu_started = time.perf_counter(), time.process_time()
                thread_id, status = turn(rt, name, thread_id)
                wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
                sample = meter.take()
                records.append(
                    {"thread": thread_id, "turn": number, "wall": wall, "cpu": cpu, **sample.as_dict()}
                )
                if status != "done":
                    problems.append(f"{name} turn {number} ended {status}")
            assert thread_id is not None
            thread_ids[name] = thread_id
            events = rt.store.load(thread_id)[1].events
            if len(events) != EVENTS_PER_TURN * spec["turns"]:
                problems.append(f"{name} has {len(events)} events")
    return {"records": records, "problems": problems, "thread_ids": thread_ids}


if __name__ == "__main__":
    print(json.dumps(run(json.loads(sys.argv[1]))))
