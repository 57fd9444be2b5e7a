"""docs/writing-agents.md, followed literally: every ```sh block, in order, in a fresh copy of the
repository, with the project's environment on PATH. A block that starts with "# in a second
terminal" runs in the background (the local stack) until the test ends, as a person would leave it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import poll_until

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "writing-agents.md"
BACKGROUND = "# in a second terminal"
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks() -> list[str]:
    return BLOCK.findall(DOC.read_text(encoding="utf-8"))


@pytest.fixture
def fresh_copy(tmp_path: Path) -> Path:
    """The repository's files as a clone would have them (tracked, and new files not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    copy = tmp_path / "repo"
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    return copy


@pytest.fixture
def shell_env(fresh_copy: Path) -> dict[str, str]:
    """What `. .venv/bin/activate` gives in that copy: the project's tools first on PATH, and the
    copy's own packages imported (the editable install points at the checkout it was made in)."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("TWELVEFACTOR_", "OPENAI_", "LLM_", "PROMPTS_DIR"))
    }
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"
    environment["PYTHONPATH"] = str(fresh_copy / "layers")
    return environment


@pytest.fixture
def background(fresh_copy: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_the_guide_runs_as_written_in_a_fresh_copy(
    fresh_copy: Path, shell_env: dict[str, str], background: list[subprocess.Popen[bytes]]
) -> None:
    # Given the guide's commands and a copy of the repository with no tracker agent
    commands = blocks()
    assert commands[0].strip() == "twelvefactor new agent tracker"
    assert not (fresh_copy / "layers/agents/tracker.py").exists()
    log = fresh_copy.parent / "background.log"

    # When each block runs in order, as bash would run it pasted into a terminal
    outputs = []
    for script in commands:
        if script.startswith(BACKGROUND):
            with log.open("wb") as sink:
                background.append(
                    subprocess.Popen(
                        ["bash", "-c", script],
                        cwd=fresh_copy,
                        env=shell_env,
                        stdout=sink,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            port = re.search(r"--port (\d+)", script)
            assert port is not None, "the guide's local stack must name its API port"
            threads_url = f"http://127.0.0.1:{port.group(1)}/threads"
            poll_until(
                lambda url=threads_url: _answers(url),
                lambda ok: ok or background[-1].poll() is not None,
                timeout=300,
            )
            assert background[-1].poll() is None, log.read_text(errors="replace")
            continue
        done = subprocess.run(
            ["bash", "-e", "-c", script],
            cwd=fresh_copy,
            env=shell_env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        # Then every block succeeds
        assert done.returncode == 0, f"{script}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        outputs.append(done.stdout)

    # ... the scaffold's printed lines are the ones the guide shows
    shown = DOC.read_text(encoding="utf-8").split("```text\n", 1)[1].split("```", 1)[0]
    assert outputs[0].startswith(shown)
    # ... the agent is registered, its prompt renders with its tools, and the launch reached the API
    assert "from .tracker import build_tracker" in (fresh_copy / "layers/agents/__init__.py").read_text()
    assert "- create_issue(title: string, body: string)" in outputs[4]
    assert "1 passed" in outputs[5]
    assert "tracker" in outputs[6]
    # ... and the code the guide has a reader write passes the project's linters
    ruff = Path(sys.executable).parent / "ruff"
    for check in (["check"], ["format", "--check"]):
        linted = subprocess.run(
            [ruff, *check, "layers/agents", "tests/unit/test_tracker.py"],
            cwd=fresh_copy,
            capture_output=True,
            text=True,
            check=False,
        )
        assert linted.returncode == 0, linted.stdout + linted.stderr


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
