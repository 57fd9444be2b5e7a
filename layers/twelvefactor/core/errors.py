"""Typed domain errors. Each handler maps them to its own reply (HTTP status, Slack text, email) in
one place; nothing below a handler decides how an error is shown to the outside world."""

from __future__ import annotations


class TwelvefactorError(Exception):
    """Base of every error the runtime raises on purpose."""


class UnknownAgent(TwelvefactorError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no agent named {name!r}")
        self.name = name


class ThreadNotFound(TwelvefactorError):
    def __init__(self, thread_id: str) -> None:
        super().__init__(f"no thread {thread_id!r}")
        self.thread_id = thread_id


class NotWaiting(TwelvefactorError):
    """A reply arrived for something the thread is not waiting for (409 at the API)."""


class LlmError(TwelvefactorError):
    """The model could not be asked. Compacted into the thread as an error event."""


class LlmUnavailable(LlmError):
    """Transient: rate limits, 5xx, timeouts, still failing after the adapter's retries."""


class LlmRejected(LlmError):
    """Permanent: the provider refused the request (bad key, unknown model, bad request)."""
