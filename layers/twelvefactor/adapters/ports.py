"""Interfaces between handlers and the AWS adapters: the thread store, the workflow, human channels.

Handlers depend on these protocols; `dynamodb_store`, `stepfunctions` and the channel adapters
implement them, and tests can run the handlers against moto with the real implementations.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict

from ..core.channels import ChannelRef, Notification
from ..core.errors import TwelvefactorError
from ..core.events import Event, Thread


class StorageError(TwelvefactorError):
    """DynamoDB or S3 failed in a way the caller cannot fix by retrying the same call."""


class ConcurrentAppend(TwelvefactorError):
    """Someone else appended first; the caller's view of the thread is stale."""


class ThreadExists(TwelvefactorError):
    """`create` found a thread with that id already: a replayed launch or an id collision."""


class WorkflowError(TwelvefactorError):
    """Step Functions refused the call (e.g. an expired or already used task token)."""


class TaskTokenRefused(WorkflowError):
    """The task token is dead (unknown, used, timed out, its execution ended): resuming cannot work,
    unlike a throttled or failed call, which may on a retry."""


class ChannelError(TwelvefactorError):
    """A human channel (Slack, SES, webhook) refused or could not take a message."""


class ThreadMeta(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    thread_id: str
    agent: str
    created_at: datetime
    channel: ChannelRef | None = None


class PendingWait(BaseModel):
    """A paused execution. Stored in its own item and never rendered into a prompt."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    thread_id: str
    task_token: str
    callback_id: str  # random, unguessable: the id in POST /callbacks/{callback_id}
    kind: Literal["approval", "question", "escalation", "callback"]
    deadline: datetime


class StoredPayload(BaseModel):
    """An event kept whole in S3 because it is large: a presigned GET answers its JSON until
    `expires_at`, and its size and SHA-256 let the reader check what it got."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    size_bytes: int
    sha256: str
    url: str
    expires_at: datetime


class OffloadedEvent(BaseModel):
    """What a page of events holds in place of an event kept in S3: its type and where it is."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str
    payload: StoredPayload


@dataclass(frozen=True)
class EventsSlice:
    """Events in order from a sequence number on, cut at a count or a byte budget."""

    items: list[tuple[int, Event | OffloadedEvent]]
    more: bool  # the cut left events out: ask again after the last one here


class ThreadStore(Protocol):
    def create(self, meta: ThreadMeta, events: list[Event]) -> None:
        """Create META and the first events atomically; ThreadConflict-free: fails if it exists."""

    def load(self, thread_id: str) -> tuple[ThreadMeta, Thread]:
        """Raises ThreadNotFound."""

    def load_outline(self, thread_id: str) -> tuple[ThreadMeta, Thread]:
        """Like `load`, without reading payloads kept elsewhere: large events come cut down, exact
        in what status, ids and token counts read. For readers outside the loop: the API's views,
        and the triggers deciding where a person's input goes."""

    def append(self, thread_id: str, events: list[Event], *, expected_last_seq: int | None = None) -> int:
        """Append atomically after the last event; returns the new last_seq.

        With expected_last_seq (the `Thread.last_seq` of a load of this thread: the store trusts
        that the thread exists), raises ConcurrentAppend if the thread moved on; without it,
        retries on contention so concurrent appenders never lose or duplicate an event.
        """

    def events_after(self, thread_id: str, after_seq: int) -> list[tuple[int, Event]]: ...

    def events_page(self, thread_id: str, after_seq: int, *, limit: int, max_bytes: int) -> EventsSlice:
        """At most `limit` events after `after_seq` and about `max_bytes` of their JSON (always at
        least one); an event kept in S3 comes as an `OffloadedEvent`, never read. Raises ThreadNotFound."""

    def set_channel(self, thread_id: str, channel: ChannelRef) -> None: ...

    def link(self, correlation_key: str, thread_id: str) -> None:
        """Map a channel correlation key (SLACK#..., EMAIL#...) to a thread id."""

    def find_linked(self, correlation_key: str) -> str | None: ...

    def save_wait(self, wait: PendingWait) -> None: ...

    def get_wait(self, thread_id: str) -> PendingWait | None: ...

    def find_wait_by_callback(self, callback_id: str) -> PendingWait | None: ...

    def clear_wait(self, thread_id: str) -> PendingWait | None:
        """Delete the wait and return it, in one atomic request: of two triggers clearing the same
        wait, only one gets it (and so hands the answer to the execution)."""
        ...

    def list_threads(self, limit: int = 50) -> list[ThreadMeta]: ...

    def purge(self, thread_id: str) -> None:
        """Delete every trace of a thread (items, links, payloads); purging a purged thread is a no-op."""


class Workflow(Protocol):
    def start(self, thread_id: str, launch_seq: int) -> str:
        """Start one execution per launch; the name is derived from both, so a repeat is a no-op."""

    def resume(self, task_token: str, output: dict[str, object]) -> None: ...

    def fail(self, task_token: str, error: str, cause: str) -> None: ...

    def cancel(self, thread_id: str) -> None: ...

    def running(self, thread_id: str) -> bool:
        """Whether an execution of the thread runs (one ListExecutions page per thousand running)."""
        ...


class HumanChannel(Protocol):
    def send(self, ref: ChannelRef, notification: Notification) -> None: ...
