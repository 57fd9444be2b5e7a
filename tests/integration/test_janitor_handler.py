"""The janitor function on events/janitor-ttl-expiry.json, against moto.

The TTL sweep is DynamoDB's own and does not run in moto: a test deletes META the way it does and
hands the janitor the sweep's stream record (the sample, aimed at the thread). The table's stream is
switched on as the template declares it, so the records moto streams for the same writes show the
sample's keys are the ones the table emits, and give the janitor real non-TTL records to ignore.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from tests.integration.conftest import REGION
from tests.integration.stack import SAMPLE_THREAD_ID, sample
from twelvefactor import runtime
from twelvefactor.adapters.ports import PendingWait, ThreadMeta, ThreadStore
from twelvefactor.commands.invoke import LocalContext, load_handler
from twelvefactor.core.channels import SlackRef
from twelvefactor.core.events import Done, DoneData, ToolResult, ToolResultData, UserMessage, UserMessageData
from twelvefactor.local.template import Template

pytestmark = pytest.mark.integration

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
GONE = "a1b2c3d4e5f60718293a4b5c6d7e8f90"  # the thread whose META the sweep removes
KEPT = "0a9b8c7d6e5f40312f1e0d9c8b7a6958"  # a neighbour that must not be touched
LARGE_RESULT = "q" * 40_000  # above the default offload threshold: lands in S3


def slack_key(thread_id: str) -> str:
    return SlackRef(team_id="T1", channel_id="C1", thread_ts=f"1700000000.{thread_id[:6]}").correlation_key


def ttl_expiry(thread_id: str) -> dict[str, Any]:
    """The sample, aimed at this thread's META."""
    event: dict[str, Any] = json.loads(
        json.dumps(sample("janitor-ttl-expiry")).replace(SAMPLE_THREAD_ID, thread_id)
    )
    return event


class Table:
    """The thread table as DynamoDB holds it, and its stream as Lambda would deliver it."""

    def __init__(self, name: str, bucket: str) -> None:
        self.name = name
        self.bucket = bucket
        self.dynamodb = boto3.client("dynamodb", region_name=REGION)
        self.streams = boto3.client("dynamodbstreams", region_name=REGION)
        self.s3 = boto3.client("s3", region_name=REGION)
        self.stream_arn = self.dynamodb.describe_table(TableName=name)["Table"]["LatestStreamArn"]

    def item_keys(self) -> set[tuple[str, str]]:
        pages = self.dynamodb.get_paginator("scan").paginate(
            TableName=self.name, ProjectionExpression="pk, sk"
        )
        return {(item["pk"]["S"], item["sk"]["S"]) for page in pages for item in page["Items"]}

    def payloads(self) -> set[str]:
        return {obj["Key"] for obj in self.s3.list_objects_v2(Bucket=self.bucket).get("Contents", [])}

    def delete_meta(self, thread_id: str) -> None:
        self.dynamodb.delete_item(
            TableName=self.name, Key={"pk": {"S": f"THREAD#{thread_id}"}, "sk": {"S": "META"}}
        )

    def stream_records(self) -> list[dict[str, Any]]:
        """Every record streamed so far, in the shape of a Lambda event's Records."""
        shards = self.streams.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]["Shards"]
        records: list[dict[str, Any]] = []
        for shard in shards:
            iterator = self.streams.get_shard_iterator(
                StreamArn=self.stream_arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            for record in self.streams.get_records(ShardIterator=iterator)["Records"]:
                change: dict[str, Any] = dict(record["dynamodb"])
                # The SDK parses the time; Lambda passes the epoch seconds along.
                change["ApproximateCreationDateTime"] = int(change["ApproximateCreationDateTime"].timestamp())
                records.append({**record, "dynamodb": change, "eventSourceARN": self.stream_arn})
        return records


@pytest.fixture
def table(template: Template, threads_table: str, payload_bucket: str) -> Table:
    # Given the stream the template declares on ThreadsTable
    view = template["Resources"]["ThreadsTable"]["Properties"]["StreamSpecification"]["StreamViewType"]
    boto3.client("dynamodb", region_name=REGION).update_table(
        TableName=threads_table, StreamSpecification={"StreamEnabled": True, "StreamViewType": view}
    )
    return Table(threads_table, payload_bucket)


Janitor = Callable[[dict[str, Any]], Any]


@pytest.fixture
def janitor(monkeypatch: pytest.MonkeyPatch, template: Template, table: Table) -> Iterator[Janitor]:
    """functions/janitor/app.py, imported as Lambda does: after its environment is in place."""
    monkeypatch.setenv("THREADS_TABLE", table.name)
    monkeypatch.setenv("PAYLOAD_BUCKET", table.bucket)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "twelvefactor-test")
    runtime.reset()
    handler = load_handler(template, "JanitorFunction")
    try:
        yield lambda event: handler(copy.deepcopy(event), LocalContext(function_name="JanitorFunction"))
    finally:
        runtime.reset()


@pytest.fixture
def store(janitor: Janitor) -> ThreadStore:
    return runtime.current().store


def finished_thread(store: ThreadStore, thread_id: str) -> None:
    """A done thread with an offloaded tool result, a Slack link and a wait a crash left behind."""
    store.create(
        ThreadMeta(thread_id=thread_id, agent="deploybot", created_at=T0),
        [UserMessage(at=T0, data=UserMessageData(text="deploy v1.2.3"))],
    )
    store.link(slack_key(thread_id), thread_id)
    store.save_wait(
        PendingWait(
            thread_id=thread_id,
            task_token="token",
            callback_id=f"cb-{thread_id}",
            kind="approval",
            deadline=T0 + timedelta(days=1),
        )
    )
    store.append(
        thread_id,
        [
            ToolResult(
                at=T0, data=ToolResultData(call_id="call-1", intent="list_git_tags", result=LARGE_RESULT)
            ),
            Done(at=T0, data=DoneData(message="Deployed.")),
        ],
    )


def traces(table: Table, thread_id: str) -> set[str]:
    """What is left of a thread: its items, its link and its payloads."""
    items = {
        f"{pk}/{sk}" for pk, sk in table.item_keys() if pk in (f"THREAD#{thread_id}", slack_key(thread_id))
    }
    return items | {key for key in table.payloads() if key.startswith(f"threads/{thread_id}/")}


def test_the_ttl_expiry_of_meta_purges_every_trace_of_the_thread(
    janitor: Janitor, store: ThreadStore, table: Table
) -> None:
    # Given a finished thread whose META carries its expiry, next to another finished thread
    finished_thread(store, GONE)
    finished_thread(store, KEPT)
    assert {"expires_at", "pk"} <= set(
        table.dynamodb.get_item(
            TableName=table.name, Key={"pk": {"S": f"THREAD#{GONE}"}, "sk": {"S": "META"}}
        )["Item"]
    )
    kept = traces(table, KEPT)
    assert any(key.startswith("threads/") for key in traces(table, GONE)), "the large result is in S3"

    # When the TTL sweep deletes its META and the janitor gets the sweep's record
    table.delete_meta(GONE)
    result = janitor(ttl_expiry(GONE))

    # Then nothing of that thread is left (items, link, payload), the neighbour is whole, and no record failed
    assert result == {"batchItemFailures": []}
    assert traces(table, GONE) == set()
    assert store.find_linked(slack_key(GONE)) is None
    assert traces(table, KEPT) == kept
    assert store.load(KEPT)[1].events[-1].type == "done"
    # And the sample's record is the one this table streams for that removal, bar the sweep's identity
    expected = ttl_expiry(GONE)["Records"][0]
    removal = next(
        record
        for record in table.stream_records()
        if record["eventName"] == "REMOVE" and record["dynamodb"]["Keys"] == expected["dynamodb"]["Keys"]
    )
    assert removal["dynamodb"]["Keys"] == expected["dynamodb"]["Keys"]
    assert removal["dynamodb"]["StreamViewType"] == expected["dynamodb"]["StreamViewType"]
    assert "userIdentity" not in removal


def test_a_replayed_expiry_is_harmless(janitor: Janitor, store: ThreadStore, table: Table) -> None:
    # Given a thread already purged after its expiry, and another thread
    finished_thread(store, GONE)
    finished_thread(store, KEPT)
    kept = traces(table, KEPT)
    table.delete_meta(GONE)
    janitor(ttl_expiry(GONE))

    # When Lambda delivers the same record again
    result = janitor(ttl_expiry(GONE))

    # Then it succeeds and changes nothing
    assert result == {"batchItemFailures": []}
    assert traces(table, GONE) == set()
    assert traces(table, KEPT) == kept


def test_the_tables_other_changes_are_ignored(janitor: Janitor, store: ThreadStore, table: Table) -> None:
    # Given a thread's whole life on the stream (creation, link, wait, appends), then an operator
    # deleting its META by hand: removals and updates, but none by the TTL sweep
    finished_thread(store, GONE)
    store.clear_wait(GONE)
    before = traces(table, GONE)
    table.delete_meta(GONE)
    records = table.stream_records()
    assert {record["eventName"] for record in records} == {"INSERT", "MODIFY", "REMOVE"}

    # When the janitor gets all of those records
    result = janitor({"Records": records})

    # Then none of them purged anything: only META is gone, by the operator's hand
    assert result == {"batchItemFailures": []}
    assert traces(table, GONE) == before - {f"THREAD#{GONE}/META"}


def _without_identity(record: dict[str, Any]) -> None:
    del record["userIdentity"]  # a person's or a function's delete


def _another_service(record: dict[str, Any]) -> None:
    record["userIdentity"]["principalId"] = "backup.amazonaws.com"


def _an_update(record: dict[str, Any]) -> None:
    record["eventName"] = "MODIFY"


def _another_item(record: dict[str, Any]) -> None:
    record["dynamodb"]["Keys"]["sk"]["S"] = "WAIT"


@pytest.mark.parametrize("change", [_without_identity, _another_service, _an_update, _another_item])
def test_a_record_that_is_not_the_sweep_removing_meta_purges_nothing(
    janitor: Janitor, store: ThreadStore, table: Table, change: Callable[[dict[str, Any]], None]
) -> None:
    # Given a live-looking finished thread, and a record that differs from a TTL expiry of its META in one way
    finished_thread(store, GONE)
    before = traces(table, GONE)
    event = ttl_expiry(GONE)
    change(event["Records"][0])

    # When the janitor gets it
    result = janitor(event)

    # Then the thread is untouched and the record is not reported as failed (retrying cannot help)
    assert result == {"batchItemFailures": []}
    assert traces(table, GONE) == before
    assert store.load(GONE)[1].events[-1].type == "done"


def test_a_purge_that_fails_fails_the_batch_and_its_retry_finishes_the_job(
    janitor: Janitor, store: ThreadStore, table: Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an expired thread, and a janitor whose S3 calls fail (here: a bucket that is not there)
    finished_thread(store, GONE)
    table.delete_meta(GONE)
    monkeypatch.setenv("PAYLOAD_BUCKET", "twelvefactor-test-missing-bucket")
    runtime.reset()

    # When the janitor gets the expiry, then the batch fails (Lambda retries, bisecting) and the items remain
    with pytest.raises(BatchProcessingError):
        janitor(ttl_expiry(GONE))
    assert f"THREAD#{GONE}/EVENT#0000000001" in traces(table, GONE)

    # When S3 answers again and Lambda redelivers the record
    monkeypatch.setenv("PAYLOAD_BUCKET", table.bucket)
    runtime.reset()
    result = janitor(ttl_expiry(GONE))

    # Then the purge that was cut short is finished
    assert result == {"batchItemFailures": []}
    assert traces(table, GONE) == set()
