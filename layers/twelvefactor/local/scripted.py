"""A scripted, in-process language model for tests and demos.

It implements the same port as the real openai adapter (`twelvefactor.core.ports.LanguageModel`),
so the reducer cannot tell it apart: each call pops the next scripted reply. A string is the
model's raw answer (valid or not: that is what tests of invalid output need), an exception is
raised as if the adapter failed, a `ModelReply` is returned as-is (to script token usage).
Every conversation it was asked with is recorded, so a test can assert what the model saw.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

from twelvefactor.core.ports import ChatMessage, ModelReply
from twelvefactor.core.tools import IntentSet

ScriptedReply = str | Exception | ModelReply


class ScriptExhausted(AssertionError):
    """The model was asked more often than the script foresaw: a test expectation, not an LLM error."""


class ScriptedModel:
    def __init__(self, replies: Iterable[ScriptedReply]) -> None:
        self._replies: deque[ScriptedReply] = deque(replies)
        self.calls: list[list[ChatMessage]] = []

    @property
    def remaining(self) -> int:
        return len(self._replies)

    @property
    def last_messages(self) -> list[ChatMessage]:
        if not self.calls:
            raise ScriptExhausted("the model was never asked")
        return self.calls[-1]

    def decide(self, messages: Sequence[ChatMessage], intents: IntentSet) -> ModelReply:
        # Copy each message: the caller may reuse its list, and the record must show what was sent.
        self.calls.append(
            [ChatMessage(role=message["role"], content=message["content"]) for message in messages]
        )
        if not self._replies:
            raise ScriptExhausted(f"no scripted reply left for call {len(self.calls)}")
        reply = self._replies.popleft()
        if isinstance(reply, Exception):
            raise reply
        return reply if isinstance(reply, ModelReply) else ModelReply(content=reply)
