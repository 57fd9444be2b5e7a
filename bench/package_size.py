"""Figure 6: what each side ships to Lambda, unzipped, without the boto3 the runtime provides."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from bench.harness import ROOT, Harness
from bench.report import Figure, Verdict, ratio, size

TOP_PACKAGES = 8


def tree_size(path: Path) -> int:
    return sum(
        item.stat().st_size for item in path.rglob("*") if item.is_file() and "__pycache__" not in item.parts
    )


def by_top_folder(path: Path) -> Counter[str]:
    sizes: Counter[str] = Counter()
    for item in path.iterdir():
        if item.name.endswith(".dist-info"):
            sizes["(dist-info metadata)"] += tree_size(item)
        elif item.is_dir():
            sizes[item.name] += tree_size(item)
        else:
            sizes[item.name] += item.stat().st_size
    return sizes


def measure(h: Harness) -> Figure:
    figure = Figure(
        6,
        "Package size",
        """
Unzipped bytes of what each side deploys, boto3/botocore/s3transfer excluded (the Lambda runtime
ships them). *Ours*: the TwelvefactorLayer built by layers/Makefile (cp312 manylinux wheels of the
runtime dependencies, `twelvefactor`, `agents`, `prompts/`) plus the six functions' code. *Peer*:
bench/requirements-peer.txt installed the same way (cp312 manylinux wheels, no bytecode) plus the
peer's handler module.
""",
    )
    functions = sum(tree_size(path) for path in (ROOT / "functions").iterdir() if path.is_dir())
    peer_total = 0
    peer_parts: Counter[str] = Counter()
    if h.smoke:
        # No wheels are fetched in a smoke run: the sources alone exercise the measurement.
        ours_total = functions + sum(tree_size(ROOT / "layers" / name) for name in ("twelvefactor", "agents"))
        ours_total += tree_size(ROOT / "prompts")
        ours_parts = Counter({name: tree_size(ROOT / "layers" / name) for name in ("twelvefactor", "agents")})
    else:
        builds = h.builds()
        ours_total = tree_size(builds.ours) + functions
        ours_parts = by_top_folder(builds.ours_path)
        if h.has_peer:
            peer_total = tree_size(builds.peer)
            peer_parts = by_top_folder(builds.peer)
    figure.headers = ["side", "unzipped", "largest parts"]
    figure.rows.append(
        [
            "twelvefactor layer + functions" + (" (smoke: sources only)" if h.smoke else ""),
            size(ours_total),
            _largest(ours_parts),
        ]
    )
    if peer_total:
        figure.rows.append(["LangGraph stack + handler", size(peer_total), _largest(peer_parts)])
        figure.verdicts.append(
            Verdict(
                "at most 0.25x the LangGraph stack",
                ours_total <= 0.25 * peer_total,
                f"{size(ours_total)} vs {size(peer_total)} = {ratio(ours_total, peer_total)}",
            )
        )
    else:
        reason = "smoke run: no wheels fetched" if h.smoke else h.peer_missing
        figure.verdicts.append(Verdict("at most 0.25x the LangGraph stack", None, reason))
    return figure


def _largest(parts: Counter[str]) -> str:
    return ", ".join(f"{name} {size(count)}" for name, count in parts.most_common(TOP_PACKAGES))
