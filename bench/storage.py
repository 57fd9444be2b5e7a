"""Figures 3 and 4: what threads of 10, 50 and 200 steps write to DynamoDB, and cost in tokens.

Both figures come from the same threads: one thread per side and size, each in fresh tables, so
every byte in a table belongs to that thread. The last request each side sent the fake LLM is the
history as its framework presents it to the model at the end of that thread.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from agents import build_registry
from bench.harness import Harness
from bench.report import Figure, Verdict, ratio, size
from bench.scenario import STEPS_PER_TURN
from twelvefactor.adapters.dynamodb_store import DynamoThreadStore
from twelvefactor.core.context import ContextRenderer
from twelvefactor.settings import StoreSettings

STEPS = (10, 50, 200)
SMOKE_STEPS = (5,)
# Beyond this, a linear grower's bytes per step at the largest size differ from the smallest's.
LINEAR_TOLERANCE = 0.25


@dataclass
class Run:
    steps: int
    write_bytes: int
    stored_bytes: int
    requests: int
    last_request: dict[str, Any]
    # Ours only: the thread rendered with no context budget, the like-for-like history.
    unbounded_context: str = ""
    # Every request the side sent the model for this thread, in order (figure 8: prompt-cache prefixes).
    all_requests: tuple[dict[str, Any], ...] = ()


def run_threads(h: Harness) -> dict[str, list[Run]]:
    runs: dict[str, list[Run]] = {"ours": [], "peer": []}
    for steps in SMOKE_STEPS if h.smoke else STEPS:
        spec = {"threads": 1, "turns": steps // STEPS_PER_TURN, "prefix": f"storage-{steps}", "warmup": False}
        for side in ("ours", "peer") if h.has_peer else ("ours",):
            tables = h.stack.new_tables()
            sent_before = len(h.stack.llm.requests)
            result = h.worker(side, spec, tables)
            if result["problems"]:
                raise AssertionError(f"{side}: {result['problems']}")
            run = Run(
                steps=steps,
                write_bytes=sum(row["dynamo_write_bytes"] for row in result["records"]),
                stored_bytes=table_bytes(h, tables[side]),
                requests=sum(row["dynamo_request_count"] for row in result["records"]),
                last_request=h.stack.llm.requests[-1],
                all_requests=tuple(h.stack.llm.requests[sent_before:]),
            )
            if side == "ours":
                run.unbounded_context = _unbounded_context(
                    h, tables, result["thread_ids"][f"storage-{steps}-0"]
                )
            runs[side].append(run)
    return runs


def storage_figure(h: Harness, runs: dict[str, list[Run]]) -> Figure:
    figure = Figure(
        3,
        "Storage growth",
        """
One thread per side and size, the scenario's turns repeated (5 steps a turn), each in fresh
tables. *Written* is the body size of every DynamoDB write request the process sent (PutItem,
UpdateItem, TransactWriteItems, BatchWriteItem), counted below botocore; *stored* is the table's
items at the end, sized by DynamoDB's item-size rules (attribute names plus values).
""",
    )
    figure.headers = ["steps", "ours written", "ours stored", "peer written", "peer stored", "written ratio"]
    peers = {run.steps: run for run in runs["peer"]}
    for run in runs["ours"]:
        peer = peers.get(run.steps)
        figure.rows.append(
            [
                str(run.steps),
                size(run.write_bytes),
                size(run.stored_bytes),
                size(peer.write_bytes) if peer else "—",
                size(peer.stored_bytes) if peer else "—",
                ratio(run.write_bytes, peer.write_bytes) if peer else "—",
            ]
        )
    first, last = runs["ours"][0], runs["ours"][-1]
    per_step = [run.write_bytes / run.steps for run in (first, last)]
    linear = abs(per_step[1] / per_step[0] - 1) <= LINEAR_TOLERANCE
    figure.verdicts.append(
        Verdict(
            "ours grows linearly",
            linear if last.steps > first.steps else None,
            f"{per_step[0]:.0f} B/step at {first.steps} steps, {per_step[1]:.0f} B/step at {last.steps}",
        )
    )
    peer_last = peers.get(last.steps)
    if peer_last is not None and last.steps == max(STEPS):
        figure.verdicts.append(
            Verdict(
                "at 200 steps at most 0.1x LangGraph's",
                last.write_bytes <= 0.1 * peer_last.write_bytes,
                f"{size(last.write_bytes)} vs {size(peer_last.write_bytes)} = "
                f"{ratio(last.write_bytes, peer_last.write_bytes)}",
            )
        )
    else:
        reason = h.peer_missing or "smoke run: 200 steps not measured"
        figure.verdicts.append(Verdict("at 200 steps at most 0.1x LangGraph's", None, reason))
    figure.notes.append(
        "moto's TransactWriteItems deep-copies every table it holds before it writes (to roll back on "
        "failure), so its latency grows with all data stored so far, while DynamoDB's does not; every "
        "side's measurement in figures 2 and 3 therefore starts from an emptied moto."
    )
    figure.notes.append(
        "Ours also writes the small META item into the gsi1 index (thread listing), which the "
        "request bytes above do not show; the peer's table has no index."
    )
    return figure


def tokens_figure(h: Harness, runs: dict[str, list[Run]]) -> Figure:
    figure = Figure(
        4,
        "Context tokens",
        """
The last request each side sent the model at the end of each thread of figure 3. *Ours* is the
user message our prompt template renders the thread into (the tagged context, plus the template's
two framing lines); *ours, no budget* renders the same events with the context budget switched
off, so older events are never elided: the like-for-like comparison. *Peer* is the same history as
LangGraph sends it: OpenAI chat-completions messages with tool calls and tool results, system
prompt left out. Messages are counted as OpenAI's cookbook does (3 tokens per message, plus role
and content; a tool call as 3 plus its name and arguments). The *whole request* adds the system
prompt (ours carries the intents' JSON Schema there) and, for the peer, the tool definitions
(their JSON, an approximation of what the provider counts).
""",
    )
    texts: list[str] = []
    slots: list[dict[str, Any]] = []
    peers = {run.steps: run for run in runs["peer"]}
    for run in runs["ours"]:
        peer = peers.get(run.steps)
        ours_messages = run.last_request["messages"]
        entry = {
            "steps": run.steps,
            "ours": _message_texts(ours_messages[-1:], texts),
            "ours_unbounded": _text_slot(run.unbounded_context, texts),
            "ours_request": _message_texts(ours_messages, texts),
        }
        if peer is not None:
            peer_messages = peer.last_request["messages"]
            entry["peer"] = _message_texts([m for m in peer_messages if m["role"] != "system"], texts)
            entry["peer_request"] = _message_texts(peer_messages, texts)
            entry["peer_tools"] = _text_slot(json.dumps(peer.last_request.get("tools", [])), texts)
        slots.append(entry)
    counts, encoding = h.count_tokens(texts)
    figure.method = figure.method.rstrip() + f"\n\nTokenizer: {encoding}.\n"

    def total(slot: list[tuple[int, int]]) -> int:
        return sum(overhead + counts[index] for index, overhead in slot)

    figure.headers = ["steps", "ours", "ours, no budget", "peer", "ratio (no budget)", "ratio (as sent)"]
    request_rows: list[list[str]] = []
    ratios: list[tuple[int, float]] = []
    for entry in slots:
        ours, unbounded = total(entry["ours"]), total(entry["ours_unbounded"])
        peer_total = total(entry["peer"]) if "peer" in entry else 0
        if peer_total:
            ratios.append((entry["steps"], unbounded / peer_total))
        figure.rows.append(
            [
                str(entry["steps"]),
                str(ours),
                str(unbounded),
                str(peer_total or "—"),
                ratio(unbounded, peer_total) if peer_total else "—",
                ratio(ours, peer_total) if peer_total else "—",
            ]
        )
        ours_request = total(entry["ours_request"])
        peer_request = total(entry["peer_request"]) + total(entry["peer_tools"]) if "peer" in entry else 0
        request_rows.append(
            [
                str(entry["steps"]),
                str(ours_request),
                str(peer_request or "—"),
                ratio(ours_request, peer_request) if peer_request else "—",
            ]
        )
    figure.extra_tables.append(
        (
            "The whole request (system prompt and tool schemas included):",
            ["steps", "ours", "peer", "ratio"],
            request_rows,
        )
    )
    if ratios:
        worst_steps, worst = max(ratios, key=lambda item: item[1])
        figure.verdicts.append(
            Verdict(
                "context at most 0.6x the chat-completions history (no budget, every size)",
                worst <= 0.6,
                f"worst {worst:.2f}x at {worst_steps} steps",
            )
        )
    else:
        figure.verdicts.append(
            Verdict("context at most 0.6x the chat-completions history", None, h.peer_missing)
        )
    return figure


# --- helpers ------------------------------------------------------------------------------------

MESSAGE_OVERHEAD = 3
TOOL_CALL_OVERHEAD = 3


def _text_slot(text: str, texts: list[str]) -> list[tuple[int, int]]:
    texts.append(text)
    return [(len(texts) - 1, 0)]


def _message_texts(messages: list[dict[str, Any]], texts: list[str]) -> list[tuple[int, int]]:
    """(index of a text to count, tokens to add) pairs that sum to the messages' token count."""
    slots: list[tuple[int, int]] = []
    for message in messages:
        texts.append(f"{message['role']}\n{message.get('content') or ''}")
        slots.append((len(texts) - 1, MESSAGE_OVERHEAD))
        for call in message.get("tool_calls") or ():
            texts.append(f"{call['function']['name']}\n{call['function']['arguments']}")
            slots.append((len(texts) - 1, TOOL_CALL_OVERHEAD))
    return slots


def table_bytes(h: Harness, table: str) -> int:
    client = h.stack.client("dynamodb")
    total = 0
    for page in client.get_paginator("scan").paginate(TableName=table):
        total += sum(item_size(item) for item in page["Items"])
    return total


def item_size(item: dict[str, Any]) -> int:
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


def _value_size(value: dict[str, Any]) -> int:
    ((kind, data),) = value.items()
    match kind:
        case "S":
            return len(data.encode())
        case "B":
            return len(data)
        case "N":
            digits = data.lstrip("-").replace(".", "").strip("0") or "0"
            return (len(digits) + 1) // 2 + 1
        case "BOOL" | "NULL":
            return 1
        case "M":
            return 3 + sum(len(key.encode()) + _value_size(item) + 1 for key, item in data.items())
        case "L":
            return 3 + sum(_value_size(item) + 1 for item in data)
        case "SS" | "NS" | "BS":
            return sum(_value_size({kind[0]: item}) for item in data)
    raise ValueError(f"unknown attribute type {kind}")


def _unbounded_context(h: Harness, tables: dict[str, str], thread_id: str) -> str:
    settings = StoreSettings(threads_table=tables["ours"], payload_bucket=tables["bucket"])
    table = h.stack.resource("dynamodb").Table(tables["ours"])
    store = DynamoThreadStore(table, tables["bucket"], h.stack.client("s3"), settings)
    events = store.load(thread_id)[1].events
    agent = build_registry().get("deploybot")
    renderer = ContextRenderer(
        renderers=agent.renderers,
        max_value_chars=agent.max_value_chars,
        budget_chars=10**12,
        policy=agent.effective_context_policy,
    )
    # The model's last request came before the final `done` event.
    return renderer.render(events[:-1])
