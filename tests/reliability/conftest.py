"""The reliability suite's fixtures, and the plugin that records its figures.

Every test here belongs to a scenario (``pytestmark = pytest.mark.scenario("Concurrency")``), says
in its docstring what it checks, and counts its cases with the `cases` fixture. The plugin keeps
one row per test with its outcome; at the end of a session that ran the whole suite it saves the rows to
.cache/reliability/results.json, from which `make reliability-report` writes docs/reliability.md.
A regression test names the defect it guards with ``@pytest.mark.fixes("...")``; a known defect
still open is an ``xfail(strict=True, reason=...)`` and is listed as open.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.integration.conftest import (  # noqa: F401 - fixtures shared with the integration tests
    REGION,
    aws,
    idempotency_table,
    payload_bucket,
    template,
    threads_table,
)
from tests.integration.stack import Stack, stack_fixture, webhook_receiver_fixture  # noqa: F401 - fixtures
from tests.moto_requests import atomic_requests_fixture, aws_requests_fixture  # noqa: F401 - fixtures
from tests.reliability import report
from tests.reliability.support import (
    AGENT_ADDRESS,
    ALLOWED_SENDER,
    APPROVER,
    SLACK_SECRET,
)
from twelvefactor.local.slack_standin import SlackStandIn

HERE = Path(__file__).resolve().parent
_ROWS = pytest.StashKey["Row"]()
_STATE = pytest.StashKey["SuiteState"]()


@dataclass
class Row:
    area: str
    test: str
    checked: str
    cases: int = 0
    outcome: str = "not run"
    fixes: str | None = None
    open_reason: str | None = None


@dataclass
class SuiteState:
    rows: dict[str, Row]
    deselected: bool = False


class Cases:
    """How many inputs a check exercised; the figure the report shows next to the check."""

    def __init__(self, row: Row) -> None:
        self._row = row

    def add(self, count: int = 1) -> None:
        self._row.cases += count

    @property
    def count(self) -> int:
        return self._row.cases


@pytest.fixture
def slack(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[SlackStandIn]:
    """The stack with Slack and email configured as deployed: a signing secret, a bot token for the
    Slack stand-in, one allowed approver, one allowed email sender and a verified SES identity.
    Yields the stand-in, whose `calls` are what the agent posted to Slack."""
    with SlackStandIn() as standin:
        for name, value in {
            "SLACK_SIGNING_SECRET": SLACK_SECRET,
            "SLACK_BOT_TOKEN": "xoxb-reliability-token",
            "SLACK_API_BASE_URL": standin.base_url,
            "SLACK_ALLOWED_RESPONDERS": APPROVER,
            "SLACK_DEFAULT_AGENT": "deploybot",
            "EMAIL_ALLOWED_SENDERS": ALLOWED_SENDER,
            "EMAIL_FROM_ADDRESS": AGENT_ADDRESS,
            "EMAIL_DEFAULT_AGENT": "deploybot",
        }.items():
            monkeypatch.setenv(name, value)
        boto3.client("ses", region_name=REGION).verify_email_identity(EmailAddress=AGENT_ADDRESS)
        stack.script()  # a fresh runtime that reads the settings above
        yield standin


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "scenario(area): the reliability scenario a test belongs to")
    config.addinivalue_line("markers", "fixes(defect): the product defect this reliability test guards")
    config.stash[_STATE] = SuiteState(rows={})


def _ours(item: pytest.Item) -> bool:
    return HERE in Path(item.path).parents


def pytest_deselected(items: list[pytest.Item]) -> None:
    if items and any(_ours(item) for item in items):
        items[0].config.stash[_STATE].deselected = True


def pytest_collection_finish(session: pytest.Session) -> None:
    state = session.config.stash[_STATE]
    for item in session.items:
        if not _ours(item):
            continue
        scenario = item.get_closest_marker("scenario")
        function = getattr(item, "function", None)
        doc = (getattr(function, "__doc__", None) or "").strip()
        if scenario is None or not doc:
            raise pytest.UsageError(
                f"{item.nodeid}: a reliability test needs a scenario marker and a docstring"
            )
        fixes = item.get_closest_marker("fixes")
        row = Row(
            area=str(scenario.args[0]),
            test=item.name,
            checked=doc.split("\n\n")[0],
            fixes=str(fixes.args[0]) if fixes else None,
        )
        item.stash[_ROWS] = row
        state.rows[item.nodeid] = row


@pytest.fixture
def cases(request: pytest.FixtureRequest) -> Cases:
    return Cases(request.node.stash[_ROWS])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    result: pytest.TestReport = outcome.get_result()
    row = item.stash.get(_ROWS, None)
    if row is None:
        return
    xfail = getattr(result, "wasxfail", None)
    if result.when == "call":
        if xfail is not None:
            row.outcome = "open" if result.skipped else "fixed-unexpectedly"
            row.open_reason = xfail or None
        else:
            row.outcome = result.outcome
    elif result.failed:
        row.outcome = "error"
    elif result.skipped and result.when == "setup":
        row.outcome = "skipped"


def _complete(session: pytest.Session, state: SuiteState) -> bool:
    """Whether the run covered every test of the suite: only then may it rewrite the page."""
    collected = {Path(item.path) for item in session.items if _ours(item)}
    modules = set(HERE.glob("test_*.py"))
    ran_all = all(row.outcome != "not run" for row in state.rows.values())
    return bool(state.rows) and collected == modules and not state.deselected and ran_all


def _environment() -> dict[str, str]:
    versions = {"Python": platform.python_version()}
    for package in ("moto", "hypothesis", "schemathesis", "aws-lambda-powertools", "httpx"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session.config.stash.get(_STATE, None)
    if state is None or not state.rows:
        return
    results: dict[str, Any] = {
        "complete": _complete(session, state),
        "environment": _environment(),
        "rows": [asdict(row) for row in state.rows.values()],
    }
    if not results["complete"]:
        return  # a partial run (e.g. `make soak`'s Hypothesis suites) keeps the last whole run's results
    # The tracked page is written by `make reliability-report`, never by a test run.
    report.RESULTS.parent.mkdir(parents=True, exist_ok=True)
    report.RESULTS.write_text(json.dumps(results, indent=2), encoding="utf-8")
