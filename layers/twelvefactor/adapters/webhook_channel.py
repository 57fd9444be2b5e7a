"""The webhook `HumanChannel`: a signed POST to the callback URL an API caller gave at launch.

Apart from `webhook` (signing and verifying) because only the functions that notify (Reducer,
Notify) send, and httpx is a cold-start cost the Api function, which only verifies, need not pay.

The URL is the caller's choice, so it is checked again here (`core.outbound`), on every address its
host resolves to now, and the POST goes to the address that was checked: the name cannot resolve to
a public address for the check and to the metadata service for the request. TLS still verifies the
certificate against the name (it is sent as SNI, and as the Host header). Redirects are not
followed: a 3xx is a failed delivery, never a second request to wherever it points.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address

import httpx

from ..core.channels import ChannelRef, Notification, WebhookRef
from ..core.outbound import address_problem, url_problem
from .ports import ChannelError
from .webhook import encode, signed_headers

logger = logging.getLogger(__name__)

Resolver = Callable[[str, int], Sequence[str]]


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (getaddrinfo: what the connection itself would use)."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in found]


@dataclass(frozen=True)
class Target:
    """Where a checked callback goes: the URL with the checked address, and the name it had."""

    url: httpx.URL
    host: str
    host_header: str


class WebhookChannel:
    """A `HumanChannel` for API callers: the notification goes to their callback URL, signed.

    The body carries the callback id, so the receiver answers at ``POST /callbacks/{callback_id}``.
    """

    def __init__(
        self,
        secret: str | None,
        *,
        client: httpx.Client | None = None,
        timeout_seconds: float = 10.0,
        clock: Callable[[], float] = time.time,
        allow_loopback: bool = False,
        resolver: Resolver = resolve,
    ) -> None:
        self._secret = secret
        # No kept-alive connections: one opened (and its certificate checked) for one host name must
        # not carry another name's request because both resolved to the same address.
        self._client = client or httpx.Client(
            timeout=timeout_seconds, follow_redirects=False, limits=httpx.Limits(max_keepalive_connections=0)
        )
        self._clock = clock
        self._allow_loopback = allow_loopback
        self._resolve = resolver

    def send(self, ref: ChannelRef, notification: Notification) -> None:
        if not isinstance(ref, WebhookRef):
            raise ChannelError(f"WebhookChannel cannot deliver to a {ref.kind} channel")
        if not self._secret:
            # An unsigned POST would teach receivers to accept unsigned POSTs.
            raise ChannelError("no webhook secret is configured; refusing to send unsigned")
        target = self.target(ref.url)
        body = encode(notification.model_dump(mode="json"))
        headers = {**signed_headers(self._secret, body, now=self._clock()), "Host": target.host_header}
        try:
            response = self._client.post(
                target.url,
                content=body,
                headers=headers,
                extensions={"sni_hostname": target.host},
                follow_redirects=False,
            )
        except httpx.HTTPError as error:
            logger.warning("webhook POST to %s failed: %s", target.url, error)
            raise ChannelError(f"webhook POST to {target.host!r} failed ({type(error).__name__})") from error
        if not response.is_success:
            # Neither the address nor a redirect's Location goes into the error: it can end up in
            # the thread (an escalation's cause), and a Location can name an internal URL.
            logger.warning("webhook POST to %s answered %s", target.url, response.status_code)
            raise ChannelError(f"webhook POST to {target.host!r} answered {response.status_code}")

    def target(self, url: str) -> Target:
        """The URL pinned to a resolved address that passed the check; ChannelError if none may."""
        problem = url_problem(url, allow_loopback=self._allow_loopback)
        if problem is not None:
            raise ChannelError(f"callback URL refused: {problem}")
        parsed = httpx.URL(url)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            addresses = [_address(found) for found in self._resolve(parsed.host, port)]
        except (OSError, ValueError) as error:
            raise ChannelError(f"callback host {parsed.host!r} does not resolve: {error}") from error
        if not addresses:
            raise ChannelError(f"callback host {parsed.host!r} resolves to no address")
        # Every address, not just the first: the connection could otherwise fall back to another.
        for address in addresses:
            problem = address_problem(address, allow_loopback=self._allow_loopback)
            if problem is not None:
                logger.warning("callback host %s resolved to %s: refused", parsed.host, address)
                raise ChannelError(f"callback host {parsed.host!r} refused: it resolves to {problem}")
        netloc = parsed.netloc.decode("ascii")
        return Target(url=parsed.copy_with(host=str(addresses[0])), host=parsed.host, host_header=netloc)


def _address(found: str) -> IPv4Address | IPv6Address:
    # getaddrinfo gives an IPv6 link-local address with its zone ("fe80::1%eth0").
    return ip_address(found.split("%", 1)[0])
