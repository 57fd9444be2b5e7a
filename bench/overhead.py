"""Figure 2: framework overhead per step, LLM wait excluded, and DynamoDB requests per step."""

from __future__ import annotations

from collections import Counter
from typing import Any

from bench.harness import Harness
from bench.report import Figure, Summary, Verdict, ms, ratio
from bench.scenario import STEPS_PER_TURN

SIDES = {"ours": "twelvefactor", "peer": "LangGraph + DynamoDBSaver"}


def measure(h: Harness) -> Figure:
    threads, turns, rounds = (1, 1, 1) if h.smoke else (5, 3, 5)
    figure = Figure(
        2,
        "Framework overhead per step",
        f"""
Each side runs deploybot turns (5 steps each: 2 tool calls and 3 model calls on the peer's side; on
ours 2 model calls and the step where code writes the done message) against the same moto
server, fake deployment service and scripted fake LLM, {threads} threads x {turns} turns per round,
{rounds} rounds, the sides alternating (after one warm-up turn per process). A turn on our side
is what the Api and Reducer functions do for it (`Runtime.launch`/`follow_up`, then
`Runtime.reduce`); on the peer's, one `graph.invoke`. Overhead per step = (turn wall time − time
waiting for the LLM's HTTP answer) / 5, so it includes prompt rendering, validation, tool
execution (a loopback HTTP call) and persistence (DynamoDB requests to moto over loopback).
*CPU / step* is the worker process's own CPU time (all its threads) per step: the framework's
work with every wait left out, since moto, the fake LLM and the fake service run in the harness's
process. DynamoDB requests are counted per HTTP attempt below botocore, identically on both
sides. Every worker run starts from an emptied moto (see figure 3's note on TransactWriteItems) and
from a collected and frozen harness heap: moto answers from the harness's process, whose full
garbage collections otherwise stalled requests for up to 0.1 s each (`bench.stack.quiet_collector`);
the ones still taken during each side's runs are counted below.
""",
    )
    records: dict[str, list[dict[str, Any]]] = {"ours": [], "peer": []}
    stand_in_collections: dict[str, list[dict[str, float]]] = {"ours": [], "peer": []}
    sides = ["ours", "peer"] if h.has_peer else ["ours"]
    for number in range(rounds):
        for side in sides:
            tables = h.stack.new_tables()
            spec = {"threads": threads, "turns": turns, "prefix": f"overhead-{number}", "warmup": True}
            result = h.worker(side, spec, tables)
            if result["problems"]:
                raise AssertionError(f"{side}: {result['problems']}")
            records[side] += result["records"]
            stand_in_collections[side].append(result["stand_in_collections"])

    figure.headers = [
        "side",
        "overhead / step p50",
        "p95",
        "min–max",
        "CPU / step p50",
        "DynamoDB requests / step",
        "DynamoDB wait / step (summed)",
        "turns",
    ]
    summaries: dict[str, Summary] = {}
    per_step_requests: dict[str, float] = {}
    mixes: dict[str, Counter[str]] = {}
    cpu: dict[str, Summary] = {}
    for side in sides:
        rows = records[side]
        overheads = [(row["wall"] - row["llm_seconds"]) / STEPS_PER_TURN for row in rows]
        summaries[side] = summary = Summary.of(overheads)
        cpu[side] = Summary.of([row["cpu"] / STEPS_PER_TURN for row in rows])
        steps = STEPS_PER_TURN * len(rows)
        per_step_requests[side] = sum(row["dynamo_request_count"] for row in rows) / steps
        dynamo_wait = sum(row["dynamo_seconds"] for row in rows) / steps
        mixes[side] = sum((Counter(row["dynamo_requests"]) for row in rows), Counter())
        figure.rows.append(
            [
                SIDES[side],
                ms(summary.median),
                ms(summary.p95),
                f"{ms(summary.low)}–{ms(summary.high)}",
                ms(cpu[side].median),
                f"{per_step_requests[side]:.2f}",
                ms(dynamo_wait),
                str(len(rows)),
            ]
        )
    figure.extra_tables.append(
        (
            "DynamoDB requests per turn, by operation:",
            ["side", "requests per turn"],
            [
                [
                    SIDES[side],
                    ", ".join(
                        f"{op} {count / len(records[side]):.1f}" for op, count in sorted(mixes[side].items())
                    ),
                ]
                for side in sides
            ],
        )
    )
    figure.verdicts.append(
        Verdict(
            "at most 2 DynamoDB requests per step",
            per_step_requests["ours"] <= 2,
            f"{per_step_requests['ours']:.2f} per step",
        )
    )
    if h.has_peer:
        ours, theirs = summaries["ours"], summaries["peer"]
        for label, mine, peer in (("p50", ours.median, theirs.median), ("p95", ours.p95, theirs.p95)):
            figure.verdicts.append(
                Verdict(
                    f"overhead per step at most 0.5x LangGraph's ({label})",
                    mine <= 0.5 * peer,
                    f"{ms(mine)} vs {ms(peer)} = {ratio(mine, peer)}",
                )
            )
        figure.notes.append(
            f"CPU per step, the framework's own work: {ms(cpu['ours'].median)} vs "
            f"{ms(cpu['peer'].median)} = {ratio(cpu['ours'].median, cpu['peer'].median)}."
        )
    else:
        figure.verdicts.append(Verdict("overhead per step at most 0.5x LangGraph's", None, h.peer_missing))
    figure.notes.append(
        "The stand-ins' full garbage collections during each side's runs (they stall whatever request "
        "is in flight): "
        + "; ".join(
            f"{SIDES[side]} {sum(int(c['count']) for c in stand_in_collections[side])}, longest "
            f"{ms(max((c['longest'] for c in stand_in_collections[side]), default=0.0))}"
            for side in sides
        )
        + "."
    )
    figure.notes.append(
        "DynamoDB wait is summed over requests: the checkpointer writes a step's items from a thread "
        "pool, so its sum can exceed the turn's wall time."
    )
    return figure
