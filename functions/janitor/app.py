"""Janitor: finishes what DynamoDB's TTL starts on a finished thread.

Only a thread's META item carries ``expires_at`` (see the store's Retention notes), so the TTL sweep
removes META alone; its removal on the table's stream is the cue to purge the thread's events,
wait, correlation links and S3 payloads. The event source mapping already filters the stream down
to those removals; the same test is repeated here because `sam local invoke`, a replayed batch or
an edited filter must never turn a person's delete, or any other change, into a purge.

Purging is idempotent, so a redelivered record (Lambda retries stream batches) is harmless. A purge
that fails is reported as a batch item failure: Lambda retries from that record and, once retries
are spent, hands the batch's position to the failure queue.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import (
    DynamoDBRecord,
    DynamoDBRecordEventName,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from twelvefactor import runtime, tracing
from twelvefactor.settings import StoreSettings

logger = Logger()
tracer = tracing.tracer()
metrics = Metrics(namespace="Twelvefactor")
processor = BatchProcessor(event_type=EventType.DynamoDBStreams)
runtime.current().require(StoreSettings)

# The store's keys for a thread's META item (adapters/dynamodb_store.py), as the stream carries them.
THREAD_PREFIX = "THREAD#"
META = "META"
# How the TTL sweep signs its stream records; a person's or a function's delete carries no such identity.
TTL_SWEEPER = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    records = len(event.get("Records") or [])
    metrics.add_metric(name="JanitorRecords", unit=MetricUnit.Count, value=records)  # first: see reducer
    return process_partial_response(
        event=event, record_handler=purge_expired, processor=processor, context=context
    )


def purge_expired(record: DynamoDBRecord) -> None:
    thread_id = expired_thread_id(record)
    if thread_id is None:
        logger.info("not a TTL expiry of a thread; ignored", extra={"event_id": record.event_id})
        metrics.add_metric(name="JanitorRecordsIgnored", unit=MetricUnit.Count, value=1)
        return
    runtime.current().store.purge(thread_id)
    logger.info("purged expired thread", extra={"thread_id": thread_id})
    metrics.add_metric(name="ThreadsPurged", unit=MetricUnit.Count, value=1)


def expired_thread_id(record: DynamoDBRecord) -> str | None:
    """The thread whose META the TTL sweep removed, or None for any other change."""
    if record.event_name is not DynamoDBRecordEventName.REMOVE or record.dynamodb is None:
        return None
    if {key: record.user_identity.get(key) for key in TTL_SWEEPER} != TTL_SWEEPER:
        return None
    keys = record.dynamodb.keys
    pk, sk = str(keys.get("pk", "")), keys.get("sk")
    if sk != META or not pk.startswith(THREAD_PREFIX):
        return None
    return pk.removeprefix(THREAD_PREFIX)
