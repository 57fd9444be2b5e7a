"""Signed webhooks: HMAC-SHA256 over ``<timestamp>.<body>``, both ways.

Outbound, a thread launched through the API with a ``callback_url`` hears back by a signed POST;
inbound, ``POST /callbacks/{callback_id}`` only accepts a body signed with the same secret. The
timestamp is part of what is signed and must be recent, so a captured request cannot be replayed
later; the comparison is constant-time so the signature cannot be guessed byte by byte.

Sending lives in `webhook_channel`: the Api function only verifies, and should not load an HTTP
client at cold start to do so.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from ..core.errors import TwelvefactorError

SIGNATURE_HEADER = "X-Twelvefactor-Signature"
TIMESTAMP_HEADER = "X-Twelvefactor-Timestamp"
SCHEME = "sha256="
# Same window as Slack's: wide enough for clock skew, too narrow for a useful replay.
MAX_AGE_SECONDS = 300


class SignatureRejected(TwelvefactorError):
    """An inbound webhook whose signature or timestamp does not check out (HTTP 401)."""


class UnknownCallback(TwelvefactorError):
    """No pending wait has this callback id (HTTP 404)."""


def signature(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return SCHEME + digest


def signed_headers(secret: str, body: bytes, *, now: float | None = None) -> dict[str, str]:
    timestamp = int(time.time() if now is None else now)
    return {
        SIGNATURE_HEADER: signature(secret, timestamp, body),
        TIMESTAMP_HEADER: str(timestamp),
        "Content-Type": "application/json",
    }


def verify(
    secret: str | None,
    body: bytes,
    headers: Mapping[str, str],
    *,
    now: float | None = None,
) -> None:
    """Raise SignatureRejected unless ``headers`` carry a fresh, valid signature of ``body``."""
    if not secret:
        raise SignatureRejected("no webhook secret is configured, so no callback can be trusted")
    lowered = {key.lower(): value for key, value in headers.items()}
    given = lowered.get(SIGNATURE_HEADER.lower())
    stamp = lowered.get(TIMESTAMP_HEADER.lower())
    if not given or not stamp:
        raise SignatureRejected(f"missing {SIGNATURE_HEADER} or {TIMESTAMP_HEADER} header")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise SignatureRejected(f"{TIMESTAMP_HEADER} is not a unix timestamp") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > MAX_AGE_SECONDS:
        raise SignatureRejected(f"timestamp is more than {MAX_AGE_SECONDS}s away from now")
    if not hmac.compare_digest(signature(secret, timestamp, body), given):
        raise SignatureRejected("signature does not match the body")


def encode(payload: Mapping[str, Any]) -> bytes:
    """The exact bytes that are signed and sent: compact, key-sorted JSON."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
