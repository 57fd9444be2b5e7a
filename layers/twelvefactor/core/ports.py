"""The reducer's ports: everything it needs from the outside world, injected (factor 12)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal, Protocol, TypedDict

from .events import Thread, TokenUsage
from .pricing import ModelPrice
from .tools import IntentSet

if TYPE_CHECKING:
    from .agent import Agent
    from .control import Offer


class ChatMessage(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class ModelReply:
    """The model's answer: the JSON text of one intent object, validated by the reducer."""

    content: str
    usage: TokenUsage | None = None


class LanguageModel(Protocol):
    """Implemented by the OpenAI adapter and by the scripted fakes in tests.

    Raises `LlmUnavailable`/`LlmRejected` when the model cannot be asked at all.
    """

    def decide(self, messages: Sequence[ChatMessage], intents: IntentSet) -> ModelReply: ...


class PromptRenderer(Protocol):
    def render(self, agent: Agent, thread: Thread, offered: Offer | None = None) -> list[ChatMessage]:
        """The chat messages; ``offered`` is what `twelvefactor.core.control.offer` computed for this
        decision (computed again when not given)."""
        ...


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Ports:
    llm: LanguageModel
    prompts: PromptRenderer
    clock: Callable[[], datetime] = field(default=utc_now)
    # The configured model's price (`pricing.price_for`): what the cost budget is checked with.
    price: ModelPrice | None = None
