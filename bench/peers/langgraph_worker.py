"""The peer's side of a benchmark run (bench/.venv only): drive deploybot-on-LangGraph turn by turn.

    python -m bench.peers.langgraph_worker '{"threads": 2, "turns": 3, "prefix": "t", "warmup": true}'

Prints one JSON object: a record per turn (wall time, LLM wait, DynamoDB requests and bytes, from
`bench.instrument.Meter`) and a check that every thread holds exactly the messages its turns
should have produced. Endpoints come from the environment (see `langgraph_deploybot`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from bench.instrument import Meter
from bench.peers import langgraph_deploybot as peer
from bench.scenario import MESSAGES_PER_TURN, TURN_TEXT


def run(spec: dict[str, Any]) -> dict[str, Any]:
    meter = Meter(os.environ["OPENAI_BASE_URL"])
    records: list[dict[str, Any]] = []
    problems: list[str] = []
    with meter.installed():
        if spec.get("warmup"):
            # First use builds the clients and loads lazily imported modules: not a step's cost.
            peer.handler({"thread_id": f"{spec['prefix']}-warmup", "message": TURN_TEXT}, None)
        for index in range(spec["threads"]):
            thread_id = f"{spec['prefix']}-{index}"
            for turn in range(spec["turns"]):
                meter.take()
                started, cpu_started = time.perf_counter(), time.process_time()
                result = peer.handler({"thread_id": thread_id, "message": TURN_TEXT}, None)
                wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
                sample = meter.take()
                records.append(
                    {"thread": thread_id, "turn": turn, "wall": wall, "cpu": cpu, **sample.as_dict()}
                )
                if result["status"] != "done":
                    problems.append(f"{thread_id} turn {turn} ended {result['status']}")
            messages = peer.graph().get_state({"configurable": {"thread_id": thread_id}}).values["messages"]
            if len(messages) != MESSAGES_PER_TURN * spec["turns"]:
                problems.append(f"{thread_id} has {len(messages)} messages")
    return {"records": records, "problems": problems}


if __name__ == "__main__":
    print(json.dumps(run(json.loads(sys.argv[1]))))
