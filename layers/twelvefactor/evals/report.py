"""What a person reads after an eval: progress lines, the table, and the comparison with a
previous results file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from .cases import CaseError
from .runner import CaseResult, EvalRun, SuiteResult

# "not run": in the previous results but not in this run (removed, or left out with --case).
Change = Literal["improved", "regressed", "unchanged", "new", "not run"]


def _percent(rate: float) -> str:
    return f"{rate:.0%}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def progress_line(position: int, total: int, result: CaseResult) -> str:
    line = (
        f"[{position}/{total}] {result.case}: {result.passes}/{result.runs} passed, "
        f"median {_seconds(result.median_latency_s)}"
    )
    failure = result.first_failure()
    return f"{line}  ({failure})" if failure else line


def format_suite(suite: SuiteResult) -> str:
    rows = [("case", "passed", "rate", "latency", "tokens")]
    for case in suite.cases:
        tokens = "-" if case.tokens_per_run is None else str(case.tokens_per_run)
        rows.append(
            (
                case.case,
                f"{case.passes}/{case.runs}",
                _percent(case.pass_rate),
                _seconds(case.median_latency_s),
                tokens,
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.ljust(width) if column == 0 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    verdict = "PASS" if suite.passed else "FAIL"
    lines.insert(0, f"{suite.agent}: {len(suite.cases)} cases, {suite.repeat} run(s) each")
    lines.append(
        f"{suite.agent}: {_percent(suite.pass_rate)} of runs passed "
        f"(threshold {_percent(suite.threshold)}) {verdict}"
    )
    return "\n".join(lines)


def format_run(run: EvalRun) -> str:
    header = f"model {run.model} ({run.output_mode})"
    return "\n\n".join([header, *(format_suite(suite) for suite in run.suites)])


def write_results(run: EvalRun, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run.model_dump_json(indent=2) + "\n", encoding="utf-8")


def read_results(path: Path) -> EvalRun:
    try:
        return EvalRun.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise CaseError(f"{path}: no such results file") from None
    except ValidationError as error:
        raise CaseError(f"{path}: not an eval results file ({error.error_count()} problems)") from None


@dataclass(frozen=True)
class CaseChange:
    agent: str
    case: str
    change: Change
    before: float | None
    after: float | None


def compare(previous: EvalRun, current: EvalRun) -> list[CaseChange]:
    """Per case, how the pass rate moved from the previous run to this one."""
    before = {(s.agent, c.case): c.pass_rate for s in previous.suites for c in s.cases}
    after = {(s.agent, c.case): c.pass_rate for s in current.suites for c in s.cases}
    changes = []
    for key in [*after, *(key for key in before if key not in after)]:
        old, new = before.get(key), after.get(key)
        change: Change
        if old is None:
            change = "new"
        elif new is None:
            change = "not run"
        elif new > old:
            change = "improved"
        elif new < old:
            change = "regressed"
        else:
            change = "unchanged"
        changes.append(CaseChange(agent=key[0], case=key[1], change=change, before=old, after=new))
    return changes


def format_comparison(changes: list[CaseChange], previous: EvalRun, current: EvalRun) -> str:
    """The cases whose pass rate moved (or that appeared or were not run), then the totals."""

    def rate(value: float | None) -> str:
        return "-" if value is None else _percent(value)

    lines = [f"compared with {previous.model} at {previous.started_at:%Y-%m-%d %H:%M}:"]
    moved = [change for change in changes if change.change != "unchanged"]
    width = max((len(f"{c.agent}/{c.case}") for c in moved), default=0)
    for change in moved:
        name = f"{change.agent}/{change.case}".ljust(width)
        lines.append(f"  {name}  {rate(change.before):>4} -> {rate(change.after):>4}  {change.change}")
    before_rates = {suite.agent: suite.pass_rate for suite in previous.suites}
    for suite in current.suites:
        if suite.agent in before_rates:
            lines.append(
                f"  {suite.agent}: {_percent(before_rates[suite.agent])} -> {_percent(suite.pass_rate)}"
            )
    counts = {kind: sum(change.change == kind for change in changes) for kind in _CHANGE_ORDER}
    lines.append(
        ", ".join(f"{counts[kind]} {kind}" for kind in _CHANGE_ORDER if counts[kind] or kind in _ALWAYS)
    )
    return "\n".join(lines)


_CHANGE_ORDER: tuple[Change, ...] = ("improved", "regressed", "unchanged", "new", "not run")
_ALWAYS = ("improved", "regressed", "unchanged")
