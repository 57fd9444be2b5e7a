"""checkov's security checks (IAM least privilege, encryption, public access, ...) over the
CloudFormation `sam deploy` creates, with every accepted finding listed in checkov-suppressions.yaml
with its reason.

checkov runs from its own virtual environment (`make lint-security` creates it; `make test` runs that
first): its pinned boto3 and botocore are older than the ones the application is tested with, so it
cannot share the dev environment (see pyproject.toml's `security` extra).
"""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from twelvefactor.local.template import load_template, transformed_template

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHECKOV = ROOT / ".venv-security" / "bin" / "checkov"
SUPPRESSIONS = ROOT / "checkov-suppressions.yaml"


def checkov(template: dict[str, Any], directory: Path) -> dict[str, Any]:
    """checkov's JSON report on a CloudFormation template, offline."""
    assert CHECKOV.exists(), f"{CHECKOV} is missing: `make lint-security` (run by `make test`) installs it"
    path = directory / "deployed.json"
    path.write_text(json.dumps(template), encoding="utf-8")
    options = ["--framework", "cloudformation", "--output", "json", "--quiet", "--skip-download", "--compact"]
    result = subprocess.run(
        [str(CHECKOV), "--file", str(path), *options],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    assert result.returncode in (0, 1), result.stderr  # 1: some check failed
    report: dict[str, Any] = json.loads(result.stdout)
    assert report["summary"]["parsing_errors"] == 0
    return report


@pytest.fixture(scope="module")
def suppressions() -> dict[str, dict[str, Any]]:
    loaded: dict[str, dict[str, Any]] = yaml.safe_load(SUPPRESSIONS.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def findings(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """checkov's failed checks on the transformed template (every Fn::If branch's resources in it)."""
    deployed = transformed_template(
        load_template(ROOT / "template.yaml"),
        {"LayerCodeSha256": "0" * 64, "InboundEmailRecipients": "agent@example.com"},
    )
    report = checkov(deployed, tmp_path_factory.mktemp("checkov"))
    assert report["summary"]["passed"] > 0
    failed: list[dict[str, Any]] = report["results"]["failed_checks"]
    return failed


def _suppressed(finding: dict[str, Any], suppressions: dict[str, dict[str, Any]]) -> bool:
    entry = suppressions.get(finding["check_id"])
    return entry is not None and any(
        fnmatch.fnmatchcase(finding["resource"], pattern) for pattern in entry["resources"]
    )


def test_every_suppression_says_why(suppressions: dict[str, dict[str, Any]]) -> None:
    for check_id, entry in suppressions.items():
        assert len(str(entry.get("reason", "")).split()) >= 8, f"{check_id} needs a reason"
        assert entry.get("resources"), f"{check_id} must name the resources it accepts"


def test_checkov_finds_nothing_beyond_the_accepted_findings(
    findings: list[dict[str, Any]], suppressions: dict[str, dict[str, Any]]
) -> None:
    # Given checkov's findings on what would be deployed
    # Then each is one accepted with its reason, and each accepted one still occurs (none is stale)
    unexplained = [
        f"{finding['check_id']} {finding['resource']}: {finding['check_name']}"
        for finding in findings
        if not _suppressed(finding, suppressions)
    ]
    assert unexplained == [], "\n".join(unexplained)
    used = {finding["check_id"] for finding in findings}
    assert set(suppressions) <= used, f"stale suppressions: {set(suppressions) - used}"


def test_checkov_would_catch_a_public_bucket(tmp_path: Path, suppressions: dict[str, dict[str, Any]]) -> None:
    # Given the template with the payload bucket's public access block removed
    deployed = transformed_template(load_template(ROOT / "template.yaml"), {"LayerCodeSha256": "0" * 64})
    del deployed["Resources"]["PayloadBucket"]["Properties"]["PublicAccessBlockConfiguration"]
    # When checkov checks it
    failed = checkov(deployed, tmp_path)["results"]["failed_checks"]
    # Then the lint fails on it, and no suppression hides it
    public = [
        f
        for f in failed
        if f["resource"] == "AWS::S3::Bucket.PayloadBucket" and not _suppressed(f, suppressions)
    ]
    assert public, "checkov no longer notices a bucket without a public access block"
