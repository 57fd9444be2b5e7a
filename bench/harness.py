"""What every figure needs: sizes for a full or a smoke run, the two interpreters, the stack."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.stack import Stack, quiet_collector, worker_environment

if TYPE_CHECKING:
    from bench.builds import Builds

ROOT = Path(__file__).resolve().parents[1]
PEER_VENV = ROOT / "bench" / ".venv"
WORKER_TIMEOUT_SECONDS = 1_800


class WorkerFailed(RuntimeError):
    pass


@dataclass
class Harness:
    smoke: bool
    stack: Stack
    ours_python: str = sys.executable
    peer_python: str | None = None
    # Why the peer is missing, when it is.
    peer_missing: str = ""
    scratch: Path | None = None  # where the Lambda-shaped builds go (set by bench.run)
    _builds: Builds | None = None

    @classmethod
    def create(cls, *, smoke: bool, stack: Stack) -> Harness:
        python = PEER_VENV / "bin" / "python"
        if python.exists():
            return cls(smoke=smoke, stack=stack, peer_python=str(python))
        return cls(smoke=smoke, stack=stack, peer_missing="bench/.venv is not installed (run `make bench`)")

    def builds(self) -> Builds:
        """Both sides built for the Lambda runtime, once per run (figures 1 and 6 share them)."""
        if self._builds is None:
            from bench.builds import build

            assert self.scratch is not None, "bench.run sets a scratch folder"
            print("building both sides for python3.12 (pip downloads wheels)...", file=sys.stderr, flush=True)
            self._builds = build(self.scratch)
        return self._builds

    @property
    def has_peer(self) -> bool:
        return self.peer_python is not None

    def worker(self, side: str, spec: dict[str, Any], tables: dict[str, str]) -> dict[str, Any]:
        """Run `bench.ours_worker` or the peer's worker in a fresh process against this stack."""
        python, module = (
            (self.ours_python, "bench.ours_worker")
            if side == "ours"
            else (self.peer_python, "bench.peers.langgraph_worker")
        )
        if python is None:
            raise WorkerFailed(self.peer_missing)
        env = worker_environment(self.stack.environment(tables))
        with quiet_collector() as pauses:
            result: dict[str, Any] = self.run_json([python, "-m", module, json.dumps(spec)], env=env)
        result["stand_in_collections"] = pauses.as_dict()
        return result

    def run_json(self, command: list[str], *, env: dict[str, str] | None = None, stdin: str = "") -> Any:
        done = subprocess.run(
            command,
            input=stdin,
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=WORKER_TIMEOUT_SECONDS,
            check=False,
        )
        if done.returncode != 0:
            raise WorkerFailed(f"{' '.join(command[:3])} failed ({done.returncode}):\n{done.stderr[-4000:]}")
        try:
            return json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise WorkerFailed(f"{' '.join(command[:3])} printed no JSON:\n{done.stdout[-2000:]}") from None

    def count_tokens(self, texts: list[str]) -> tuple[list[int], str]:
        """o200k_base counts from bench/.venv; without it, a labelled estimate (4 characters a token)."""
        if self.peer_python is None:
            return [
                max(1, len(text) // 4) for text in texts
            ], "estimate: characters / 4 (bench/.venv missing)"
        answer = self.run_json(
            [self.peer_python, "-m", "bench.tokenizer"], stdin=json.dumps({"texts": texts})
        )
        return answer["counts"], answer["encoding"]
