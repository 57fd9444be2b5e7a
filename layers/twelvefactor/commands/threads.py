"""``twelvefactor threads``: launch, list, show and answer threads over the REST API.

    twelvefactor threads launch "Can you deploy the backend?" [--agent deploybot]
    twelvefactor threads list
    twelvefactor threads show THREAD_ID [--follow]
    twelvefactor threads respond THREAD_ID --approve | --reject [--comment TEXT] | --text TEXT

The API's base URL comes from ``--api-url`` or ``TWELVEFACTOR_API_URL`` (``twelvefactor local up``
prints it). These are plain HTTP calls: against AWS the API wants SigV4-signed requests, which this
command does not make; it is meant for the local stack.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import ValidationError

from twelvefactor.core.events import (
    Approval,
    ApprovalRequested,
    Cancelled,
    DecisionEvent,
    Done,
    Error,
    Escalation,
    Event,
    HumanRequest,
    HumanResponse,
    Thread,
    ToolCall,
    ToolDispatched,
    ToolResult,
    UserMessage,
    parse_event,
)
from twelvefactor.core.state import ThreadStatus
from twelvefactor.settings import CliSettings

EXIT_FAILED = 1
_VALUE_CHARS = 160
_POLL_SECONDS = 0.5


class ApiError(RuntimeError):
    """The API refused a request or could not be reached; the message is meant for a person."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code  # the API's answer, None when it was not reached


@dataclass(frozen=True)
class SequencedEvent:
    seq: int
    event: Event


class ThreadsApi:
    """The REST API's thread routes, over plain HTTP."""

    def __init__(self, base_url: str, *, timeout: float = 30.0, auth: httpx.Auth | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        # `auth` signs requests to a deployed API (the console's SigV4); the local stack needs none.
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout, auth=auth)

    def close(self) -> None:
        self._client.close()

    def launch(self, agent: str, message: str, channel: dict[str, Any] | None = None) -> str:
        body: dict[str, Any] = {"agent": agent, "message": message}
        if channel is not None:
            body["channel"] = channel
        answer: str = self._call("POST", "/threads", json=body)["thread_id"]
        return answer

    def list_threads(self, limit: int = 50) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._call("GET", "/threads", params={"limit": limit})
        return found

    def get(self, thread_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self._call("GET", f"/threads/{thread_id}")
        return found

    def events(self, thread_id: str, after: int = -1) -> list[SequencedEvent]:
        """Every event with a sequence number above ``after``, each validated as an event: page after
        page while the API says more follow, large events fetched from where their pointer says."""
        found: list[SequencedEvent] = []
        cursor: int | None = after
        while cursor is not None:
            page = self._call("GET", f"/threads/{thread_id}/events", params={"after": cursor})
            found += [self._sequenced(raw) for raw in page["events"]]
            cursor = self._next_cursor(page, cursor)
        return found

    def thread(self, thread_id: str) -> Thread:
        """The whole thread: its view's first page, then the rest by cursor."""
        view = self.get(thread_id)
        events = [self._sequenced(raw) for raw in view["events"]]
        cursor = self._next_cursor(view, -1)
        if cursor is not None:
            events += self.events(thread_id, cursor)
        return Thread(id=view["thread_id"], agent=view["agent"], events=tuple(item.event for item in events))

    def respond(self, thread_id: str, reply: dict[str, Any]) -> str:
        status: str = self._call("POST", f"/threads/{thread_id}/responses", json=reply)["status"]
        return status

    def cancel(self, thread_id: str) -> str:
        status: str = self._call("DELETE", f"/threads/{thread_id}")["status"]
        return status

    def _sequenced(self, raw: dict[str, Any]) -> SequencedEvent:
        fields = dict(raw)
        seq = int(fields.pop("seq"))
        if "data" not in fields and isinstance(fields.get("payload"), dict):
            return SequencedEvent(seq, self._fetch_payload(seq, fields["payload"]))
        return SequencedEvent(seq, parse_event(fields))

    def _fetch_payload(self, seq: int, payload: dict[str, Any]) -> Event:
        """A large event, from the presigned URL its pointer gives (S3's, not the API's)."""
        try:
            response = self._client.get(str(payload["url"]))
        except httpx.TransportError as error:
            raise ApiError(f"cannot fetch event #{seq} from its payload URL ({error})") from error
        if response.status_code >= 400:
            raise ApiError(
                f"event #{seq}: its payload URL answered {response.status_code}", response.status_code
            )
        if hashlib.sha256(response.content).hexdigest() != payload.get("sha256"):
            raise ApiError(f"event #{seq}: the payload fetched does not match its SHA-256")
        return parse_event(response.content)

    @staticmethod
    def _next_cursor(page: dict[str, Any], cursor: int) -> int | None:
        """Where the next page starts; None when this one ended the thread (or the API is older)."""
        following = page.get("next_after")
        if following is None:
            return None
        if int(following) <= cursor:
            raise ApiError(f"the API's cursor went back from {cursor} to {following}")
        return int(following)

    def _call(self, method: str, path: str, **options: Any) -> Any:
        try:
            response = self._client.request(method, path, **options)
        except httpx.TransportError as error:
            raise ApiError(
                f"cannot reach the API at {self.base_url} ({error}); is `twelvefactor local up` running?"
            ) from error
        if response.status_code >= 400:
            raise ApiError(
                f"{method} {path} answered {response.status_code}: {_reason(response)}", response.status_code
            )
        return response.json()


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict):
        return str(body.get("message") or body.get("detail") or body.get("error") or body)
    return str(body)


# --- how an event reads in a terminal ----------------------------------------------------------------


def _clip(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))
    text = " ".join(text.split())
    return text if len(text) <= _VALUE_CHARS else text[: _VALUE_CHARS - 1] + "…"


def format_arguments(arguments: dict[str, Any]) -> str:
    return ", ".join(f"{name}={json.dumps(value)}" for name, value in arguments.items())


def describe(event: Event) -> str:
    """One line saying what happened, for a person watching the thread."""
    usage = event.usage if isinstance(event, DecisionEvent) else None
    tokens = f"  ({usage.total_tokens} tokens)" if usage is not None else ""
    match event:
        case UserMessage(data=data):
            who = f" ({data.channel}{', ' + data.sender if data.sender else ''})"
            return f"user: {_clip(data.text)}{who}"
        case ToolCall(data=data):
            origin = " [prefetch]" if data.origin == "prefetch" else ""
            return f"tool call: {data.intent}({format_arguments(data.arguments)}){origin}{tokens}"
        case ToolResult(data=data):
            return f"tool result: {data.intent} -> {_clip(data.result)}"
        case ToolDispatched(data=data):
            return f"dispatched: {data.intent}, waiting for its callback"
        case ApprovalRequested(data=data):
            return f"needs approval: {data.intent}({format_arguments(data.arguments)})"
        case Approval(data=data):
            verdict = "approved" if data.approved else "rejected"
            comment = f": {_clip(data.comment)}" if data.comment else ""
            return f"{verdict}{' by ' + data.by if data.by else ''}{comment}"
        case HumanRequest(data=data):
            choices = f"  [{' / '.join(data.choices)}]" if data.choices else ""
            return f"question: {_clip(data.question)}{choices}{tokens}"
        case HumanResponse(data=data):
            return f"answer{' from ' + data.by if data.by else ''}: {_clip(data.text)}"
        case Error(data=data):
            return f"error ({data.source}): {_clip(data.message)}{tokens}"
        case Escalation(data=data):
            return f"ESCALATED ({data.reason}): {_clip(data.message)}"
        case Done(data=data):
            return f"done: {_clip(data.message)}{tokens}"
        case Cancelled(data=data):
            return (
                f"cancelled{' by ' + data.by if data.by else ''}{': ' + data.reason if data.reason else ''}"
            )
    return event.type


def event_line(item: SequencedEvent) -> str:
    return f"  #{item.seq:<3} {describe(item.event)}"


def follow(api: ThreadsApi, thread_id: str, after: int = -1) -> Iterator[SequencedEvent]:
    """Every new event as it lands, until the thread waits for someone or ends."""
    while True:
        # Status first: the events read after it include every event that status was derived from.
        status = ThreadStatus(api.get(thread_id)["status"])
        new = api.events(thread_id, after)
        yield from new
        if new:
            after = new[-1].seq
        if not status.is_runnable:
            return
        time.sleep(_POLL_SECONDS)


# --- the command -----------------------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--api-url", help="the API's base URL (default: $TWELVEFACTOR_API_URL)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    launch = actions.add_parser("launch", help="start a thread")
    launch.add_argument("message")
    launch.add_argument("--agent", default="deploybot")
    launch.add_argument("--follow", action="store_true", help="print events until the thread waits or ends")

    listing = actions.add_parser("list", help="the newest threads")
    listing.add_argument("--limit", type=int, default=20)

    show = actions.add_parser("show", help="a thread's status and events")
    show.add_argument("thread_id")
    show.add_argument("--follow", action="store_true", help="keep printing events until it waits or ends")

    respond = actions.add_parser("respond", help="answer what a thread waits for")
    respond.add_argument("thread_id")
    answer = respond.add_mutually_exclusive_group(required=True)
    answer.add_argument("--approve", action="store_true")
    answer.add_argument("--reject", action="store_true")
    answer.add_argument("--text", help="the answer to a question or an escalation")
    respond.add_argument("--comment", default="", help="with --approve/--reject")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    base_url = args.api_url or CliSettings().api_url
    if not base_url:
        print(
            "twelvefactor threads: no API URL: pass --api-url or set TWELVEFACTOR_API_URL "
            "(`twelvefactor local up` prints it)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    api = ThreadsApi(base_url)
    try:
        return _ACTIONS[args.action](api, args)
    except (ApiError, ValidationError) as error:
        print(f"twelvefactor threads: {error}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        api.close()


def _launch(api: ThreadsApi, args: argparse.Namespace) -> int:
    thread_id = api.launch(args.agent, args.message)
    print(thread_id)
    if args.follow:
        _print_following(api, thread_id)
    return 0


def _list(api: ThreadsApi, args: argparse.Namespace) -> int:
    threads = api.list_threads(args.limit)
    if not threads:
        print("no threads yet")
    for summary in threads:
        print(
            f"{summary['thread_id']}  {summary['agent']:<10} {summary['channel']:<8} {summary['created_at']}"
        )
    return 0


def _show(api: ThreadsApi, args: argparse.Namespace) -> int:
    if args.follow:
        _print_following(api, args.thread_id)
        return 0
    view = api.get(args.thread_id)
    print(f"thread {view['thread_id']} ({view['agent']}, {view['channel']}): {view['status']}")
    for item in api.events(args.thread_id):
        print(event_line(item))
    print(f"tokens: {view['total_tokens']}")
    return 0


def _print_following(api: ThreadsApi, thread_id: str) -> None:
    for item in follow(api, thread_id):
        print(event_line(item), flush=True)
    print(f"status: {api.get(thread_id)['status']}")


def _respond(api: ThreadsApi, args: argparse.Namespace) -> int:
    reply: dict[str, Any]
    if args.text is not None:
        reply = {"kind": "response", "text": args.text}
    else:
        reply = {"kind": "approval", "approved": bool(args.approve), "comment": args.comment}
    print(f"{args.thread_id}: {api.respond(args.thread_id, reply)}")
    return 0


_ACTIONS = {"launch": _launch, "list": _list, "show": _show, "respond": _respond}
