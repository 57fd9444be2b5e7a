"""The console's web server: routes, CSRF, and the pages rendered from the API's answers.

The standard library's threading HTTP server is enough for one operator on loopback; every page is
rendered by Jinja with autoescaping on, so a thread's text (users, tools, the model) is shown and
never run. Defences besides escaping: a Content-Security-Policy that allows only the console's own
script file, a CSRF token on every POST (and a same-origin check), and a Host check that stops DNS
rebinding from reading pages through the loopback address.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from ipaddress import ip_address
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from pydantic import TypeAdapter, ValidationError

from ..commands.prompt import UnusableInput, render_request
from ..commands.threads import ApiError, SequencedEvent, ThreadsApi
from ..core.agent import Agent, AgentRegistry
from ..core.errors import UnknownAgent
from ..core.events import Thread, ThreadId
from ..core.state import ThreadStatus
from ..settings import OutputMode
from . import views

LOOPBACK = "127.0.0.1"
MAX_FORM_BYTES = 64_000
LIST_LIMIT = 50
_THREAD_ID: TypeAdapter[str] = TypeAdapter(ThreadId)
_STATIC = {"console.css": "text/css; charset=utf-8", "console.js": "text/javascript; charset=utf-8"}
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# What a redirect may tell the next page: fixed sentences, never text from the request.
NOTICES = {
    "launched": "Thread launched.",
    "answered": "Your answer was sent.",
    "cancelled": "The thread was cancelled.",
}


class Refused(Exception):
    """A request the console will not serve; the status and message are shown as the page."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Response:
    status: HTTPStatus
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: Mapping[str, list[str]]
    form: Mapping[str, list[str]]
    headers: Mapping[str, str]

    def arg(self, name: str, default: str = "") -> str:
        return (self.query.get(name) or [default])[0]

    def field(self, name: str, default: str = "") -> str:
        return (self.form.get(name) or [default])[0]


Route = Callable[["Console", Request, dict[str, str]], Response]
_ROUTES: list[tuple[str, re.Pattern[str], Route]] = []


def route(method: str, pattern: str) -> Callable[[Route], Route]:
    def register(handler: Route) -> Route:
        _ROUTES.append((method, re.compile(f"^{pattern}$"), handler))
        return handler

    return register


class Console:
    """The pages, for one API. ``prompts_dir`` and ``mode`` are what `twelvefactor prompt render`
    would use to show a decision's exact request."""

    def __init__(
        self,
        api: ThreadsApi,
        registry: AgentRegistry,
        prompts_dir: Path,
        mode: OutputMode,
        *,
        api_label: str = "",
    ) -> None:
        self.api = api
        self.registry = registry
        self.prompts_dir = prompts_dir
        self.mode = mode
        self.api_label = api_label or api.base_url
        self.csrf_token = secrets.token_urlsafe(32)
        self._env = Environment(
            loader=PackageLoader("twelvefactor.console", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )

    # --- dispatch ---------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        try:
            if request.method == "POST":
                self._check_csrf(request)
            for method, pattern, handler in _ROUTES:
                found = pattern.match(request.path)
                if found and method == request.method:
                    return handler(self, request, found.groupdict())
            raise Refused(HTTPStatus.NOT_FOUND, f"no page at {request.path}")
        except Refused as refused:
            return self._error(refused.status, str(refused))
        except ApiError as error:
            status = HTTPStatus(error.status_code) if error.status_code else HTTPStatus.BAD_GATEWAY
            return self._error(status, str(error))

    def _check_csrf(self, request: Request) -> None:
        if not hmac.compare_digest(request.field("csrf_token").encode(), self.csrf_token.encode()):
            raise Refused(HTTPStatus.FORBIDDEN, "the form's CSRF token is missing or wrong: reload the page")
        origin = request.headers.get("origin")
        if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
            raise Refused(HTTPStatus.FORBIDDEN, "a form from another site cannot post here")

    # --- rendering --------------------------------------------------------------------------

    def page(self, template: str, status: HTTPStatus = HTTPStatus.OK, **values: Any) -> Response:
        html = self._env.get_template(template).render(
            csrf_token=self.csrf_token, api_label=self.api_label, filters=views.FILTERS, **values
        )
        return Response(status, html.encode())

    def fragment(self, template: str, **values: Any) -> str:
        return self._env.get_template(template).render(csrf_token=self.csrf_token, **values)

    def _error(self, status: HTTPStatus, message: str) -> Response:
        return self.page("error.html", status, error_status=status, message=message)

    def agent(self, name: str) -> Agent | None:
        try:
            return self.registry.get(name)
        except UnknownAgent:
            return None  # a deployed stack may run an agent this checkout does not have

    def load(self, thread_id: str) -> tuple[dict[str, Any], list[SequencedEvent]]:
        """The thread's view and then all its events: the status was derived from no more than these."""
        view = self.api.get(thread_id)
        return view, self.api.events(thread_id)


def _thread_id(raw: str) -> str:
    try:
        return _THREAD_ID.validate_python(raw)
    except ValidationError:
        raise Refused(HTTPStatus.NOT_FOUND, "no such thread id") from None


def redirect(location: str) -> Response:
    return Response(HTTPStatus.SEE_OTHER, headers={"Location": location})


# --- pages --------------------------------------------------------------------------------------


@route("GET", "/")
def thread_list(console: Console, request: Request, _params: dict[str, str]) -> Response:
    chosen = request.arg("filter", "all")
    if chosen not in views.FILTERS:
        raise Refused(HTTPStatus.BAD_REQUEST, "unknown filter")
    rows = []
    for summary in console.api.list_threads(LIST_LIMIT):
        view, items = console.load(summary["thread_id"])
        rows.append(views.thread_row(view, [item.event for item in items]))
    counts = {name: sum(1 for row in rows if row.phase == name) for name in views.FILTERS}
    counts["all"] = len(rows)
    shown = [row for row in rows if chosen in ("all", row.phase)]
    return console.page("list.html", rows=shown, chosen=chosen, counts=counts)


@route("GET", "/threads/(?P<thread_id>[^/]+)")
def thread_page(console: Console, request: Request, params: dict[str, str]) -> Response:
    thread_id = _thread_id(params["thread_id"])
    view, items = console.load(thread_id)
    events = [item.event for item in items]
    row = views.thread_row(view, events)
    agent = console.agent(row.agent)
    notice = NOTICES.get(request.arg("notice"))
    return console.page(
        "thread.html",
        row=row,
        notice=notice,
        known_agent=agent is not None,
        items=views.timeline(agent, items),
        pending=views.pending(events),
        after=items[-1].seq if items else -1,
    )


@route("GET", "/threads/(?P<thread_id>[^/]+)/updates")
def thread_updates(console: Console, request: Request, params: dict[str, str]) -> Response:
    """Live updates: the rows after the events cursor the page holds, and the panel they imply."""
    thread_id = _thread_id(params["thread_id"])
    try:
        after = int(request.arg("after", "-1"))
    except ValueError:
        raise Refused(HTTPStatus.BAD_REQUEST, "after must be a number") from None
    status = ThreadStatus(console.api.get(thread_id)["status"])  # first: see ThreadsApi's follow
    new = console.api.events(thread_id, after)
    body: dict[str, Any] = {"after": after, "status": status.value, "final": status.is_final}
    if new:
        view, items = console.load(thread_id)
        events = [item.event for item in items]
        row = views.thread_row(view, events)
        agent = console.agent(row.agent)
        rows = [item for item in views.timeline(agent, items) if item.seq > after]
        body.update(
            after=rows[-1].seq if rows else after,
            status=row.status.value,
            final=row.status.is_final,
            rows=console.fragment("_events.html", items=rows, row=row),
            pending=console.fragment("_pending.html", pending=views.pending(events), row=row),
            header=console.fragment("_status.html", row=row),
        )
    return Response(HTTPStatus.OK, json.dumps(body).encode(), "application/json")


@route("GET", "/threads/(?P<thread_id>[^/]+)/requests/(?P<seq>[0-9]+)")
def decision_request(console: Console, _request: Request, params: dict[str, str]) -> Response:
    """The exact request the model answered with this decision: `twelvefactor prompt render` on the
    thread as it stood just before it."""
    thread_id = _thread_id(params["thread_id"])
    seq = int(params["seq"])
    view, items = console.load(thread_id)
    position = next((index for index, item in enumerate(items) if item.seq == seq), None)
    if position is None or not views.is_model_decision(items[position].event):
        raise Refused(HTTPStatus.NOT_FOUND, f"event #{seq} is no model decision of this thread")
    agent = console.agent(view["agent"])
    if agent is None:
        raise Refused(HTTPStatus.NOT_FOUND, f"this checkout has no agent named {view['agent']!r}")
    before = Thread(id=thread_id, agent=agent.name, events=tuple(item.event for item in items[:position]))
    try:
        text = render_request(agent, before, console.prompts_dir, console.mode)
    except UnusableInput as error:
        raise Refused(HTTPStatus.INTERNAL_SERVER_ERROR, str(error)) from None
    decision = views.timeline(agent, items[position : position + 1])[0]
    return console.page(
        "request.html", thread_id=thread_id, seq=seq, request_text=text, decision=decision, mode=console.mode
    )


@route("POST", "/threads/(?P<thread_id>[^/]+)/responses")
def respond(console: Console, request: Request, params: dict[str, str]) -> Response:
    thread_id = _thread_id(params["thread_id"])
    action = request.field("action")
    reply: dict[str, Any]
    if action in ("approve", "reject"):
        reply = {"kind": "approval", "approved": action == "approve", "comment": request.field("comment")}
    elif action == "answer":
        text = request.field("text").strip()
        if not text:
            raise Refused(HTTPStatus.BAD_REQUEST, "an answer needs some text")
        reply = {"kind": "response", "text": text}
    else:
        raise Refused(HTTPStatus.BAD_REQUEST, "unknown action")
    console.api.respond(thread_id, reply)
    return redirect(f"/threads/{thread_id}?{urlencode({'notice': 'answered'})}")


@route("GET", "/threads/(?P<thread_id>[^/]+)/cancel")
def cancel_confirmation(console: Console, _request: Request, params: dict[str, str]) -> Response:
    thread_id = _thread_id(params["thread_id"])
    view = console.api.get(thread_id)
    return console.page("cancel.html", thread_id=thread_id, agent=view["agent"], thread_status=view["status"])


@route("POST", "/threads/(?P<thread_id>[^/]+)/cancel")
def cancel(console: Console, request: Request, params: dict[str, str]) -> Response:
    thread_id = _thread_id(params["thread_id"])
    if request.field("confirm") != "yes":
        raise Refused(HTTPStatus.BAD_REQUEST, "cancelling needs the confirmation")
    console.api.cancel(thread_id)
    return redirect(f"/threads/{thread_id}?{urlencode({'notice': 'cancelled'})}")


@route("GET", "/launch")
def launch_form(console: Console, _request: Request, _params: dict[str, str]) -> Response:
    return console.page("launch.html", agents=console.registry.names, message="", chosen="")


@route("POST", "/launch")
def launch(console: Console, request: Request, _params: dict[str, str]) -> Response:
    agent, message = request.field("agent"), request.field("message").strip()
    if not message:
        return console.page(
            "launch.html",
            HTTPStatus.BAD_REQUEST,
            agents=console.registry.names,
            message=message,
            chosen=agent,
            problem="Type a message for the agent.",
        )
    thread_id = console.api.launch(agent, message)
    return redirect(f"/threads/{_thread_id(thread_id)}?{urlencode({'notice': 'launched'})}")


@route("GET", "/static/(?P<name>[a-z.]+)")
def static(_console: Console, _request: Request, params: dict[str, str]) -> Response:
    name = params["name"]
    if name not in _STATIC:
        raise Refused(HTTPStatus.NOT_FOUND, "no such file")
    body = files("twelvefactor.console").joinpath("static", name).read_bytes()
    return Response(HTTPStatus.OK, body, _STATIC[name])


@route("GET", "/favicon.ico")
def favicon(_console: Console, _request: Request, _params: dict[str, str]) -> Response:
    return Response(HTTPStatus.NO_CONTENT)  # browsers ask for one; there is none to send


# --- the HTTP server ----------------------------------------------------------------------------


def _handler_class(console: Console, allowed_hosts: frozenset[str] | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "twelvefactor-console"

        def do_GET(self) -> None:
            self._serve(b"")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_FORM_BYTES:
                self._send(Response(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, b"form too large", "text/plain"))
                return
            self._serve(self.rfile.read(length))

        def _serve(self, body: bytes) -> None:
            host = self.headers.get("Host", "")
            if allowed_hosts is not None and host not in allowed_hosts:
                # DNS rebinding: a page from another name resolving to 127.0.0.1 must not read ours.
                self._send(Response(HTTPStatus.MISDIRECTED_REQUEST, b"unknown host", "text/plain"))
                return
            parts = urlsplit(self.path)
            form = parse_qs(body.decode("utf-8", "replace")) if self.command == "POST" else {}
            request = Request(
                self.command,
                parts.path,
                parse_qs(parts.query),
                form,
                {name.lower(): value for name, value in self.headers.items()},
            )
            self._send(console.handle(request))

        def _send(self, response: Response) -> None:
            self.send_response(response.status)
            headers = {**_SECURITY_HEADERS, "Content-Type": response.content_type, **response.headers}
            headers["Content-Length"] = str(len(response.body))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(response.body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a page load is many requests; the terminal is for the stack's own output

    return Handler


def is_loopback(host: str) -> bool:
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@contextmanager
def serve(console: Console, host: str = LOOPBACK, port: int = 0) -> Iterator[str]:
    """Serve the console from a background thread; yields its URL."""
    server = ThreadingHTTPServer((host, port), BaseHTTPRequestHandler)
    bound = server.server_address[1]
    # Behind a loopback address only these names reach it; on another address the user chose exposure.
    names = {f"{host}:{bound}", f"localhost:{bound}", f"127.0.0.1:{bound}"}
    allowed = frozenset(names) if is_loopback(host) else None
    server.RequestHandlerClass = _handler_class(console, allowed)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="console", daemon=True)
    thread.start()
    try:
        yield f"http://{'127.0.0.1' if host == LOOPBACK else host}:{bound}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
