"""`twelvefactor new agent NAME`: the scaffold writes a runnable, registered agent or nothing."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run(app: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A command in the copied application, with the framework from this checkout."""
    environment = {**os.environ, "PYTHONPATH": f"{app / 'layers'}{os.pathsep}{REPO / 'layers'}"}
    environment.pop("TWELVEFACTOR_AGENTS", None)
    environment.pop("PROMPTS_DIR", None)
    return subprocess.run(
        [sys.executable, *args],
        check=False,
        cwd=app,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def snapshot(app: Path) -> dict[str, str]:
    return {
        str(path.relative_to(app)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(app.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """A copy of the application (agents, prompts, evals): the scaffold writes there, not here."""
    shutil.copytree(REPO / "layers" / "agents", tmp_path / "layers" / "agents")
    shutil.copytree(REPO / "prompts", tmp_path / "prompts")
    shutil.copytree(REPO / "evals", tmp_path / "evals")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_new_agent_writes_a_registered_agent_that_runs(app: Path) -> None:
    # Given the application
    # When a new agent is scaffolded
    made = run(app, "-m", "twelvefactor.cli", "new", "agent", "release_notes")
    # Then its module, prompt, evals and registration exist, and the next steps are printed
    assert made.returncode == 0, made.stderr
    assert (app / "layers/agents/release_notes.py").is_file()
    assert (app / "prompts/release_notes.jinja").is_file()
    assert {p.name for p in (app / "evals/release_notes").iterdir()} == {
        "config.yaml",
        "first_step_looks_up.yaml",
        "result_ends_the_turn.yaml",
    }
    assert "Next steps:" in made.stdout
    assert "twelvefactor eval release_notes" in made.stdout
    # And the application now builds it, with its settings read under its own prefix
    script = (
        "import os, agents\n"
        "os.environ['RELEASE_NOTES_TIMEOUT_SECONDS'] = '3'\n"
        "from agents.release_notes import ReleaseNotesSettings\n"
        "print(agents.build_registry().names, ReleaseNotesSettings().timeout_seconds)\n"
    )
    built = run(app, "-c", script)
    assert built.stdout.strip() == "('deploybot', 'payments', 'oncall', 'release_notes') 3.0", built.stderr
    # And its eval cases load and its prompt renders with the new intent
    exported = run(app, "-m", "twelvefactor.cli", "eval", "release_notes", "--export-threads", "threads")
    assert exported.returncode == 0, exported.stderr
    thread = str(app / "threads" / "first_step_looks_up.json")
    rendered = run(app, "-m", "twelvefactor.cli", "prompt", "render", "release_notes", "--thread", thread)
    assert rendered.returncode == 0, rendered.stderr
    assert "- look_up(query: string)" in rendered.stdout
    # And the written code passes the project's linters
    lint = subprocess.run(
        [Path(sys.executable).parent / "ruff", "check", "--config", str(REPO / "pyproject.toml"), "layers"],
        check=False,
        cwd=app,
        capture_output=True,
        text=True,
    )
    assert lint.returncode == 0, lint.stdout


def test_the_stub_answers_until_a_service_is_set(app: Path) -> None:
    # Given a scaffolded agent and no service URL
    assert run(app, "-m", "twelvefactor.cli", "new", "agent", "tracker").returncode == 0
    script = (
        "from agents.tracker import LookUp, build_tracker\n"
        "from twelvefactor.core.tools import ToolContext\n"
        "tool = build_tracker().tool('look_up')\n"
        "print(tool.execute(LookUp(query='x'), ToolContext(thread_id='t', call_id='c')))\n"
    )
    # When its tool runs
    ran = run(app, "-c", script)
    # Then the stub says it is one
    assert ran.stdout.strip() == "{'query': 'x', 'records': [], 'stub': True}", ran.stderr


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("deploybot", "an agent named 'deploybot' already exists"),
        ("1bad", "is not a valid agent name"),
        ("Oncall", "is not a valid agent name"),
        ("on-call", "is not a valid agent name"),
        ("class", "is not a valid agent name"),
        ("_service", "is not a valid agent name"),
        ("deploybot_", "is not a valid agent name"),
    ],
)
def test_a_taken_or_invalid_name_is_refused_and_nothing_is_written(app: Path, name: str, reason: str) -> None:
    # Given the application as it is
    before = snapshot(app)
    # When the scaffold is asked for a name it must refuse
    refused = run(app, "-m", "twelvefactor.cli", "new", "agent", name)
    # Then it exits 2, says why, and writes nothing
    assert refused.returncode == 2
    assert reason in refused.stderr
    assert "nothing was written" in refused.stderr
    assert snapshot(app) == before


def test_a_name_whose_prompt_already_exists_is_refused(app: Path) -> None:
    # Given a prompt left behind by an agent that is no longer registered
    (app / "prompts" / "ghost.jinja").write_text("old\n", encoding="utf-8")
    before = snapshot(app)
    # When the scaffold is asked for that name
    refused = run(app, "-m", "twelvefactor.cli", "new", "agent", "ghost")
    # Then nothing is overwritten
    assert refused.returncode == 2
    assert "'ghost' is taken: prompts/ghost.jinja already exists" in refused.stderr
    assert snapshot(app) == before
