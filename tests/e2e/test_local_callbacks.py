"""Local mode keeps webhook callbacks working, and only loopback opens up there.

The local stack sets WEBHOOK_ALLOW_LOOPBACK, so a developer's receiver on 127.0.0.1 gets signed
notifications over plain HTTP; the metadata service and private addresses stay refused even here.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import ConversationScripts, intent, opening
from tests.support import poll_until
from twelvefactor.adapters import webhook
from twelvefactor.local.stack import LocalStack

pytestmark = pytest.mark.e2e


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.received.append((dict(self.headers.items()), body))  # type: ignore[attr-defined]
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    received: list[tuple[dict[str, str], bytes]] = []
    server.received = received  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_loopback_receiver_hears_back_in_local_mode_and_metadata_stays_refused(
    stack: LocalStack, scripts: ConversationScripts, receiver: tuple[str, list[tuple[dict[str, str], bytes]]]
) -> None:
    url, received = receiver
    # Given a conversation that asks to deploy to production
    text = scripts.add(
        opening("Ship the backend, tell my webhook"),
        intent("list_git_tags"),
        intent("deploy_backend", tag="v1.2.3", environment="production"),
    )

    # When it is launched over HTTP with a callback URL on loopback
    launched = httpx.post(
        f"{stack.api_url}/threads", json={"agent": "deploybot", "message": text, "callback_url": url}
    )

    # Then it is accepted and the approval request reaches the receiver, signed
    assert launched.status_code == 202, launched.text
    poll_until(lambda: list(received), lambda found: len(found) == 1, timeout=60)
    headers, body = received[0]
    webhook.verify(stack.webhook_secret, body, headers)
    assert json.loads(body)["kind"] == "approval"

    # When another launch asks for callbacks at the metadata service
    refused = httpx.post(
        f"{stack.api_url}/threads",
        json={
            "agent": "deploybot",
            "message": "x",
            "callback_url": "http://169.254.169.254/latest/meta-data/",
        },
    )

    # Then even local mode refuses it, with the reason
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"] == "UnsafeUrl"
