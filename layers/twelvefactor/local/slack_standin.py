"""A Slack Web API stand-in on loopback, for the local stack and the tests.

The real `slack_sdk.WebClient`, pointed at this server with `base_url`, posts here instead of to
Slack. Every call is recorded so the terminal (and tests) can show what Slack would have shown.
Only the methods the runtime uses are answered; anything else gets Slack's own
`unknown_method` error, so a new call in the product cannot pass unnoticed.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs

from .loopback import LoopbackServer, send_json

KNOWN_METHODS = ("chat.postMessage", "chat.update", "chat.postEphemeral", "auth.test")


@dataclass(frozen=True)
class SlackCall:
    method: str
    arguments: dict[str, Any]
    token: str | None


@dataclass
class SlackStandIn:
    host: str = "127.0.0.1"
    port: int = 0
    calls: list[SlackCall] = field(default_factory=list)
    on_call: Callable[[SlackCall], None] | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._http = LoopbackServer(
            self._request_handler(), name="slack-standin", host=self.host, port=self.port
        )

    @property
    def base_url(self) -> str:
        """What to give `WebClient(base_url=...)` (note the trailing slash, as Slack's own)."""
        return f"{self._http.url}/api/"

    def messages(self, channel: str | None = None) -> list[SlackCall]:
        with self._lock:
            return [
                call
                for call in self.calls
                if call.method == "chat.postMessage" and channel in (None, call.arguments.get("channel"))
            ]

    def _record(self, call: SlackCall) -> dict[str, Any]:
        with self._lock:
            self.calls.append(call)
        if self.on_call is not None:
            self.on_call(call)
        if call.method not in KNOWN_METHODS:
            return {"ok": False, "error": "unknown_method"}
        if call.method == "auth.test":
            return {"ok": True, "user_id": "UBOT", "team_id": "TLOCAL", "bot_id": "BLOCAL"}
        ts = f"{time.time():.6f}"
        channel = call.arguments.get("channel", "")
        return {"ok": True, "channel": channel, "ts": call.arguments.get("ts", ts), "message": call.arguments}

    def _request_handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode() if length else ""
                if (self.headers.get("Content-Type") or "").startswith("application/json"):
                    arguments = json.loads(raw or "{}")
                else:
                    arguments = {key: values[-1] for key, values in parse_qs(raw).items()}
                for key in ("blocks", "attachments"):
                    if isinstance(arguments.get(key), str):
                        arguments[key] = json.loads(arguments[key])
                token = (self.headers.get("Authorization") or "").removeprefix("Bearer ") or None
                method = self.path.rsplit("/", 1)[-1]
                send_json(self, 200, standin._record(SlackCall(method, arguments, token)))

            def log_message(self, format: str, *args: Any) -> None:
                return

        return RequestHandler

    def __enter__(self) -> SlackStandIn:
        self._http.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._http.stop()
