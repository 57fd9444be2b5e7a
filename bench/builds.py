"""What each side would deploy, built for the Lambda runtime (python3.12, manylinux x86_64 wheels).

Figure 1 imports the handlers from these folders with a Python 3.12 interpreter and nothing else on
its path (as Lambda does: the layer, the function's code, the runtime's boto3), so packages that
only the development venv holds cannot slow our side down or help it; figure 6 measures their size.
"""

from __future__ import annotations

import glob
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.harness import ROOT

# The same list layers/Makefile strips from our layer: the Lambda runtime ships these.
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer")
WHEELS = [
    "--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:",
    "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64",
]  # fmt: skip
BUILD_TIMEOUT_SECONDS = 900


@dataclass(frozen=True)
class Builds:
    ours: Path  # the layer's content: python/ (packages) and prompts/
    peer: Path  # the LangGraph stack and the peer's handler module, as one flat folder
    runtime: Path  # boto3 and its dependencies, standing in for the Lambda runtime's own copy

    @property
    def ours_path(self) -> Path:
        return self.ours / "python"


def python312() -> str | None:
    """The Lambda runtime's Python, if this machine has it (pyenv's shim needs PYENV_VERSION)."""
    candidates = [
        shutil.which("python3.12"),
        *sorted(glob.glob(str(Path.home() / ".pyenv/versions/3.12*/bin/python3.12"))),
    ]
    for candidate in candidates:
        if (
            candidate
            and subprocess.run([candidate, "-c", "pass"], capture_output=True, check=False).returncode == 0
        ):
            return candidate
    return None


def build(scratch: Path) -> Builds:
    builds = Builds(ours=scratch / "ours", peer=scratch / "peer", runtime=scratch / "runtime")
    _run(
        ["make", "--no-print-directory", "-f", str(ROOT / "layers" / "Makefile"), "build-TwelvefactorLayer",
         f"ARTIFACTS_DIR={builds.ours}", f"PYTHON={sys.executable}"],
    )  # fmt: skip
    _pip_install(builds.peer, ["--requirement", str(ROOT / "bench" / "requirements-peer.txt")])
    for package in RUNTIME_PROVIDED:
        for found in builds.peer.glob(f"{package}*"):
            if found.name == package or found.name.startswith(f"{package}-"):
                shutil.rmtree(found)
    shutil.copy(ROOT / "bench" / "peers" / "langgraph_deploybot.py", builds.peer / "langgraph_deploybot.py")
    _pip_install(builds.runtime, ["boto3"])
    return builds


def _pip_install(target: Path, arguments: list[str]) -> None:
    _run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input",
         "--no-compile", "--target", str(target), *WHEELS, *arguments],
    )  # fmt: skip


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_SECONDS, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:6])} ... failed:\n{done.stderr[-3000:]}")
