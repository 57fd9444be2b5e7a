"""Figure 8: prompt-cache prefix stability, from the requests of figure 3's threads.

Providers cache a request's longest prefix seen before (OpenAI automatically past 1,024 tokens;
Bedrock up to a cache point), so what a side can be billed at the cached rate is bounded by how
much of each request repeats the previous one verbatim.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from bench.harness import Harness
from bench.report import Figure, Verdict
from bench.storage import Run

# deploybot's turn asks the model three times (list tags, deploy, done): see bench/scenario.py.
REQUESTS_PER_TURN = 3
TARGET = 0.85


def serialised(request: dict[str, Any]) -> str:
    """The request in the order providers read it for caching: tools and the output schema, then
    the messages in order (role, content and tool calls)."""
    parts = [json.dumps(request.get("tools", []), sort_keys=True)]
    parts.append(json.dumps(request.get("response_format", {}), sort_keys=True))
    for message in request.get("messages", []):
        calls = json.dumps(message.get("tool_calls") or [], sort_keys=True)
        parts.append(f"{message['role']}\n{message.get('content') or ''}\n{calls}")
    return "\n".join(parts)


def pairs(run: Run) -> list[tuple[str, str]]:
    """(previous, current) serialised requests, within each turn."""
    texts = [serialised(request) for request in run.all_requests]
    found = []
    for start in range(0, len(texts), REQUESTS_PER_TURN):
        turn = texts[start : start + REQUESTS_PER_TURN]
        found += list(itertools.pairwise(turn))
    return found


def shares(h: Harness, run: Run) -> tuple[list[float], str]:
    """For each request after a turn's first: tokens of its prefix equal to the previous request,
    over its tokens."""
    texts: list[str] = []
    for previous, current in pairs(run):
        common = _common_prefix(previous, current)
        texts += [current[:common], current]
    counts, encoding = h.count_tokens(texts)
    return [counts[i] / counts[i + 1] for i in range(0, len(counts), 2) if counts[i + 1]], encoding


def measure(h: Harness, runs: dict[str, list[Run]]) -> Figure:
    figure = Figure(
        8,
        "Prompt-cache prefix stability",
        f"""
The requests each side sent the model for figure 3's threads (deploybot's 5-step turns: three
model calls each). For every request after a turn's first: the share of its input tokens that
equal a prefix of the previous request of the same turn, the part a provider's prompt cache can
serve. A request is read as providers order it: the tool definitions and the output schema, then
the messages in order. Target: {TARGET} or more, beside the peer's.
""",
    )
    figure.headers = ["steps", "side", "requests compared", "mean share", "lowest"]
    means: dict[str, float] = {}
    encoding = ""
    for side in ("ours", "peer"):
        for run in runs.get(side, []):
            values, encoding = shares(h, run)
            if not values:
                continue
            mean = sum(values) / len(values)
            means.setdefault(side, mean)
            means[side] = min(means[side], mean)
            figure.rows.append([str(run.steps), side, str(len(values)), f"{mean:.3f}", f"{min(values):.3f}"])
    if encoding:
        figure.method = figure.method.rstrip() + f"\n\nTokenizer: {encoding}.\n"
    ours, peer = means.get("ours"), means.get("peer")
    detail = f"ours {ours:.3f}" if ours is not None else "not measured"
    if peer is not None:
        detail += f", peer {peer:.3f}"
    else:
        detail += f" ({h.peer_missing or 'peer not measured'})"
    figure.verdicts.append(
        Verdict(f"ours at least {TARGET} at every size", None if ours is None else ours >= TARGET, detail)
    )
    return figure


def _common_prefix(first: str, second: str) -> int:
    """How many leading characters the two texts share."""
    for index, (a, b) in enumerate(zip(first, second, strict=False)):
        if a != b:
            return index
    return min(len(first), len(second))
