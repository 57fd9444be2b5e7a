"""The webhook `HumanChannel`: a signed POST to the callback URL an API caller gave at launch.

Apart from `webhook` (signing and verifying) because only the functions that notify (Reducer,
Notify) send, and httpx is a cold-start cost the Api function, which only verifies, need not pay.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from ..core.channels import ChannelRef, Notification, WebhookRef
from .ports import ChannelError
from .webhook import encode, signed_headers


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
    ) -> None:
        self._secret = secret
        self._client = client or httpx.Client(timeout=timeout_seconds)
        self._clock = clock

    def send(self, ref: ChannelRef, notification: Notification) -> None:
        if not isinstance(ref, WebhookRef):
            raise ChannelError(f"WebhookChannel cannot deliver to a {ref.kind} channel")
        if not self._secret:
            # An unsigned POST would teach receivers to accept unsigned POSTs.
            raise ChannelError("no webhook secret is configured; refusing to send unsigned")
        body = encode(notification.model_dump(mode="json"))
        headers = signed_headers(self._secret, body, now=self._clock())
        try:
            self._client.post(ref.url, content=body, headers=headers).raise_for_status()
        except httpx.HTTPError as error:
            raise ChannelError(f"webhook POST failed: {error}") from error
