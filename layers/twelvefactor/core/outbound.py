"""Where the runtime may send a request a caller chose: the SSRF policy for callback URLs.

A caller who launches a thread with a ``callback_url`` picks where the runtime POSTs signed
notifications. Left open, that is a way to make the runtime reach what only it can reach: the
instance metadata service (169.254.169.254, fd00:ec2::254), the VPC's private hosts, its own
loopback. So a callback goes only to a public address over HTTPS. The check runs twice: on the URL
at launch (a literal address or ``localhost`` is refused before anything is written), and on every
address the host resolves to at send time (a public name can resolve to a private address, and
can change between the two), where the request is then made to the address that was checked.

Loopback and plain HTTP are allowed only where ``allow_loopback`` says so: the local stack, whose
callers' receivers listen on 127.0.0.1. Link-local, private and unique-local addresses never are.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, IPv6Network, ip_address

from pydantic_core import Url

from .errors import TwelvefactorError

# NAT64 (DNS64 in a VPC) embeds an IPv4 address in this prefix: judge the embedded address.
_NAT64 = IPv6Network("64:ff9b::/96")
_UNIQUE_LOCAL = IPv6Network("fc00::/7")
_LOOPBACK_NAMES = ("localhost", "localhost.localdomain")


class UnsafeUrl(TwelvefactorError):
    """A caller-chosen URL aimed where the runtime must not send: 422 at launch, never sent."""


def address_problem(address: IPv4Address | IPv6Address, *, allow_loopback: bool) -> str | None:
    """What kind of address the runtime must not connect to ``address`` is ("a private address"),
    or None for a public one. It does not repeat the address: at send time that is what the caller's
    name resolved to, which the error (it may reach the thread as an escalation) should not teach."""
    if isinstance(address, IPv6Address):
        if address.ipv4_mapped is not None:
            return address_problem(address.ipv4_mapped, allow_loopback=allow_loopback)
        if address in _NAT64:
            embedded = IPv4Address(int(address) & 0xFFFFFFFF)
            return address_problem(embedded, allow_loopback=allow_loopback)
    if address.is_loopback:
        return None if allow_loopback else "a loopback address"
    if address.is_link_local:
        return "a link-local address (where cloud metadata services answer)"
    if isinstance(address, IPv6Address) and address in _UNIQUE_LOCAL:
        return "a unique-local address"
    if address.is_private:
        return "a private address"
    if address.is_multicast or not address.is_global:
        return "not a public unicast address"
    return None


def url_problem(url: str, *, allow_loopback: bool) -> str | None:
    """Why ``url`` may not be a callback, judged from the URL alone (no DNS), or None."""
    try:
        # Parsed as browsers and the API's HttpUrl do, so "2852039166" or "0x7f.1" is the address
        # it stands for (169.254.169.254, 127.0.0.1), not a name that slips past the check.
        parts = Url(url)
    except ValueError:
        return "must be a valid URL"
    if parts.scheme != "https" and not (parts.scheme == "http" and allow_loopback):
        return "must be an https:// URL"
    if parts.username or parts.password:
        return "must not carry credentials"
    host = (parts.host or "").strip("[]").rstrip(".").lower()
    if not host:
        return "must name a host"
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return None if allow_loopback else f"{host} is a loopback name"
    try:
        address = ip_address(host)
    except ValueError:
        return None  # a name: its addresses are checked when it is resolved, at send time
    problem = address_problem(address, allow_loopback=allow_loopback)
    return f"{address} is {problem}" if problem is not None else None


def check_callback_url(url: str, *, allow_loopback: bool) -> None:
    """Raise UnsafeUrl, saying why, unless ``url`` may receive callbacks."""
    problem = url_problem(url, allow_loopback=allow_loopback)
    if problem is not None:
        raise UnsafeUrl(f"callback_url refused: {problem}")
