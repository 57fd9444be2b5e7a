"""Callback URLs cannot aim the runtime at its own network (SSRF): the policy, and the send.

A caller picks where the runtime POSTs signed notifications; these tests hold that it only ever
reaches a public address over HTTPS, checked on the URL at launch and on the resolved address at
send time, with loopback allowed only where the local stack asks for it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from twelvefactor.adapters.ports import ChannelError
from twelvefactor.adapters.webhook_channel import WebhookChannel
from twelvefactor.core.channels import Notification, WebhookRef
from twelvefactor.core.outbound import UnsafeUrl, check_callback_url

NOTIFICATION = Notification(thread_id="t-1", kind="done", text="Deployed v1.2.3.")

NEVER_A_CALLBACK = [
    "https://169.254.169.254/latest/meta-data/",  # EC2/ECS metadata, IPv4
    "http://169.254.169.254/latest/meta-data/",
    "https://[fd00:ec2::254]/latest/meta-data/",  # EC2 metadata, IPv6 (unique-local)
    "https://169.254.170.2/v2/credentials",  # ECS task credentials
    "https://[fe80::1]/",  # IPv6 link-local
    "https://10.0.0.5/hook",
    "https://172.16.9.9/hook",
    "https://192.168.1.10/hook",
    "https://[fd12:3456::1]/hook",  # unique-local
    "https://100.64.0.1/hook",  # carrier-grade NAT, not global
    "https://0.0.0.0/hook",  # "this host": Linux connects it to loopback
    "https://[::ffff:169.254.169.254]/",  # IPv4-mapped metadata
    "https://[64:ff9b::a9fe:a9fe]/",  # metadata through NAT64
    "https://2852039166/",  # 169.254.169.254 written as one number
    "https://user:secret@hooks.example.com/",  # credentials would be stored and logged
    "ftp://hooks.example.com/",
]
LOOPBACK = [
    "https://127.0.0.1:8443/hook",
    "http://127.0.0.1:9000/hook",
    "https://[::1]/hook",
    "http://localhost:8/",
]


@pytest.mark.parametrize("url", NEVER_A_CALLBACK)
@pytest.mark.parametrize("allow_loopback", [False, True])
def test_metadata_link_local_and_private_urls_are_refused_even_in_local_mode(
    url: str, allow_loopback: bool
) -> None:
    # Given a callback URL aimed at the runtime's own network
    # When it is checked, with or without local mode
    # Then it is refused, saying why
    with pytest.raises(UnsafeUrl, match="callback_url refused"):
        check_callback_url(url, allow_loopback=allow_loopback)


@pytest.mark.parametrize("url", [*LOOPBACK, "http://hooks.example.com/agent"])
def test_loopback_and_plain_http_are_refused_outside_local_mode(url: str) -> None:
    with pytest.raises(UnsafeUrl):
        check_callback_url(url, allow_loopback=False)


@pytest.mark.parametrize("url", LOOPBACK)
def test_loopback_is_allowed_in_local_mode(url: str) -> None:
    check_callback_url(url, allow_loopback=True)


@pytest.mark.parametrize(
    "url", ["https://hooks.example.com/agent", "https://8.8.8.8/x", "https://[2606:4700::1111]/"]
)
def test_a_public_https_url_is_a_callback(url: str) -> None:
    check_callback_url(url, allow_loopback=False)


@dataclass
class Receiver:
    """A webhook receiver on loopback that records each request and answers with ``status``."""

    port: int = 0
    status: int = 204
    location: str = ""
    received: list[tuple[str, dict[str, str]]] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        receiver: Receiver = self.server.receiver  # type: ignore[attr-defined]
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        receiver.received.append((self.path, dict(self.headers.items())))
        self.send_response(receiver.status)
        if receiver.location:
            self.send_header("Location", receiver.location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    found = Receiver(port=server.server_address[1])
    server.receiver = found  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield found
    server.shutdown()
    server.server_close()
    thread.join()


def resolving_to(*addresses: str) -> Any:
    """A resolver standing in for DNS: what a name resolves to is the attacker's choice."""
    return lambda _host, _port: list(addresses)


@pytest.mark.parametrize(
    "addresses",
    [("127.0.0.1",), ("169.254.169.254",), ("93.184.215.14", "10.0.0.7"), ("fd00:ec2::254",)],
)
def test_a_public_name_resolving_to_an_internal_address_is_not_sent_to(
    receiver: Receiver, addresses: tuple[str, ...]
) -> None:
    # Given a deployed runtime (no local mode) and a callback name that resolves to an internal
    # address (or to several, one of them internal): a launch-time check of the URL passed it
    url = f"https://hooks.example.test:{receiver.port}/agent"
    check_callback_url(url, allow_loopback=False)
    channel = WebhookChannel("secret", resolver=resolving_to(*addresses))

    # When it is time to send
    with pytest.raises(ChannelError, match="refused") as refused:
        channel.send(WebhookRef(url=url), NOTIFICATION)

    # Then nothing was sent anywhere, and the error (it may reach the thread) names no address
    assert receiver.received == []
    assert not [address for address in addresses if address in str(refused.value)]


def test_the_post_goes_to_the_address_that_was_checked_under_the_callers_host_name(
    receiver: Receiver,
) -> None:
    # Given local mode and a name that resolves, once, to the receiver's loopback address
    # (.test names never resolve for real: a second lookup at connect time would fail)
    url = f"http://hooks.example.test:{receiver.port}/agent?x=1"
    channel = WebhookChannel("secret", allow_loopback=True, resolver=resolving_to("127.0.0.1"))

    # When the notification is sent
    channel.send(WebhookRef(url=url), NOTIFICATION)

    # Then it reached the checked address, still addressed to the caller's host name
    [(path, headers)] = receiver.received
    assert path == "/agent?x=1"
    assert headers["Host"] == f"hooks.example.test:{receiver.port}"


def test_a_redirect_is_not_followed(receiver: Receiver) -> None:
    # Given a receiver that answers with a redirect to the metadata service
    receiver.status, receiver.location = 307, "http://169.254.169.254/latest/meta-data/"
    channel = WebhookChannel("secret", allow_loopback=True)

    # When a notification is sent to it
    with pytest.raises(ChannelError, match="answered 307") as failed:
        channel.send(WebhookRef(url=f"http://127.0.0.1:{receiver.port}/agent"), NOTIFICATION)

    # Then only the one POST was made: the 3xx is a failed delivery, not a second request,
    # and the error does not repeat where the redirect pointed
    assert len(receiver.received) == 1
    assert "169.254" not in str(failed.value)
