"""Shared integration fixtures: in-process moto, and the tables and bucket built from template.yaml.

The resources come from the template's own definitions (key schema, GSI, TTL), so a test that
passes here passes against what `sam deploy` creates, not against a hand-copied schema.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from twelvefactor.local.template import Template, load_template, table_definition, ttl_attribute

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's default account

# Tables and bucket get the names a stack would give them, which also keeps them recognisable in errors.
THREADS_TABLE = "twelvefactor-test-ThreadsTable"
IDEMPOTENCY_TABLE = "twelvefactor-test-IdempotencyTable"
PAYLOAD_BUCKET = "twelvefactor-test-payloadbucket"


@pytest.fixture(scope="session")
def template() -> Template:
    return load_template()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every boto3 client made inside the test talks to moto, in-process; Step Functions really runs ASL."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    # A developer's endpoint or profile must not send test traffic anywhere but moto.
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    config: Any = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
    with mock_aws(config=config):
        yield


def _create_table(template: Template, logical_id: str, name: str) -> str:
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    dynamodb.create_table(**table_definition(template, logical_id, table_name=name))
    dynamodb.get_waiter("table_exists").wait(TableName=name)
    attribute = ttl_attribute(template, logical_id)
    if attribute is not None:
        dynamodb.update_time_to_live(
            TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": attribute}
        )
    return name


@pytest.fixture
def threads_table(aws: None, template: Template) -> str:
    """Name of the thread table, created from template.yaml's ThreadsTable (moto state ends with `aws`)."""
    return _create_table(template, "ThreadsTable", THREADS_TABLE)


@pytest.fixture
def idempotency_table(aws: None, template: Template) -> str:
    """Name of the Powertools idempotency table, created from template.yaml's IdempotencyTable."""
    return _create_table(template, "IdempotencyTable", IDEMPOTENCY_TABLE)


@pytest.fixture
def payload_bucket(aws: None, template: Template) -> str:
    """Name of the payload/inbound-mail bucket (template.yaml's PayloadBucket)."""
    assert template["Resources"]["PayloadBucket"]["Type"] == "AWS::S3::Bucket"
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=PAYLOAD_BUCKET)
    return PAYLOAD_BUCKET


@pytest.fixture
def lose_payloads(payload_bucket: str) -> Callable[[str], int]:
    """Deletes the S3 payloads a thread's big events keep, so that any read of one fails; returns
    how many there were (a test of a path that must not read them checks it had some to lose)."""

    def lose(thread_id: str) -> int:
        s3 = boto3.client("s3", region_name=REGION)
        kept = s3.list_objects_v2(Bucket=payload_bucket, Prefix=f"threads/{thread_id}/").get("Contents", [])
        for stored in kept:
            s3.delete_object(Bucket=payload_bucket, Key=stored["Key"])
        return len(kept)

    return lose
