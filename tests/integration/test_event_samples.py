"""Every sample in events/ is exercised by a test and has the shape its trigger sends.

The samples are the contract with `sam local invoke -e` and `twelvefactor invoke`: a sample no
test runs can rot unnoticed, so this module fails when one is added without a test using it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "events").glob("*.json"))
TEST_SOURCES = "\n".join(
    path.read_text() for path in (ROOT / "tests").rglob("test_*.py") if path.name != Path(__file__).name
)
API_GATEWAY_KEYS = {"resource", "path", "httpMethod", "headers", "requestContext", "body", "isBase64Encoded"}


def _used_by_a_test(sample: Path) -> bool:
    # Tests name a sample by file name or by stem (helpers add the suffix).
    return sample.name in TEST_SOURCES or f'"{sample.stem}"' in TEST_SOURCES


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda path: path.stem)
def test_each_sample_is_run_by_some_test(sample: Path) -> None:
    assert _used_by_a_test(sample), f"no test runs events/{sample.name}"


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda path: path.stem)
def test_each_sample_has_its_triggers_shape(sample: Path) -> None:
    event = json.loads(sample.read_text())
    trigger = sample.stem.split("-")[0]
    if trigger in ("api", "slack"):
        assert set(event) >= API_GATEWAY_KEYS, "an API Gateway REST proxy event"
    elif trigger == "email":
        assert event["Records"][0]["eventSource"] == "aws:ses"
    elif trigger == "eventbridge":
        assert {"id", "detail-type", "source", "detail"} <= set(event)
    elif trigger == "janitor":
        assert event["Records"][0]["eventSource"] == "aws:dynamodb"
    else:
        assert trigger in ("reducer", "notify") and "thread_id" in event
