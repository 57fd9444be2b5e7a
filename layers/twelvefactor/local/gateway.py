"""A Docker-free stand-in for `sam local start-api`.

An HTTP server on loopback that turns each request into a real API Gateway (REST, v1 proxy)
event, calls the Lambda handler the template maps the route to, and turns the handler's answer
back into an HTTP response. The handlers cannot tell it from API Gateway: the same event shape
reaches them here, in `sam local`, and on AWS.

It serves one request at a time, as one Lambda execution environment does: handlers keep
per-invocation state in module globals (Powertools' resolver holds the current event, the Logger
its keys), and here every function also shares this process's runtime, whose idempotency layer
Powertools configures per call (the key prefix, the invocation's context). Two invocations at once
would mix those up: a launch processed under another request's Idempotency-Key, say. A burst of
requests queues; on AWS each function scales out instead.

What it does not emulate: IAM (SigV4) authorization. It is a dev server bound to 127.0.0.1; the
caller identity it reports is a fixed local user.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .lambda_bridge import LambdaContext
from .loopback import LoopbackServer

Handler = Callable[[dict[str, Any], Any], Any]
_TEXT_TYPES = ("application/json", "text/", "application/x-www-form-urlencoded", "application/xml")


@dataclass(frozen=True)
class Route:
    method: str  # GET, POST, ... or ANY
    resource: str  # the template's path, e.g. /threads/{id}
    function_name: str
    handler: Handler

    def accepts(self, method: str) -> bool:
        return self.method in ("ANY", method)

    def match_path(self, path: str) -> dict[str, str] | None:
        found = _pattern(self.resource).fullmatch(path)
        return None if found is None else found.groupdict()


def _pattern(resource: str) -> re.Pattern[str]:
    regex = ""
    for part in re.split(r"(\{[^}]+\})", resource):
        if part.startswith("{") and part.endswith("+}"):
            regex += f"(?P<{part[1:-2]}>.+)"
        elif part.startswith("{"):
            regex += f"(?P<{part[1:-1]}>[^/]+)"
        else:
            regex += re.escape(part)
    return re.compile(regex)


def proxy_event(
    route: Route,
    method: str,
    raw_path: str,
    headers: dict[str, str],
    body: bytes,
    path_parameters: dict[str, str],
    stage: str = "local",
) -> dict[str, Any]:
    """The REST API proxy integration event, as API Gateway sends it."""
    url = urlsplit(raw_path)
    query = parse_qs(url.query, keep_blank_values=True)
    content_type = headers.get("Content-Type") or headers.get("content-type") or ""
    # A "text" body that is not UTF-8 reaches the function base64-encoded, bytes intact, rather than
    # failing here: the function must cope with it, not the emulator.
    is_text = not body or (content_type.startswith(_TEXT_TYPES) and _is_utf8(body))
    return {
        "resource": route.resource,
        "path": url.path,
        "httpMethod": method,
        "headers": headers or None,
        "multiValueHeaders": {key: [value] for key, value in headers.items()} or None,
        "queryStringParameters": {key: values[-1] for key, values in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": path_parameters or None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": route.resource,
            "httpMethod": method,
            "path": f"/{stage}{url.path}",
            "stage": stage,
            "requestId": str(uuid.uuid4()),
            "requestTimeEpoch": int(time.time() * 1000),
            "accountId": "123456789012",
            "apiId": "local",
            "protocol": "HTTP/1.1",
            "identity": {"sourceIp": "127.0.0.1", "userArn": "arn:aws:iam::123456789012:user/local"},
        },
        "body": (body.decode() if is_text else base64.b64encode(body).decode()) if body else None,
        "isBase64Encoded": bool(body) and not is_text,
    }


def _is_utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class LocalGateway:
    """Serves `routes` on 127.0.0.1; use as a context manager to start and stop it."""

    def __init__(self, routes: Sequence[Route], *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.routes = list(routes)
        self._one_at_a_time = threading.Lock()
        self._http = LoopbackServer(self._request_handler(), name="local-gateway", host=host, port=port)

    @property
    def url(self) -> str:
        return self._http.url

    def dispatch(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        path = urlsplit(raw_path).path
        on_path = [(route, params) for route in self.routes if (params := route.match_path(path)) is not None]
        for route, parameters in on_path:
            if route.accepts(method):
                event = proxy_event(route, method, raw_path, headers, body, parameters)
                with self._one_at_a_time:
                    result = route.handler(event, LambdaContext(function_name=route.function_name))
                return _http_response(result)
        if on_path:
            return _json_error(405, f"{method} is not allowed on {path}")
        return _json_error(404, f"no route for {method} {path}")

    def _request_handler(self) -> type[BaseHTTPRequestHandler]:
        gateway = self

        class RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {key: value for key, value in self.headers.items()}
                try:
                    status, response_headers, payload = gateway.dispatch(
                        self.command, self.path, headers, body
                    )
                except Exception as error:  # the handler crashed: API Gateway answers 502
                    status, response_headers, payload = _json_error(502, f"handler failed: {error}")
                self.send_response(status)
                for key, value in response_headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

            def log_message(self, format: str, *args: Any) -> None:
                return  # the handlers log; a second access log would only be noise

        return RequestHandler

    def __enter__(self) -> LocalGateway:
        self._http.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._http.stop()


def _http_response(result: Any) -> tuple[int, dict[str, str], bytes]:
    if not isinstance(result, dict) or "statusCode" not in result:
        return _json_error(502, "malformed Lambda proxy response")
    headers = {str(key): str(value) for key, value in (result.get("headers") or {}).items()}
    for key, values in (result.get("multiValueHeaders") or {}).items():
        headers[str(key)] = ", ".join(str(value) for value in values)
    body = result.get("body") or ""
    payload = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode()
    return int(result["statusCode"]), headers, payload


def _json_error(status: int, message: str) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps({"message": message}).encode()


@contextmanager
def serve(routes: Sequence[Route], port: int = 0) -> Iterator[LocalGateway]:
    with LocalGateway(routes, port=port) as gateway:
        yield gateway
