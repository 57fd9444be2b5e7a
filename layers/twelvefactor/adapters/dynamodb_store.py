"""The thread store on one DynamoDB table: one partition per thread, one item per event.

Items (keys ``pk``/``sk``; index ``gsi1`` on ``gsi1pk``/``gsi1sk``, projecting ALL; TTL on ``expires_at``)::

    THREAD#<id>      / META              agent, created_at, channel (JSON), expires_at once finished;
                                         gsi1pk="THREADS", gsi1sk="<created_at>#<id>" lists threads
    THREAD#<id>      / EVENT#<seq:010d>  type and the event as JSON, or a pointer to its S3 copy
    THREAD#<id>      / WAIT              the pending wait; gsi1pk="CALLBACK#<callback_id>", gsi1sk="WAIT"
    THREAD#<id>      / LINK#<key>        back-reference to a correlation item, so `purge` finds it
    SLACK#.. EMAIL#.. / LINK              thread_id: which thread a Slack thread or email belongs to

Appending puts each new event conditional on its sort key being free (``attribute_not_exists``),
at the sequence number after the last event the writer read. Events are dense, so that condition
alone is the lock: two writers can never take the same sequence number, and a writer whose view is
stale fails on its first put. A move of one event that leaves META alone (almost every step of the
loop) is one PutItem: one write unit on DynamoDB, where a transaction bills two per item. A move of
several events is one TransactWriteItems, so it lands whole or not at all; a move that must change
META (one that ends the thread sets its TTL, a new user message clears it) adds META's update to
that transaction, conditional on META existing. Only those moves can meet a thread whose META the
TTL sweep removes: every other input to a finished thread is refused before it is written. Either
way a move costs the number of its events, whatever the thread's length. The last sequence number
is derived from the events, never stored: a writer without an expectation reads the last event key
and retries on contention (bounded, jittered).

Payloads. An event whose JSON exceeds ``offload_threshold_bytes`` is written to S3 first, under a
key named after its content (``threads/<id>/<seq:010d>-<sha256>.json``), and its item keeps only
the pointer and the digest. Naming the object after its content (rather than only ``<seq>.json``)
matters under contention: two writers racing for one sequence number would otherwise overwrite
each other's object, and the winner's item could point at the loser's payload. Objects uploaded
by a losing attempt are deleted straight away; `purge` removes any left behind by a crash. The
item also keeps the event's outline (bulky values cut, ids and usage whole), so a reader that
only needs the thread's status and ids (`load_outline`: the API's views, the triggers' decisions)
reads no payload.

Retention. DynamoDB's TTL deletes items one by one and only items that carry ``expires_at``, and
stamping every event of a long thread when it ends would make that last move cost as much as the
thread is long. So only META carries the TTL: the append that ends a thread (done or cancelled)
sets ``expires_at`` to the end plus ``finished_thread_ttl_days`` (0 keeps threads forever), and a
new user message on a done thread removes it again. Once the sweep deletes META the thread is
gone for every reader (`load` raises ThreadNotFound without META); the remaining items and S3
payloads are removed by `purge(thread_id)`, which the TTL deletion of META triggers through the
table's stream (a stream consumer filtered on ``userIdentity.principalId = dynamodb.amazonaws.com``
and ``sk = META``).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import boto3
from boto3.dynamodb.conditions import Key
from boto3.dynamodb.types import TypeDeserializer
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ..core import state
from ..core.channels import ChannelRef
from ..core.errors import ThreadNotFound
from ..core.events import Event, Thread, UserMessage, dump_event, parse_event
from ..settings import StoreSettings
from . import jitter
from .ports import (
    ConcurrentAppend,
    EventsSlice,
    OffloadedEvent,
    PendingWait,
    StorageError,
    StoredPayload,
    ThreadExists,
    ThreadMeta,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef
    from mypy_boto3_s3 import S3Client

INDEX = "gsi1"
THREADS_INDEX_KEY = "THREADS"
META = "META"
WAIT = "WAIT"
LINK = "LINK"
EVENT_PREFIX = "EVENT#"
BACKREF_PREFIX = "LINK#"
# TransactWriteItems takes at most 100 actions; one of them is the META update.
MAX_EVENTS_PER_APPEND = 99
# Every round of contention lets at least one writer through, so this covers dozens of writers.
MAX_APPEND_ATTEMPTS = 40
MAX_BACKOFF_SECONDS = 0.1
CONFLICT_RETRIES = 3
# Links to payloads must be SigV4 and name the bucket's regional endpoint: a default client signs
# them SigV2 against the global endpoint, which the bucket's region may refuse.
S3_CLIENT_CONFIG = Config(signature_version="s3v4", s3={"addressing_style": "virtual"})
# How long a page's link to an event kept in S3 works: long enough to read a page's worth of them,
# short enough that a leaked link soon stops working.
PAYLOAD_URL_SECONDS = 900
# An offloaded event's item also keeps its outline, up to this size (see `_outline_of`).
OUTLINE_MAX_BYTES = 2_048
OUTLINE_STRING_CHARS = 120
OUTLINE_LIST_ITEMS = 8
# The page's own keys around a pointer ("seq", "type", "payload"), counted towards its byte budget.
POINTER_OVERHEAD_BYTES = 64

Item = Mapping[str, Any]


class AwsStorageError(StorageError):
    """DynamoDB or S3 refused a call; `code` is the AWS error code (e.g. ProvisionedThroughputExceeded)."""

    def __init__(self, operation: str, code: str, message: str) -> None:
        super().__init__(f"{operation} failed with {code}: {message}")
        self.operation = operation
        self.code = code


class StaleThreadView(ConcurrentAppend):
    """The thread moved on since the caller read it: another writer took the next sequence number."""

    def __init__(self, thread_id: str, expected: int) -> None:
        super().__init__(f"thread {thread_id} moved past the expected last_seq {expected}")


class _Cancelled(Exception):
    """A cancelled transaction: one (code, old item) per action, in the order they were sent."""

    def __init__(self, reasons: tuple[tuple[str, Item | None], ...]) -> None:
        super().__init__(reasons)
        self.reasons = reasons


class DynamoThreadStore:
    def __init__(self, table: Table, bucket: str, s3_client: S3Client, settings: StoreSettings) -> None:
        self._table = table
        # The resource's client converts plain Python values, so transactions need no serializer.
        self._client = table.meta.client
        self._bucket = bucket
        self._s3 = s3_client
        self._offload_threshold = settings.offload_threshold_bytes
        days = settings.finished_thread_ttl_days
        self._retention = timedelta(days=days) if days > 0 else None

    @classmethod
    def from_settings(cls, settings: StoreSettings) -> DynamoThreadStore:
        table = boto3.resource("dynamodb").Table(settings.threads_table)
        return cls(table, settings.payload_bucket, boto3.client("s3", config=S3_CLIENT_CONFIG), settings)

    # --- threads and events -------------------------------------------------------------------

    def create(self, meta: ThreadMeta, events: list[Event]) -> None:
        _check_batch(events)
        puts, uploaded = self._event_puts(meta.thread_id, 0, events)
        item: dict[str, Any] = {
            "pk": _thread_pk(meta.thread_id),
            "sk": META,
            "thread_id": meta.thread_id,
            "agent": meta.agent,
            "created_at": _iso(meta.created_at),
            "gsi1pk": THREADS_INDEX_KEY,
            "gsi1sk": f"{_iso(meta.created_at)}#{meta.thread_id}",
        }
        if meta.channel is not None:
            item["channel"] = meta.channel.model_dump_json()
        if (expiry := self._expiry_if_final(events)) is not None:
            item["expires_at"] = expiry
        create_meta: TransactWriteItemTypeDef = {
            "Put": {
                "TableName": self._table.name,
                "Item": item,
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }
        try:
            self._transact([create_meta, *puts])
        except _Cancelled as cancelled:
            self._delete_payloads(uploaded)
            if cancelled.reasons[0][0] == "ConditionalCheckFailed":
                raise ThreadExists(f"thread {meta.thread_id} already exists") from None
            raise _unexpected_cancellation("create", cancelled) from None

    def load(self, thread_id: str) -> tuple[ThreadMeta, Thread]:
        return self._load(thread_id, self._event_from)

    def load_outline(self, thread_id: str) -> tuple[ThreadMeta, Thread]:
        """The thread with each event kept in S3 as its outline (see `_outline_of`), so no payload is
        read: exact for status, ids, sequence numbers and token counts, never for a model or a tool."""
        return self._load(thread_id, self._outline_from)

    def _load(self, thread_id: str, event_from: Callable[[Item], Event]) -> tuple[ThreadMeta, Thread]:
        meta_item: Item | None = None
        events: list[Event] = []
        for item in self._query_partition(thread_id):
            sk = str(item["sk"])
            if sk == META:
                meta_item = item
            elif sk.startswith(EVENT_PREFIX):
                _check_next(thread_id, sk, len(events))
                events.append(event_from(item))
        if meta_item is None:
            raise ThreadNotFound(thread_id)
        # The events read are a whole prefix (an append never leaves a gap), so the thread's
        # last_seq is that of the last event read, even if more were appended while paging.
        meta = _meta_from(meta_item)
        return meta, Thread(id=thread_id, agent=meta.agent, events=tuple(events))

    def append(self, thread_id: str, events: list[Event], *, expected_last_seq: int | None = None) -> int:
        _check_batch(events)
        if not events:
            current = self._read_last_seq(thread_id)
            if expected_last_seq is not None and current != expected_last_seq:
                raise StaleThreadView(thread_id, expected_last_seq)
            return current
        if expected_last_seq is not None:
            # The caller loaded the thread (so META existed) and decided on it; see the module doc
            # for why its move only needs META when it changes it.
            return self._append_at(thread_id, events, expected_last_seq, check_meta=False)
        last_seq = self._read_last_seq(thread_id)
        for attempt in range(MAX_APPEND_ATTEMPTS):
            try:
                # No load vouches for this thread, so the write checks that META is still there.
                return self._append_at(thread_id, events, last_seq, check_meta=True)
            except StaleThreadView:
                last_seq = self._read_last_seq(thread_id)
            # Full jitter: writers that collided once should not collide again in lockstep.
            time.sleep(jitter.full_jitter(min(MAX_BACKOFF_SECONDS, 0.005 * 2**attempt)))
        raise StorageError(f"thread {thread_id}: no append slot after {MAX_APPEND_ATTEMPTS} attempts")

    def events_after(self, thread_id: str, after_seq: int) -> list[tuple[int, Event]]:
        start = _event_sk(max(after_seq + 1, 0))
        found_meta = False
        events: list[tuple[int, Event]] = []
        # The range up to META takes the thread's existence along with its newer events.
        for item in self._query_partition(thread_id, Key("sk").between(start, META)):
            sk = str(item["sk"])
            if sk == META:
                found_meta = True
            elif sk.startswith(EVENT_PREFIX):
                events.append((_seq_of(sk), self._event_from(item)))
        if not found_meta:
            raise ThreadNotFound(thread_id)
        return events

    def events_page(self, thread_id: str, after_seq: int, *, limit: int, max_bytes: int) -> EventsSlice:
        """A bounded page for readers outside the loop (the API): events kept in S3 are named, not
        read, so a page costs one Query however large the payloads are."""
        start = _event_sk(max(after_seq + 1, 0))
        items: list[tuple[int, Event | OffloadedEvent]] = []
        size = 0
        for item in self._query_partition(thread_id, Key("sk").between(start, META)):
            sk = str(item["sk"])
            if not sk.startswith(EVENT_PREFIX):
                if sk == META or items:  # past the events: the thread exists
                    return EventsSlice(items, more=False)
                continue
            entry, entry_size = self._page_entry(item)
            if items and (len(items) == limit or size + entry_size > max_bytes):
                return EventsSlice(items, more=True)
            items.append((_seq_of(sk), entry))
            size += entry_size
        if not items:
            raise ThreadNotFound(thread_id)
        return EventsSlice(items, more=False)

    def set_channel(self, thread_id: str, channel: ChannelRef) -> None:
        try:
            with _storage_errors("UpdateItem"):
                self._table.update_item(
                    Key={"pk": _thread_pk(thread_id), "sk": META},
                    UpdateExpression="SET channel = :channel",
                    ConditionExpression="attribute_exists(pk)",
                    ExpressionAttributeValues={":channel": channel.model_dump_json()},
                )
        except AwsStorageError as error:
            if error.code == "ConditionalCheckFailedException":
                raise ThreadNotFound(thread_id) from None
            raise

    def list_threads(self, limit: int = 50) -> list[ThreadMeta]:
        # One partition of the index holds every thread: fine for listing recent threads in an
        # operator's view, not meant as a hot path.
        with _storage_errors("Query"):
            page = self._table.query(
                IndexName=INDEX,
                KeyConditionExpression=Key("gsi1pk").eq(THREADS_INDEX_KEY),
                ScanIndexForward=False,
                Limit=limit,
            )
        return [_meta_from(item) for item in page["Items"]]

    def purge(self, thread_id: str) -> None:
        """Delete everything of a thread: its items, its correlation links and its S3 payloads."""
        pk = _thread_pk(thread_id)
        # META first: from then on every reader sees no thread rather than half of one, and a purge
        # cut short finds the rest again through the partition.
        with _storage_errors("DeleteItem"):
            self._table.delete_item(Key={"pk": pk, "sk": META})
        keys = [str(item["sk"]) for item in self._query_partition(thread_id, projection="pk, sk")]
        for sk in keys:
            if sk.startswith(BACKREF_PREFIX):
                self._unlink(sk.removeprefix(BACKREF_PREFIX), thread_id)
        self._delete_payload_prefix(thread_id)
        with _storage_errors("BatchWriteItem"), self._table.batch_writer() as batch:
            for sk in keys:
                batch.delete_item(Key={"pk": pk, "sk": sk})

    # --- channel correlation ------------------------------------------------------------------

    def link(self, correlation_key: str, thread_id: str) -> None:
        pk = _thread_pk(thread_id)
        actions: list[TransactWriteItemTypeDef] = [
            {
                "ConditionCheck": {
                    "TableName": self._table.name,
                    "Key": {"pk": pk, "sk": META},
                    "ConditionExpression": "attribute_exists(pk)",
                }
            },
            {
                # A conversation belongs to one thread for good; linking it again is a no-op.
                "Put": {
                    "TableName": self._table.name,
                    "Item": {"pk": correlation_key, "sk": LINK, "thread_id": thread_id},
                    "ConditionExpression": "attribute_not_exists(pk) OR thread_id = :thread",
                    "ExpressionAttributeValues": {":thread": thread_id},
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                }
            },
            {
                "Put": {
                    "TableName": self._table.name,
                    "Item": {"pk": pk, "sk": BACKREF_PREFIX + correlation_key},
                }
            },
        ]
        try:
            self._transact(actions)
        except _Cancelled as cancelled:
            (thread_check, _), (link_check, old_link), _ = cancelled.reasons
            if thread_check == "ConditionalCheckFailed":
                raise ThreadNotFound(thread_id) from None
            if link_check == "ConditionalCheckFailed":
                owner = (old_link or {}).get("thread_id")
                raise StorageError(f"{correlation_key} already belongs to thread {owner}") from None
            raise _unexpected_cancellation("link", cancelled) from None

    def find_linked(self, correlation_key: str) -> str | None:
        item = self._get({"pk": correlation_key, "sk": LINK})
        return None if item is None else str(item["thread_id"])

    # --- the pending wait ---------------------------------------------------------------------

    def save_wait(self, wait: PendingWait) -> None:
        item = {
            "pk": _thread_pk(wait.thread_id),
            "sk": WAIT,
            "gsi1pk": f"CALLBACK#{wait.callback_id}",
            "gsi1sk": WAIT,
            "wait": wait.model_dump_json(),
        }
        with _storage_errors("PutItem"):
            self._table.put_item(Item=item)

    def get_wait(self, thread_id: str) -> PendingWait | None:
        item = self._get({"pk": _thread_pk(thread_id), "sk": WAIT})
        return None if item is None else PendingWait.model_validate_json(str(item["wait"]))

    def find_wait_by_callback(self, callback_id: str) -> PendingWait | None:
        with _storage_errors("Query"):
            page = self._table.query(
                IndexName=INDEX, KeyConditionExpression=Key("gsi1pk").eq(f"CALLBACK#{callback_id}")
            )
        for item in page["Items"]:
            # The index is eventually consistent: it may still show a wait that was cleared or
            # replaced. The table's own item decides.
            thread_id = PendingWait.model_validate_json(str(item["wait"])).thread_id
            current = self.get_wait(thread_id)
            if current is not None and current.callback_id == callback_id:
                return current
        return None

    def clear_wait(self, thread_id: str) -> PendingWait | None:
        with _storage_errors("DeleteItem"):
            deleted = self._table.delete_item(
                Key={"pk": _thread_pk(thread_id), "sk": WAIT}, ReturnValues="ALL_OLD"
            )
        item = deleted.get("Attributes")
        return None if item is None else PendingWait.model_validate_json(str(item["wait"]))

    # --- internals ----------------------------------------------------------------------------

    def _append_at(self, thread_id: str, events: Sequence[Event], last_seq: int, *, check_meta: bool) -> int:
        puts, uploaded = self._event_puts(thread_id, last_seq + 1, events)
        meta_update = self._meta_update(thread_id, events, always=check_meta)
        try:
            if meta_update is None and len(puts) == 1:
                self._put_one(puts[0])
            else:
                self._transact([*puts, meta_update] if meta_update is not None else puts)
        except _Cancelled as cancelled:
            self._delete_payloads(uploaded)
            if meta_update is not None and cancelled.reasons[-1][0] == "ConditionalCheckFailed":
                raise ThreadNotFound(thread_id) from None
            if _only_codes(cancelled, "ConditionalCheckFailed", "TransactionConflict"):
                raise StaleThreadView(thread_id, last_seq) from None
            raise _unexpected_cancellation("append", cancelled) from None
        return last_seq + len(events)

    def _put_one(self, put: TransactWriteItemTypeDef) -> None:
        """A one-event move: the put's own condition is the whole lock, no transaction needed.

        A put has no ClientRequestToken, so botocore's retry of one that did commit (after a
        timeout, say) fails on its own item: finding our own event there is success. A put that
        meets another writer's transaction in flight is refused and tried again, as `_transact` does.
        """
        ours = put["Put"]["Item"]
        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                self._client.put_item(**put["Put"])
                return
            except ClientError as error:
                code = _code(error)
                if code == "ConditionalCheckFailedException":
                    # Error responses skip the resource's conversion: the item is in the wire format.
                    raw: dict[str, Any] = error.response.get("Item") or {}  # type: ignore[assignment]
                    found = {name: _DESERIALIZER.deserialize(value) for name, value in raw.items()}
                    if _same_event(found, ours):
                        return
                    raise _Cancelled((("ConditionalCheckFailed", found or None),)) from None
                if code != "TransactionConflictException":
                    raise _aws_error("PutItem", error) from error
            except BotoCoreError as error:
                raise StorageError(f"PutItem failed: {error}") from error
            if attempt == CONFLICT_RETRIES:
                raise _Cancelled((("TransactionConflict", None),))
            time.sleep(jitter.full_jitter(MAX_BACKOFF_SECONDS))

    def _meta_update(
        self, thread_id: str, events: Sequence[Event], *, always: bool
    ) -> TransactWriteItemTypeDef | None:
        """META's part of a move: None when the move leaves META as it is and nobody asked to check it."""
        expression = ""
        values: dict[str, Any] = {}
        if (expiry := self._expiry_if_final(events)) is not None:
            expression = "SET expires_at = :expires"
            values[":expires"] = expiry
        elif any(isinstance(event, UserMessage) for event in events):
            # A follow-up on a done thread reopens it: it must not expire under the new turn.
            expression = "REMOVE expires_at"
        key = {"pk": _thread_pk(thread_id), "sk": META}
        if expression:
            update: TransactWriteItemTypeDef = {
                "Update": {
                    "TableName": self._table.name,
                    "Key": key,
                    "UpdateExpression": expression,
                    "ConditionExpression": "attribute_exists(pk)",
                }
            }
            if values:
                update["Update"]["ExpressionAttributeValues"] = values
            return update
        if always:
            return {
                "ConditionCheck": {
                    "TableName": self._table.name,
                    "Key": key,
                    "ConditionExpression": "attribute_exists(pk)",
                }
            }
        return None

    def _expiry_if_final(self, events: Sequence[Event]) -> int | None:
        if self._retention is None or not state.status(events).is_final:
            return None
        ended = max(event.at for event in events)
        return int((_utc(ended) + self._retention).timestamp())

    def _event_puts(
        self, thread_id: str, first_seq: int, events: Sequence[Event]
    ) -> tuple[list[TransactWriteItemTypeDef], list[str]]:
        puts: list[TransactWriteItemTypeDef] = []
        uploaded: list[str] = []
        for seq, event in enumerate(events, start=first_seq):
            body = json.dumps(dump_event(event), ensure_ascii=False, separators=(",", ":")).encode()
            item: dict[str, Any] = {"pk": _thread_pk(thread_id), "sk": _event_sk(seq), "type": event.type}
            if len(body) > self._offload_threshold:
                digest = hashlib.sha256(body).hexdigest()
                key = f"threads/{thread_id}/{seq:010d}-{digest}.json"
                with _storage_errors("PutObject"):
                    self._s3.put_object(
                        Bucket=self._bucket, Key=key, Body=body, ContentType="application/json"
                    )
                uploaded.append(key)
                item |= {"payload_key": key, "payload_sha256": digest, "payload_bytes": len(body)}
                if (outline := _outline_of(event)) is not None:
                    item["outline"] = outline
            else:
                item["event"] = body.decode()
            puts.append(
                {
                    "Put": {
                        "TableName": self._table.name,
                        "Item": item,
                        "ConditionExpression": "attribute_not_exists(sk)",
                        # What holds the slot, so that a put can tell its own retried write.
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                    }
                }
            )
        return puts, uploaded

    def _page_entry(self, item: Item) -> tuple[Event | OffloadedEvent, int]:
        """An event item as a page shows it, and about how many bytes of JSON it adds to the page."""
        if "event" in item:
            text = str(item["event"])
            return parse_event(text), len(text.encode())
        key = str(item["payload_key"])
        with _storage_errors("GeneratePresignedUrl"):
            url = self._s3.generate_presigned_url(
                "get_object", Params={"Bucket": self._bucket, "Key": key}, ExpiresIn=PAYLOAD_URL_SECONDS
            )
        payload = StoredPayload(
            size_bytes=int(item["payload_bytes"]),
            sha256=str(item["payload_sha256"]),
            url=url,
            expires_at=datetime.now(UTC) + timedelta(seconds=PAYLOAD_URL_SECONDS),
        )
        entry = OffloadedEvent(type=str(item["type"]), payload=payload)
        return entry, len(entry.model_dump_json()) + POINTER_OVERHEAD_BYTES

    def _outline_from(self, item: Item) -> Event:
        if "outline" in item:
            return parse_event(str(item["outline"]))
        return self._event_from(item)  # written before outlines were kept, or too big for one

    def _event_from(self, item: Item) -> Event:
        if "event" in item:
            return parse_event(str(item["event"]))
        key = str(item["payload_key"])
        with _storage_errors("GetObject"):
            body = self._s3.get_object(Bucket=self._bucket, Key=key)["Body"].read()
        if hashlib.sha256(body).hexdigest() != item["payload_sha256"]:
            raise StorageError(f"payload s3://{self._bucket}/{key} does not match its digest")
        return parse_event(body)

    def _transact(self, actions: Sequence[TransactWriteItemTypeDef]) -> None:
        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                # The token makes botocore's own retries (after a timeout, say) idempotent: a retried
                # transaction that had already committed succeeds instead of failing its conditions.
                self._client.transact_write_items(TransactItems=actions, ClientRequestToken=uuid.uuid4().hex)
                return
            except ClientError as error:
                if _code(error) != "TransactionCanceledException":
                    raise _aws_error("TransactWriteItems", error) from error
                cancelled = _Cancelled(tuple(_reasons(error)))
            except BotoCoreError as error:
                raise StorageError(f"TransactWriteItems failed: {error}") from error
            # A conflict with another in-flight transaction says nothing about our conditions: the
            # same transaction may well pass once the other one has finished.
            if not _only_conflicts(cancelled) or attempt == CONFLICT_RETRIES:
                raise cancelled
            time.sleep(jitter.full_jitter(MAX_BACKOFF_SECONDS))

    def _query_partition(
        self, thread_id: str, sort_key: Any = None, projection: str | None = None
    ) -> Iterator[Item]:
        condition = Key("pk").eq(_thread_pk(thread_id))
        if sort_key is not None:
            condition = condition & sort_key
        extra: dict[str, Any] = {"ProjectionExpression": projection} if projection else {}
        start: dict[str, Any] = {}
        while True:
            with _storage_errors("Query"):
                page = self._table.query(
                    KeyConditionExpression=condition, ConsistentRead=True, **extra, **start
                )
            yield from page["Items"]
            if "LastEvaluatedKey" not in page:
                return
            start = {"ExclusiveStartKey": page["LastEvaluatedKey"]}

    def _read_last_seq(self, thread_id: str) -> int:
        """The last event's sequence number, read from its key (-1 for a thread without events)."""
        with _storage_errors("Query"):
            page = self._table.query(
                KeyConditionExpression=Key("pk").eq(_thread_pk(thread_id))
                & Key("sk").begins_with(EVENT_PREFIX),
                ScanIndexForward=False,
                Limit=1,
                ConsistentRead=True,
                ProjectionExpression="sk",
            )
        if page["Items"]:
            return _seq_of(str(page["Items"][0]["sk"]))
        if self._get({"pk": _thread_pk(thread_id), "sk": META}) is None:
            raise ThreadNotFound(thread_id)
        return -1

    def _get(self, key: dict[str, str]) -> Item | None:
        with _storage_errors("GetItem"):
            return self._table.get_item(Key=key, ConsistentRead=True).get("Item")

    def _unlink(self, correlation_key: str, thread_id: str) -> None:
        try:
            with _storage_errors("DeleteItem"):
                self._table.delete_item(
                    Key={"pk": correlation_key, "sk": LINK},
                    ConditionExpression="thread_id = :thread",
                    ExpressionAttributeValues={":thread": thread_id},
                )
        except AwsStorageError as error:
            if error.code != "ConditionalCheckFailedException":  # gone, or someone else's now
                raise

    def _delete_payloads(self, keys: list[str]) -> None:
        if keys:
            with _storage_errors("DeleteObjects"):
                self._s3.delete_objects(Bucket=self._bucket, Delete={"Objects": [{"Key": k} for k in keys]})

    def _delete_payload_prefix(self, thread_id: str) -> None:
        paginator = self._s3.get_paginator("list_objects_v2")
        with _storage_errors("ListObjectsV2"):
            for page in paginator.paginate(Bucket=self._bucket, Prefix=f"threads/{thread_id}/"):
                self._delete_payloads([obj["Key"] for obj in page.get("Contents", []) if "Key" in obj])


# --- helpers ----------------------------------------------------------------------------------


def _thread_pk(thread_id: str) -> str:
    return f"THREAD#{thread_id}"


def _event_sk(seq: int) -> str:
    return f"{EVENT_PREFIX}{seq:010d}"


def _seq_of(sk: str) -> int:
    return int(sk.removeprefix(EVENT_PREFIX))


def _check_next(thread_id: str, sk: str, expected_seq: int) -> None:
    if _seq_of(sk) != expected_seq:
        raise StorageError(f"thread {thread_id} has {sk} where event {expected_seq} should be")


def _outline_of(event: Event) -> str | None:
    """An offloaded event cut down to keep in its item: every string cut to OUTLINE_STRING_CHARS,
    every list to OUTLINE_LIST_ITEMS, every key kept. Ids, call ids, verdicts, reasons and usage
    are short, so what status and token counts read survives whole. None when the outline is still
    too big (a mapping with thousands of keys, say) or no longer a valid event: readers then read
    the payload itself."""

    def cut(value: Any) -> Any:
        if isinstance(value, str):
            return value[:OUTLINE_STRING_CHARS]
        if isinstance(value, list):
            return [cut(item) for item in value[:OUTLINE_LIST_ITEMS]]
        if isinstance(value, dict):
            return {key: cut(item) for key, item in value.items()}
        return value

    outline = json.dumps(cut(dump_event(event)), ensure_ascii=False, separators=(",", ":"))
    if len(outline.encode()) > OUTLINE_MAX_BYTES:
        return None
    try:
        parse_event(outline)
    except ValueError:  # pydantic's ValidationError: a constraint the cut broke
        return None
    return outline


def _check_batch(events: Sequence[Event]) -> None:
    if len(events) > MAX_EVENTS_PER_APPEND:
        raise ValueError(f"at most {MAX_EVENTS_PER_APPEND} events per write, got {len(events)}")


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _iso(moment: datetime) -> str:
    # Fixed width, so that gsi1sk sorts threads by creation time as text.
    return _utc(moment).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _meta_from(item: Item) -> ThreadMeta:
    return ThreadMeta(
        thread_id=str(item["thread_id"]),
        agent=str(item["agent"]),
        created_at=datetime.fromisoformat(str(item["created_at"])),
        channel=json.loads(str(item["channel"])) if "channel" in item else None,
    )


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", "Unknown"))


def _aws_error(operation: str, error: ClientError) -> AwsStorageError:
    return AwsStorageError(operation, _code(error), str(error.response.get("Error", {}).get("Message", "")))


@contextmanager
def _storage_errors(operation: str) -> Iterator[None]:
    try:
        yield
    except ClientError as error:
        raise _aws_error(operation, error) from error
    except BotoCoreError as error:  # endpoint unreachable, or still timing out after retries
        raise StorageError(f"{operation} failed: {error}") from error


_DESERIALIZER = TypeDeserializer()


def _reasons(error: ClientError) -> Iterator[tuple[str, Item | None]]:
    # Error responses skip the resource's conversion: old items arrive in the wire format.
    raw_reasons: list[dict[str, Any]] = error.response.get("CancellationReasons", [])  # type: ignore[assignment]
    for reason in raw_reasons:
        raw_item = reason.get("Item")
        item = (
            {name: _DESERIALIZER.deserialize(value) for name, value in raw_item.items()} if raw_item else None
        )
        yield str(reason.get("Code", "None")), item


def _same_event(found: Item, ours: Mapping[str, Any]) -> bool:
    """Whether an event item found at our sequence number is the one we were writing: the same JSON,
    or the same content-addressed payload (event ids are unique, so no other writer's matches)."""
    return any(name in ours and found.get(name) == ours[name] for name in ("event", "payload_key"))


def _only_codes(cancelled: _Cancelled, *codes: str) -> bool:
    """Whether every action that failed failed for one of `codes` ("None": that action was fine)."""
    return all(code in ("None", *codes) for code, _ in cancelled.reasons)


def _only_conflicts(cancelled: _Cancelled) -> bool:
    return _only_codes(cancelled, "TransactionConflict")


def _unexpected_cancellation(operation: str, cancelled: _Cancelled) -> AwsStorageError:
    codes = ",".join(code for code, _ in cancelled.reasons if code != "None")
    return AwsStorageError(operation, "TransactionCanceledException", f"cancellation reasons: {codes}")
