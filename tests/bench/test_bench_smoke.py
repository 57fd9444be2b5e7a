"""`make bench-smoke` inside `make test`: every figure of the benchmark runs once, on tiny sizes.

No timing is asserted (the machine is shared); what must hold is that the harness still measures
our side of every figure, end to end, so `make bench` cannot rot between full runs. The LangGraph
peer joins in only where bench/.venv is installed.
"""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIGURES = {
    1: "Cold start",
    2: "Framework overhead per step",
    3: "Storage growth",
    4: "Context tokens",
    5: "Throughput on the local stack",
    6: "Package size",
    7: "Embedded model",
    8: "Prompt-cache prefix stability",
}
# A row of our side in each figure's first table, with a measured number in it.
OUR_ROWS = {
    1: r"\| reducer \| [\d.]+ ms",
    2: r"\| twelvefactor \| [\d.]+ ms",
    3: r"\| 5 \| [\d.]+ (B|KiB)",
    4: r"\| 5 \| \d+ \| \d+ \|",
    5: r"\| 2 \| [\d.]+ \|",
    6: r"\| twelvefactor layer \+ functions .*\| [\d.]+ (KiB|MiB) \|",
    7: r"\| first \(cold prompt cache\): 1 \| [\d.]+ s",
    8: r"\| 5 \| ours \| \d+ \| [\d.]+ \|",
}
# Figures with a second table of our side: figure 7's tasks, before and after the control flow.
OUR_EXTRA_ROWS = {
    7: r"\| after \| [01]/1 \| \d+ \(\d+.\d+\) \| \d+ \| ([\d.]+%|n/a) \|",
}


def sections(report: str) -> dict[int, str]:
    found = {}
    for block in report.split("\n## ")[1:]:
        number, _, rest = block.partition(". ")
        found[int(number)] = rest
    return found


def test_every_figure_runs_once_and_reports_our_side(tmp_path: Path) -> None:
    # Given the harness and a place for its report
    out = tmp_path / "benchmarks.md"

    # When the smoke run measures every figure once
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )

    # Then it succeeds, and each figure has its section with our side measured in it
    assert done.returncode == 0, done.stderr[-4000:]
    report = out.read_text(encoding="utf-8")
    found = sections(report)
    assert sorted(found) == sorted(FIGURES)
    for number, title in FIGURES.items():
        assert found[number].startswith(title), number
        assert re.search(OUR_ROWS[number], found[number]), (
            f"figure {number} has no measured row:\n{found[number]}"
        )
        if number in OUR_EXTRA_ROWS:
            assert re.search(OUR_EXTRA_ROWS[number], found[number]), (
                f"figure {number} has no measured row in its second table:\n{found[number]}"
            )
    # And the throughput check found every event exactly once
    assert "**MISSED**: zero lost or duplicated events" not in report
    assert "Failed in this run" not in report
