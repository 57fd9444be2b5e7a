"""Own your context window (factor 3): a thread rendered as dense tagged blocks.

Each event becomes a block tagged after the event type or, for tool traffic, after the intent
(``<list_git_tags>``, ``<list_git_tags_result>``): one text between the tags, or a YAML-ish body
one field a line, records that share their fields as a table, and nothing the model cannot use
(empty fields, a call's repeated intent, a result's echo of its call's arguments). Every value is
text from outside the code (users, emails, tool output, the model itself), so every value is
escaped: ``<``, ``>`` and ``&`` become entities and no value can open or close a tag. Long values
show their beginning and end around a marker saying how much was left out (the thread keeps the
whole), with more room for what people wrote than for tool values; secrets are redacted. Then the
agent's `ContextPolicy` decides what the model still needs (a result superseded by a later one of
the same call becomes a marker), and the whole rendering is kept within the agent's budget by
eliding the oldest middle events.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property, partial
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
# A block's body: text shown as is (escaped), or fields shown one a line.
Body = Mapping[str, Any] | str
BodyRenderer = Callable[[Event], Body | None]

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


KEPT_IN_THREAD = "the whole text is kept in the thread"


def truncate(text: str, limit: int, kept: str = KEPT_IN_THREAD) -> str:
    """About `limit` characters of `text`: its beginning and its end, with a marker between them
    that says how much of the middle was left out and where the whole is (`kept`).

    Both ends, not the first `limit` characters: a long message's end usually holds what its writer
    asks for (an email's request comes after its story), its beginning who is writing and about
    what. Each end is cut at a space or line break when one is near, not inside a word."""
    if len(text) <= limit:
        return text
    head, tail = text[: limit - limit // 2], text[len(text) - limit // 2 :]
    spaces = [match.start() for match in _SPACE.finditer(head, max(0, len(head) - _SNAP_CHARS))]
    if spaces:
        head = head[: spaces[-1]]
    space = _SPACE.search(tail, 0, _SNAP_CHARS)
    if space is not None:
        tail = tail[space.end() :]
    left_out = len(text) - len(head) - len(tail)
    shortened = f"{head} … [{left_out} characters left out here; {kept}] … {tail}"
    return shortened if len(shortened) < len(text) else text  # a marker longer than the cut: keep it


_SNAP_CHARS = 80  # how far an end may move to a space or line break
_SPACE = re.compile(r"\s")


def default_body(event: Event) -> tuple[str, Body | None]:
    """The tag and body every agent gets unless it overrides the event's rendering.

    A body is text when one value says it all (the tag already names what it is), else a mapping.
    """
    match event:
        case UserMessage(data=data):
            return "user_message", data.text
        case ToolCall(data=data):
            return data.intent, data.arguments  # the tag names the intent
        case ToolResult(data=data):
            return f"{data.intent}_result", _as_body(data.result)
        case ToolDispatched(data=data):
            return f"{data.intent}_dispatched", "waiting for the result"
        case ApprovalRequested(data=data):
            return "approval_requested", {"intent": data.intent, "status": "waiting for a human"}
        case Approval(data=data):
            return "approval", {"approved": data.approved, "comment": data.comment}
        case HumanRequest(data=data):
            return "request_human_input", data.model_dump(exclude_defaults=True)
        case HumanResponse(data=data):
            return "human_response", data.text
        case Error(data=data):
            return "error", {"source": data.source, "message": data.message}
        case Escalation(data=data):
            return "escalation", {"reason": data.reason, "message": data.message}
        case Done(data=data):
            return "done_for_now", data.message
        case Cancelled(data=data):
            return "cancelled", data.reason or {}
    raise TypeError(f"unrenderable event {event!r}")


def _as_body(value: Any) -> Body:
    if isinstance(value, Mapping):
        return value
    if isinstance(value, list | tuple):
        return {"result": value}
    return _plain(value)


def _plain(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, default=str)


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | Mapping | list | tuple) and not value)


@dataclass(frozen=True)
class ContextPolicy:
    """What the model still needs to see, decided from the events alone, before any budget applies.

    ``collapse_superseded_results``: a tool result followed later in the thread by another result
    of the same intent, called with the same arguments, is shown as a one-line marker instead of
    its body. The model acts on the newest answer to a call; a thread that repeats a lookup every
    turn pays for its data once, and the call blocks still show every time it was made.
    ``collapsible_intents`` limits that to these intents (an agent passes its read-only tools);
    None collapses any intent's results.
    ``compact_escalated_errors``: errors from before the thread's last escalation are shown as one
    line per run of errors, with their count and sources, not word for word. The escalation says
    what went wrong and the person's answer to it is what the model acts on now; without this, a
    thread escalated after three errors sends all three again on every later step. Errors since
    the escalation, the ones the model must correct, stay whole.
    """

    collapse_superseded_results: bool = True
    collapsible_intents: frozenset[str] | None = None
    compact_escalated_errors: bool = True


class ContextRenderer:
    """Renders events to the tagged context. Configured per agent; holds no thread state."""

    def __init__(
        self,
        *,
        renderers: Mapping[str, BodyRenderer] | None = None,
        redactor: Redactor = redact_secrets,
        max_value_chars: int = 2_000,
        max_message_chars: int = 8_000,
        budget_chars: int = 24_000,
        policy: ContextPolicy = ContextPolicy(),
    ) -> None:
        self._renderers = renderers or {}
        self._redact = redactor
        self._max_value_chars = max_value_chars
        self._max_message_chars = max_message_chars
        self._budget_chars = budget_chars
        self._policy = policy

    def render(self, events: Sequence[Event]) -> str:
        arguments = _arguments_by_call(events)
        superseded = (
            _superseded(events, arguments, self._policy.collapsible_intents)
            if self._policy.collapse_superseded_results
            else set()
        )
        escalated = _escalated_error_runs(events) if self._policy.compact_escalated_errors else {}
        blocks: list[_Block] = []
        call_blocks: dict[str, int] = {}  # call id -> the position of its call's block
        # A result leaves out what its call's block shows, so only the arguments of calls shown
        # (an agent's renderer may hide a call).
        shown_arguments: dict[str, Mapping[str, Any]] = {}
        for index, event in enumerate(events):
            if index in escalated:
                run = escalated[index]
                override = self._override(event, "error")
                if run and (override is None or override(event) is not None):
                    blocks.append(_Block(_escalated_errors_marker(run)))
            elif index in superseded:
                tag = default_body(event)[0]
                override = self._override(event, tag)
                if override is None or override(event) is not None:  # an agent may hide it altogether
                    blocks.append(_Block(_superseded_marker(tag)))
            elif (text := self.render_event(event, shown_arguments)) is not None:
                block = _Block(text)
                if isinstance(event, ToolCall):
                    call_blocks[event.data.call_id] = len(blocks)
                    shown_arguments[event.data.call_id] = arguments[event.data.call_id]
                elif isinstance(event, ToolResult) and event.data.call_id in call_blocks:
                    # Rendered whole only if the budget drops the call: most never are.
                    block = _Block(text, call_blocks[event.data.call_id], partial(self.render_event, event))
                blocks.append(block)
        return self._fit(blocks)

    def _override(self, event: Event, tag: str) -> BodyRenderer | None:
        return self._renderers.get(tag) or self._renderers.get(event.type)

    def render_event(
        self, event: Event, arguments: Mapping[str, Mapping[str, Any]] | None = None
    ) -> str | None:
        """One event's block. `arguments` (by call id) lets a result leave out what its call said."""
        tag, body = default_body(event)
        override = self._override(event, tag)
        if override is not None:
            body = override(event)
        elif isinstance(event, ToolResult) and isinstance(body, Mapping) and arguments:
            body = _without_echo(body, arguments.get(event.data.call_id, {}))
        if body is None:
            return None
        if isinstance(body, str):
            # What a person wrote is the task itself: it gets more room than a tool's value.
            said = override is None and isinstance(event, UserMessage | HumanResponse)
            text = self._text(body, self._max_message_chars if said else self._max_value_chars)
            if not text:
                return f"<{tag}/>"
            if _LINE_BREAK.search(text):
                return f"<{tag}>\n{text}\n</{tag}>"
            return f"<{tag}>{text}</{tag}>"
        lines = list(self._yaml_lines(body, indent=""))
        if not lines:
            return f"<{tag}/>"
        return "\n".join([f"<{tag}>", *lines, f"</{tag}>"])

    def _yaml_lines(self, body: Mapping[str, Any], indent: str) -> Iterator[str]:
        for key, value in body.items():
            if _is_empty(value):
                continue
            name = _one_line(escape(str(key)))
            if _SECRET_KEY.search(str(key)) and not isinstance(value, Mapping | list | tuple):
                yield f"{indent}{name}: {REDACTED}"
            elif isinstance(value, Mapping):
                yield f"{indent}{name}:"
                yield from self._yaml_lines(value, indent + "  ")
            elif isinstance(value, list | tuple):
                table = self._table(value)
                if table is not None:
                    header, *rows = table
                    yield f"{indent}{name}: {header}"
                    yield from (f"{indent}  {row}" for row in rows)
                    continue
                yield f"{indent}{name}:"
                for item in value:
                    if isinstance(item, Mapping):
                        yield f"{indent}  -"
                        yield from self._yaml_lines(item, indent + "    ")
                    else:
                        yield f"{indent}  - {self._scalar(item, indent + '    ')}"
            else:
                yield f"{indent}{name}: {self._scalar(value, indent + '  ')}"

    def _table(self, items: Sequence[Any]) -> list[str] | None:
        """Records that share their keys, as a header line of column names and a line per record.

        The names are said once instead of once per record. Only for flat records whose cells
        hold no line break and no column separator, so a cell can never pass for another column
        or another record; anything else keeps the one-field-a-line form."""
        if not items or not all(isinstance(item, Mapping) and item for item in items):
            return None
        columns = list(items[0])
        if any(list(item) != columns for item in items):
            return None
        rows = []
        for item in items:
            cells = []
            for column, value in item.items():
                if isinstance(value, Mapping | list | tuple):
                    return None
                cell = REDACTED if _SECRET_KEY.search(str(column)) else self._text(_plain(value))
                if _LINE_BREAK.search(cell) or "|" in cell:
                    return None
                cells.append(cell)
            rows.append(_COLUMN_SEPARATOR.join(cells))
        header = [escape(str(column)) for column in columns]
        if any("|" in name or _LINE_BREAK.search(name) for name in header):
            return None
        return [_COLUMN_SEPARATOR.join(header), *rows]

    def _text(self, text: str, limit: int | None = None) -> str:
        """Untrusted text made safe to show: secrets redacted first, then cut, then escaped."""
        return escape(truncate(self._redact(text), self._max_value_chars if limit is None else limit))

    def _scalar(self, value: Any, indent: str) -> str:
        text = self._text(_plain(value))
        if _LINE_BREAK.search(text):
            return "|\n" + "\n".join(f"{indent}{line}" for line in text.splitlines())
        return text

    def _fit(self, blocks: list[_Block]) -> str:
        """Keep the first block (the request) and as many of the latest as the budget allows.

        The newest block is never left out whole: one too big for what is left (a large tool
        result) is cut to fit, or the model would not see what just happened and repeat it. A kept
        result whose call is left out is shown whole, with the arguments it would otherwise leave
        to the call's block."""
        rendered = "\n\n".join(block.text for block in blocks)
        if len(rendered) <= self._budget_chars or len(blocks) < 3:
            return rendered
        head = blocks[0].text
        # Room for the marker (at its longest count) and the blank lines around it.
        room = self._budget_chars - len(head) - len(_elided_marker(len(blocks))) - 2
        first_kept, used = len(blocks), 0  # the oldest block of the kept tail, and the tail's size
        while first_kept > 1 and used + len(blocks[first_kept - 1].text) + 2 <= room:
            first_kept -= 1
            used += len(blocks[first_kept].text) + 2
        # A kept result whose call is not shows whole, which may take the tail over: then its
        # oldest blocks go too, until it fits (each result is rendered whole at most once).
        while first_kept < len(blocks) and used + _echoes(blocks, first_kept) > room:
            used -= len(blocks[first_kept].text) + 2
            first_kept += 1
        newest_cut = None
        if first_kept == len(blocks):
            newest_cut = _cut(blocks[-1].shown(len(blocks) - 1), room - 2)
        kept = [block.shown(first_kept) for block in blocks[first_kept:]]
        if newest_cut is not None:
            kept = [newest_cut]
        marker = _elided_marker(first_kept - 1 - (1 if newest_cut is not None else 0))
        return "\n\n".join([head, marker, *kept])


def _echoes(blocks: list[_Block], first_kept: int) -> int:
    """How much longer the kept tail is for its results whose call was left out."""
    return sum(block.echo_chars for block in blocks[first_kept:] if block.whole_when(first_kept))


class _Block:
    """One event's rendering. A result, which leaves out the fields its call's block shows, also
    knows where that block is and how to render itself whole, for when the budget drops the call."""

    def __init__(
        self, text: str, call_block: int | None = None, render_whole: Callable[[], str | None] | None = None
    ) -> None:
        self.text = text
        self.call_block = call_block
        self._render_whole = render_whole

    @cached_property
    def _whole(self) -> str:
        whole = self._render_whole() if self._render_whole is not None else None
        return whole if whole is not None else self.text

    @property
    def echo_chars(self) -> int:
        """How much longer the block is when shown whole."""
        return len(self._whole) - len(self.text)

    def whole_when(self, first_kept: int) -> bool:
        """Whether the block shows whole when the blocks from `first_kept` on are kept (block 0
        always is): a result whose call's block is left out."""
        return self.call_block is not None and 0 < self.call_block < first_kept

    def shown(self, first_kept: int) -> str:
        return self._whole if self.whole_when(first_kept) else self.text


def _cut(block: str, limit: int) -> str | None:
    """The block's first lines (or, for a one-line block, its first characters) that fit in
    `limit` characters, still closed by its tag, with a visible marker where it was cut; None when
    not even that fits."""
    if len(block) <= limit:
        return block
    if "\n" not in block:
        if block.endswith("/>"):
            return None
        opening, text = block.split(">", 1)
        text, closing = text.rsplit("</", 1)
        room = limit - len(opening) - len(closing) - len(_CUT_MARKER) - 4
        return f"{opening}>{text[:room]} {_CUT_MARKER}</{closing}" if room >= 0 else None
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


_COLUMN_SEPARATOR = " | "
# Every character str.splitlines() breaks a line at: any of them inside a value would start a new
# line of the context, where it could pass for another field, row or record.
_LINE_BREAK = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


def _one_line(name: str) -> str:
    """A field name with its line breaks spelled out (`\\n`): names are shown before a colon, on
    the line they start, and must not open another."""
    return _LINE_BREAK.sub(lambda match: repr(match.group())[1:-1], name)


def _arguments_by_call(events: Sequence[Event]) -> dict[str, Mapping[str, Any]]:
    return {event.data.call_id: event.data.arguments for event in events if isinstance(event, ToolCall)}


def _superseded(
    events: Sequence[Event], arguments: Mapping[str, Mapping[str, Any]], intents: frozenset[str] | None
) -> set[int]:
    """Positions of the tool results that a later result of the same call (intent and arguments)
    supersedes, among `intents` (None: any). A result whose call is not in the thread is never
    superseded: its arguments are unknown."""
    latest: dict[tuple[str, str], int] = {}
    superseded: set[int] = set()
    for index, event in enumerate(events):
        if not isinstance(event, ToolResult) or event.data.call_id not in arguments:
            continue
        if intents is not None and event.data.intent not in intents:
            continue
        call = (event.data.intent, json.dumps(arguments[event.data.call_id], sort_keys=True, default=str))
        if call in latest:
            superseded.add(latest[call])
        latest[call] = index
    return superseded


def _escalated_error_runs(events: Sequence[Event]) -> dict[int, list[Error]]:
    """The errors before the last escalation (see `ContextPolicy.compact_escalated_errors`), by
    position: a run of adjacent errors maps its first position to the whole run and each later one
    to an empty list (the run's line shows it)."""
    escalated = max((index for index, event in enumerate(events) if isinstance(event, Escalation)), default=0)
    runs: dict[int, list[Error]] = {}
    first = -1
    for index, event in enumerate(events[:escalated]):
        if not isinstance(event, Error):
            continue
        if index - 1 in runs:
            runs[first].append(event)
            runs[index] = []
        else:
            first = index
            runs[index] = [event]
    return runs


def _escalated_errors_marker(run: Sequence[Error]) -> str:
    sources: dict[str, int] = {}
    for error in run:
        sources[error.data.source] = sources.get(error.data.source, 0) + 1
    kinds = ", ".join(f"{source}: {count}" for source, count in sources.items())
    errors = "error" if len(run) == 1 else "errors"
    text = f"{len(run)} {errors} ({kinds}) before the escalation below; messages left out"
    return f"<earlier_errors>{text}</earlier_errors>"


def _superseded_marker(tag: str) -> str:
    return f"<{tag} superseded_by_later/>"


def _without_echo(result: Mapping[str, Any], arguments: Mapping[str, Any]) -> Mapping[str, Any]:
    """A result's fields that repeat its call's arguments (same name, same value) are left out:
    the call's block, just above, already shows them."""
    return {key: value for key, value in result.items() if key not in arguments or arguments[key] != value}
