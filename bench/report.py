"""Statistics and the Markdown that `make bench` writes to docs/benchmarks.md."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile: a value that was actually measured, never an interpolation."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Summary:
    median: float
    p95: float
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        if not values:
            raise ValueError("nothing was measured")
        return cls(statistics.median(values), percentile(values, 0.95), min(values), max(values), len(values))

    def ms(self) -> str:
        return f"{self.median * 1000:.1f} ms ({self.low * 1000:.1f}–{self.high * 1000:.1f})"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs else "n/a"


@dataclass(frozen=True)
class Verdict:
    """One target of the issue, checked against this run's numbers."""

    target: str
    met: bool | None  # None: not measured in this run
    detail: str

    def line(self) -> str:
        mark = {True: "**met**", False: "**MISSED**", None: "**not measured**"}[self.met]
        return f"- {mark}: {self.target} — {self.detail}"


@dataclass
class Figure:
    number: int
    title: str
    method: str
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra_tables: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)

    def markdown(self) -> str:
        parts = [f"## {self.number}. {self.title}", "", self.method.strip(), ""]
        if self.headers:
            parts += [_table(self.headers, self.rows), ""]
        for caption, headers, rows in self.extra_tables:
            parts += [caption, "", _table(headers, rows), ""]
        if self.verdicts:
            parts += [verdict.line() for verdict in self.verdicts] + [""]
        if self.notes:
            parts += [f"- {note}" for note in self.notes] + [""]
        return "\n".join(parts)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
