"""Where a step's time goes, for a missed target: one side's figure-2 turns under pyinstrument.

    python -m bench.profile                 # our side, text profile on stdout
    python -m bench.profile --side peer     # the LangGraph peer (needs bench/.venv)

The worker runs exactly as in figure 2 (same stack, same scenario, after a warm-up turn).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.harness import PEER_VENV, ROOT
from bench.stack import running_stack, worker_environment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--side", choices=("ours", "peer"), default="ours")
    parser.add_argument("--threads", type=int, default=5)
    parser.add_argument("--turns", type=int, default=3)
    args = parser.parse_args(argv)
    python, module = (
        (sys.executable, "bench.ours_worker")
        if args.side == "ours"
        else (str(PEER_VENV / "bin" / "python"), "bench.peers.langgraph_worker")
    )
    spec = json.dumps({"threads": args.threads, "turns": args.turns, "prefix": "profile", "warmup": True})
    with running_stack() as stack, tempfile.TemporaryDirectory() as scratch:
        env = worker_environment(stack.environment(stack.new_tables()))
        output = Path(scratch) / "profile.txt"
        command = [python, "-m", "pyinstrument", "-r", "text", "-o", str(output), "-m", module, spec]
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(done.stderr[-4000:], file=sys.stderr)
            return done.returncode
        print(output.read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
