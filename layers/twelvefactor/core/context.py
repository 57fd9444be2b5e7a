"""Own your context window (factor 3): a thread rendered as compact tagged blocks.

Each event becomes ``<tag>`` + a YAML-ish body + ``</tag>``, the tag named after the event type or,
for tool traffic, after the intent (``<list_git_tags>``, ``<list_git_tags_result>``). Every value
is text from outside the code (users, emails, tool output, the model itself), so every value is
escaped: ``<``, ``>`` and ``&`` become entities and no value can open or close a tag. Long values
are cut with a visible marker, secrets are redacted, and the whole rendering is kept within the
agent's budget by eliding the oldest middle events.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .events import (
    Approval,
    ApprovalRequested,
    Cancelled,
    Done,
    Error,
    Escalation,
    Event,
    HumanRequest,
    HumanResponse,
    ToolCall,
    ToolDispatched,
    ToolResult,
    UserMessage,
)

Redactor = Callable[[str], str]
BodyRenderer = Callable[[Event], Mapping[str, Any] | None]

_SECRET_PATTERNS = (
    re.compile(r"xox[abposr]-[A-Za-z0-9-]{10,}"),  # Slack tokens
    re.compile(r"sk-[A-Za-z0-9_-]{16,}"),  # OpenAI-style API keys
    re.compile(r"(?:AKIA|ASIA)[A-Z0-9]{16}"),  # AWS access key ids
    re.compile(r"(?i)(?:password|passwd|secret|api[_-]?key|token)\s*[:=]\s*\S+"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"),
)
REDACTED = "[REDACTED]"
# A value stored under a key like these is a secret whatever it looks like.
_SECRET_KEY = re.compile(
    r"(?i)(password|passwd|secret|token|api[_-]?key|authorization|credential|private[_-]?key)"
)


def redact_secrets(text: str) -> str:
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [truncated {len(text) - limit} chars]"


def default_body(event: Event) -> tuple[str, Mapping[str, Any] | None]:
    """The tag and body every agent gets unless it overrides the event's rendering."""
    match event:
        case UserMessage(data=data):
            return "user_message", {"text": data.text}
        case ToolCall(data=data):
            return data.intent, {"intent": data.intent, **data.arguments}
        case ToolResult(data=data):
            return f"{data.intent}_result", _as_body(data.result)
        case ToolDispatched(data=data):
            return f"{data.intent}_dispatched", {"status": "waiting for the result"}
        case ApprovalRequested(data=data):
            return "approval_requested", {"intent": data.intent, "status": "waiting for a human"}
        case Approval(data=data):
            return "approval", {"approved": data.approved, "comment": data.comment or None}
        case HumanRequest(data=data):
            return "request_human_input", data.model_dump(exclude_defaults=True) or {}
        case HumanResponse(data=data):
            return "human_response", {"text": data.text}
        case Error(data=data):
            return "error", {"source": data.source, "message": data.message}
        case Escalation(data=data):
            return "escalation", {"reason": data.reason, "message": data.message}
        case Done(data=data):
            return "done_for_now", {"message": data.message}
        case Cancelled(data=data):
            return "cancelled", {"reason": data.reason or None}
    raise TypeError(f"unrenderable event {event!r}")


def _as_body(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {"result": value}


class ContextRenderer:
    """Renders events to the tagged context. Configured per agent; holds no thread state."""

    def __init__(
        self,
        *,
        renderers: Mapping[str, BodyRenderer] | None = None,
        redactor: Redactor = redact_secrets,
        max_value_chars: int = 2_000,
        budget_chars: int = 24_000,
    ) -> None:
        self._renderers = renderers or {}
        self._redact = redactor
        self._max_value_chars = max_value_chars
        self._budget_chars = budget_chars

    def render(self, events: Sequence[Event]) -> str:
        blocks = [block for event in events if (block := self.render_event(event)) is not None]
        return self._fit(blocks)

    def render_event(self, event: Event) -> str | None:
        tag, body = default_body(event)
        override = self._renderers.get(tag) or self._renderers.get(event.type)
        if override is not None:
            body = override(event)
        if body is None:
            return None
        lines = list(self._yaml_lines(body, indent=""))
        return "\n".join([f"<{tag}>", *lines, f"</{tag}>"])

    def _yaml_lines(self, body: Mapping[str, Any], indent: str) -> Any:
        for key, value in body.items():
            if value is None:
                continue
            name = escape(str(key))
            if _SECRET_KEY.search(str(key)) and not isinstance(value, Mapping | list | tuple):
                yield f"{indent}{name}: {REDACTED}"
            elif isinstance(value, Mapping):
                yield f"{indent}{name}:"
                yield from self._yaml_lines(value, indent + "  ")
            elif isinstance(value, list | tuple):
                yield f"{indent}{name}:"
                for item in value:
                    if isinstance(item, Mapping):
                        yield f"{indent}  -"
                        yield from self._yaml_lines(item, indent + "    ")
                    else:
                        yield f"{indent}  - {self._scalar(item, indent + '    ')}"
            else:
                yield f"{indent}{name}: {self._scalar(value, indent + '  ')}"

    def _scalar(self, value: Any, indent: str) -> str:
        if isinstance(value, bool) or value is None:
            text = json.dumps(value)
        elif isinstance(value, str):
            text = value
        elif isinstance(value, int | float):
            text = str(value)
        else:
            text = json.dumps(value, default=str)
        text = escape(truncate(self._redact(text), self._max_value_chars))
        if "\n" in text:
            return "|\n" + "\n".join(f"{indent}{line}" for line in text.splitlines())
        return text

    def _fit(self, blocks: list[str]) -> str:
        """Keep the first block (the request) and as many of the latest as the budget allows.

        The newest block is never left out whole: one too big for what is left (a large tool
        result) is cut to fit, or the model would not see what just happened and repeat it."""
        rendered = "\n\n".join(blocks)
        if len(rendered) <= self._budget_chars or len(blocks) < 3:
            return rendered
        head, tail = blocks[0], list[str]()
        # Room for the marker (at its longest count) and the blank lines around it.
        used = len(head) + len(_elided_marker(len(blocks))) + 2
        for block in reversed(blocks[1:]):
            if used + len(block) + 2 > self._budget_chars:
                newest_cut = _cut(block, self._budget_chars - used - 2) if not tail else None
                if newest_cut is not None:
                    tail.append(newest_cut)
                break
            tail.append(block)
            used += len(block) + 2
        marker = _elided_marker(len(blocks) - 1 - len(tail))
        return "\n\n".join([head, marker, *reversed(tail)])


def _cut(block: str, limit: int) -> str | None:
    """The block's first lines that fit in `limit` characters, still closed by its tag, with a
    visible marker where it was cut; None when not even that fits."""
    opening, *lines, closing = block.split("\n")
    kept: list[str] = []
    room = limit - len(opening) - len(closing) - len(_CUT_MARKER) - 3
    for line in lines:
        if len(line) + 1 > room:
            break
        kept.append(line)
        room -= len(line) + 1
    return "\n".join([opening, *kept, _CUT_MARKER, closing]) if room >= 0 else None


_CUT_MARKER = "… [cut here to fit the context budget]"


def _elided_marker(count: int) -> str:
    return f"<elided>{count} earlier events left out to fit the context budget</elided>"
