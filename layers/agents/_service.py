"""The HTTP client the example agents' executors share.

An executor's exception becomes a compact error event the model reads (factor 9), so every failure
is turned into one short sentence naming the service, the request and the service's own reason.
Executors never retry: a failed call goes back to the model, and a repeated call carries the same
``Idempotency-Key``, so the service does the work at most once.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from twelvefactor.core.events import JsonValue

if TYPE_CHECKING:
    import httpx

MAX_REASON_CHARS = 200


class ServiceError(Exception):
    """A backing service refused or could not answer a tool's request."""


@dataclass(frozen=True)
class ServiceClient:
    name: str  # how the model and the logs call the service, e.g. "deployment service"
    base_url: str
    timeout_seconds: float

    def get(self, path: str) -> JsonValue:
        return self._request("GET", path)

    def post(self, path: str, body: dict[str, Any], *, idempotency_key: str) -> JsonValue:
        return self._request("POST", path, json=body, headers={"Idempotency-Key": idempotency_key})

    @cached_property
    def _client(self) -> httpx.Client:
        # Imported here: only executors (in the Reducer function) send HTTP, while every trigger's
        # first call builds the agent registry, and httpx would add ~55 ms to it for nothing.
        import httpx  # noqa: PLC0415

        # One client for the container's life: building one costs ~40 ms (its TLS context), more
        # than the call itself, and a warm Lambda keeps the connection alive for the next step.
        return httpx.Client(base_url=self.base_url, timeout=self.timeout_seconds)

    def _request(self, method: str, path: str, **kwargs: Any) -> JsonValue:
        import httpx  # noqa: PLC0415 (see _client)

        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise ServiceError(
                f"{self.name}: {method} {path} timed out after {self.timeout_seconds:g}s"
            ) from None
        except httpx.HTTPError as error:
            raise ServiceError(f"{self.name}: {method} {path} failed: {error}") from None
        if response.is_error:
            raise ServiceError(
                f"{self.name}: {method} {path} failed with HTTP {response.status_code}: {_reason(response)}"
            )
        try:
            return response.json()
        except ValueError:
            raise ServiceError(f"{self.name}: {method} {path} returned a body that is not JSON") from None


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    reason = body.get("error") if isinstance(body, dict) else None
    text = str(reason) if reason else response.text or response.reason_phrase
    return text[:MAX_REASON_CHARS]
