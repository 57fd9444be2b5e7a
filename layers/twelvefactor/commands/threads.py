"""``twelvefactor threads``: launch, list, show and answer threads over the REST API.

    twelvefactor threads launch "Can you deploy the backend?" [--agent deploybot]
    twelvefactor threads list
    twelvefactor threads show THREAD_ID [--follow | --json]
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
from urllib.parse import quote

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
    dump_event,
    parse_event,
    parse_thread,
)
from twelvefactor.core.state import ThreadStatus
from twelvefactor.settings import CliSettings

EXIT_FAILED = 1
EXIT_USAGE = 2  # as argparse exits on a bad command line
_VALUE_CHARS = 160
_POLL_SECONDS = 0.5


class UnusableArguments(Exception):
    """Options that do not go together; refused before any request is sent."""


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
        found: dict[str, Any] = self._call("GET", _path("threads", thread_id))
        return found

    def events(self, thread_id: str, after: int = -1) -> list[SequencedEvent]:
        """Every event with a sequence number above ``after``, each validated as an event: page after
        page while the API says more follow, large events fetched from where their pointer says."""
        found: list[SequencedEvent] = []
        cursor: int | None = after
        while cursor is not None:
            page = self._call("GET", _path("threads", thread_id, "events"), params={"after": cursor})
            found += [self._sequenced(raw) for raw in page["events"]]
            cursor = self._next_cursor(page, cursor)
        return found

    def thread(self, thread_id: str) -> Thread:
        """The whole thread: its view's first page, then the rest by cursor."""
        view, events = self._whole(thread_id)
        return Thread(id=view["thread_id"], agent=view["agent"], events=tuple(item.event for item in events))

    def saved_view(self, thread_id: str) -> dict[str, Any]:
        """``GET /threads/{id}``'s answer made whole, for a file: every page read, every event kept in
        S3 fetched in its place, and ``next_after`` null. Events are cut at the view's ``last_seq``,
        so its status and token count describe exactly the events saved with them."""
        view, events = self._whole(thread_id)
        last_seq = int(view.get("last_seq", events[-1].seq if events else -1))
        kept = [{"seq": item.seq, **dump_event(item.event)} for item in events if item.seq <= last_seq]
        return {**view, "events": kept, "next_after": None}

    def _whole(self, thread_id: str) -> tuple[dict[str, Any], list[SequencedEvent]]:
        view = self.get(thread_id)
        events = [self._sequenced(raw) for raw in view["events"]]
        cursor = self._next_cursor(view, -1)
        if cursor is not None:
            events += self.events(thread_id, cursor)
        return view, events

    def respond(self, thread_id: str, reply: dict[str, Any]) -> str:
        status: str = self._call("POST", _path("threads", thread_id, "responses"), json=reply)["status"]
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


class UnusableThreadFile(ValueError):
    """A thread file that does not hold a whole thread; the message says why and what to do."""


def thread_from_document(raw: bytes, where: str) -> Thread:
    """A whole thread from a saved file, in any shape the project writes one:

    - ``GET /threads/{id}``'s answer, and ``twelvefactor threads show ID --json``: ``thread_id``,
      events each with its ``seq``, and what the API derives (status, tokens, channel, ``last_seq``),
      which is ignored: it is derived again from the events;
    - ``dump_thread`` (``eval --export-threads``): ``id``, ``agent`` and the events.

    A file holding less than the thread up to its ``last_seq`` is refused rather than read short: a
    first page cut by the page's size, events that do not start at #0 in order, or an event kept in
    S3 whose file holds only its pointer (its presigned link expires). A view whose page holds every
    event up to its ``last_seq`` is the whole thread as of that moment, even when ``next_after``
    says more were appended since it was read."""
    whole = f"save the whole thread with `twelvefactor threads show <id> --json > {where}`"
    try:
        document = json.loads(raw)
    except ValueError as error:
        raise UnusableThreadFile(f"{where} is not a valid thread (not JSON: {error})") from None
    if not isinstance(document, dict) or not isinstance(document.get("events"), list):
        raise UnusableThreadFile(
            f"{where} is not a valid thread (no JSON object with an agent and its events)"
        )
    events: list[Any] = []
    for position, item in enumerate(document["events"]):
        fields = dict(item) if isinstance(item, dict) else item
        if isinstance(fields, dict) and "seq" in fields:
            seq = fields.pop("seq")
            if isinstance(seq, bool) or not isinstance(seq, int) or seq != position:
                raise UnusableThreadFile(
                    f"{where}: event {position} has seq {seq!r}: the file must hold the thread's "
                    f"events from #0 in order; {whole}"
                )
        if isinstance(fields, dict) and "payload" in fields and "data" not in fields:
            raise UnusableThreadFile(
                f"{where}: event #{position} ({fields.get('type')}) is kept in S3 and the file holds only "
                f"its link; {whole}, which fetches it"
            )
        events.append(fields)
    # The API's view holds the events up to its last_seq (what its status describes): all of them
    # when its page had room, even if more were appended since (next_after then points past them).
    last_seq, count = document.get("last_seq"), len(document["events"])
    whole_view = isinstance(last_seq, int) and not isinstance(last_seq, bool) and count == last_seq + 1
    if not whole_view and (document.get("next_after") is not None or last_seq is not None):
        raise UnusableThreadFile(
            f"{where}: holds only the first page of the thread's events ({count} events, next_after "
            f"{document.get('next_after')}, last_seq {last_seq}): {whole}, or replay it with "
            "`twelvefactor eval --from-thread <id>`, which reads every page"
        )
    fields = {"id": document.get("id", document.get("thread_id")), "agent": document.get("agent")}
    try:
        return parse_thread(json.dumps({**fields, "events": events}))
    except ValidationError as error:
        first = error.errors()[0]
        at = ".".join(str(part) for part in first["loc"]) or "document"
        count = error.error_count()
        raise UnusableThreadFile(
            f"{where} is not a valid thread ({count} problem{'s' if count > 1 else ''}; {at}: {first['msg']})"
        ) from None


def _path(*segments: str) -> str:
    """A request path whose segments are each percent-encoded: a thread id such as ``../x`` or
    ``a/b`` stays one segment, never another route (an HTTP client resolves ``..`` and ``.``)."""
    return "/" + "/".join(
        "%2E" * len(segment) if segment in {".", ".."} else quote(segment, safe="") for segment in segments
    )


def _reason(response: httpx.Response) -> str:
    """The API's refusal as a sentence: its message, else its field problems ("body.message:
    string_too_long"), never a Python repr of the JSON."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if not isinstance(body, dict):
        return json.dumps(body)[:300]
    if isinstance(body.get("message"), str) and body["message"]:
        return str(body["message"])
    problems = body.get("detail")
    if isinstance(problems, list) and problems:
        return "; ".join(_problem(item) for item in problems)
    return str(body.get("error") or json.dumps(body)[:300])


def _problem(item: Any) -> str:
    if not isinstance(item, dict):
        return json.dumps(item)
    where = ".".join(str(part) for part in item.get("loc") or ()) or "body"
    return f"{where}: {item.get('type', 'invalid')}"


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
    show.add_argument(
        "--json",
        action="store_true",
        help="print the whole thread as GET /threads/{id} answers it, every page and S3-kept event "
        "included: a file for `prompt render --thread` and `eval --from-thread`",
    )

    respond = actions.add_parser("respond", help="answer what a thread waits for")
    respond.add_argument("thread_id")
    answer = respond.add_mutually_exclusive_group(required=True)
    answer.add_argument("--approve", action="store_true")
    answer.add_argument("--reject", action="store_true")
    answer.add_argument("--text", help="the answer to a question or an escalation")
    respond.add_argument("--comment", default="", help="with --approve/--reject (not with --text)")
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
    except UnusableArguments as error:
        print(f"twelvefactor threads {args.action}: {error}", file=sys.stderr)
        return EXIT_USAGE
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
        return 0
    # The list route answers what the thread index holds; a thread's status is derived from its
    # events, which GET /threads/{id} reads (one request per thread: an operator's view, not a hot path).
    rows = [
        (summary, summary.get("status") or api.get(summary["thread_id"])["status"]) for summary in threads
    ]
    width = max(len(summary["thread_id"]) for summary in threads)
    print(f"{'THREAD':<{width}}  {'AGENT':<10} {'STATUS':<17} {'CHANNEL':<11} CREATED")
    for summary, status in rows:
        print(
            f"{summary['thread_id']:<{width}}  {summary['agent']:<10} {status:<17} "
            f"{summary['channel']:<11} {summary['created_at']}"
        )
    return 0


def _show(api: ThreadsApi, args: argparse.Namespace) -> int:
    if args.json:
        if args.follow:
            raise UnusableArguments("--json prints one moment of the thread; it does not go with --follow")
        print(json.dumps(api.saved_view(args.thread_id), indent=2))
        return 0
    if args.follow:
        _print_following(api, args.thread_id)
        return 0
    view = api.get(args.thread_id)
    print(f"thread {view['thread_id']} ({view['agent']}, {view['channel']}): {view['status']}")
    for item in api.events(args.thread_id):
        print(event_line(item))
    print(f"tokens: {view['total_tokens']}{_cache_note(view.get('usage'))}")
    print(f"cost: {_cost_line(view)}")
    return 0


def _cache_note(usage: Any) -> str:
    read = usage.get("cache_read_tokens") if isinstance(usage, dict) else None
    written = usage.get("cache_write_tokens") if isinstance(usage, dict) else None
    if not read and not written:
        return ""
    return f" ({read or 0} read from the prompt cache, {written or 0} written to it)"


def _cost_line(view: dict[str, Any]) -> str:
    cost = view.get("cost_usd")
    return "unknown (no price for this model)" if cost is None else f"${cost}"


def _print_following(api: ThreadsApi, thread_id: str) -> None:
    for item in follow(api, thread_id):
        print(event_line(item), flush=True)
    print(f"status: {api.get(thread_id)['status']}")


def _respond(api: ThreadsApi, args: argparse.Namespace) -> int:
    reply: dict[str, Any]
    if args.text is not None:
        if args.comment:
            # The API's text reply has no comment field: dropping it silently would lose what was said.
            raise UnusableArguments(
                "--comment goes with --approve or --reject; a --text answer is the whole reply, "
                "so put the comment in the text"
            )
        reply = {"kind": "response", "text": args.text}
    else:
        reply = {"kind": "approval", "approved": bool(args.approve), "comment": args.comment}
    print(f"{args.thread_id}: {api.respond(args.thread_id, reply)}")
    return 0


_ACTIONS = {"launch": _launch, "list": _list, "show": _show, "respond": _respond}
