"""A small client for the one endpoint the LLM adapter uses: ``POST {base_url}/chat/completions``.

It replaces the openai SDK, which with its own HTTP stack weighed about 11 MiB of the layer and
almost half of the reducer's first-call imports, to send one JSON body and read a few fields back.
It speaks the same protocol (``tests/unit/test_chat_completions_contract.py`` sends the same
requests through the SDK and through this client to ``twelvefactor.local.fake_openai`` and checks
they agree) and keeps the SDK's retry rules:

- retried: timeouts, connection errors, and the statuses 408, 409, 429 and 5xx, unless the
  provider says ``x-should-retry: false`` (``true`` makes any status retryable) or asks for a
  ``retry-after`` longer than two minutes;
- the wait: the provider's ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date) when it
  is between 0 and 120 s, else 0.5 s doubling per retry up to 8 s, less up to 25 % jitter;
- ``max_retries`` retries after the first attempt, so at most ``max_retries + 1`` requests.

Anything the provider still refuses after that is a `ProviderError`; the adapter turns it into the
core's error types. The API key travels only in the ``Authorization`` header: it is never part of
a message, a log line or a repr (httpx masks the header in its own).
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import httpx

from twelvefactor.adapters import jitter
from twelvefactor.core.events import TokenUsage

logger = logging.getLogger(__name__)

# What the openai SDK talks to when no base URL is configured.
DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRYABLE_STATUSES = frozenset({408, 409, 429})
INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
MAX_RETRY_AFTER = 120.0


@dataclass(frozen=True)
class ToolCallRequest:
    """One function call the model asked for; ``arguments`` is JSON text, as the model wrote it."""

    name: str
    arguments: str


@dataclass(frozen=True)
class Completion:
    """``choices[0]`` of a chat completion, and the usage; fields the provider left out are empty."""

    content: str | None = None
    refusal: str | None = None
    tool_calls: tuple[ToolCallRequest, ...] = ()
    finish_reason: str | None = None
    usage: TokenUsage | None = None


class ProviderError(Exception):
    """The endpoint did not give a completion, retries included.

    ``status`` is the HTTP status of the last answer (None when there was none: a timeout or a
    connection error) and ``detail`` the provider's own words, or the transport's.
    """

    def __init__(self, detail: str, *, status: int | None = None, timed_out: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.timed_out = timed_out


class ChatCompletionsClient:
    """Chat completions over httpx, with the openai SDK's retry rules."""

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout_seconds: float = 60.0,
        max_retries: int = 3,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self.timeout_seconds = timeout_seconds
        self.max_retries = max_retries
        headers = {"Accept": "application/json"}
        if api_key:
            # Local servers need no key; a provider that does answers 401 without one.
            headers["Authorization"] = f"Bearer {api_key}"
        # Redirects are followed as the SDK does; httpx drops the key when one leaves the origin.
        self._http = httpx.Client(headers=headers, timeout=timeout_seconds, follow_redirects=True)

    def __repr__(self) -> str:
        return f"ChatCompletionsClient(base_url={self.base_url!r})"

    def create(self, body: dict[str, Any]) -> Completion:
        """Send one completion request; the parsed first choice, or `ProviderError`."""
        return parse_completion(self._send("POST", "/chat/completions", body))

    def list_models(self) -> list[str]:
        """The model ids the endpoint serves (``GET {base_url}/models``)."""
        answer = self._send("GET", "/models", None)
        data = answer.get("data")
        items = data if isinstance(data, list) else []
        return [item["id"] for item in items if isinstance(item, dict) and isinstance(item.get("id"), str)]

    def close(self) -> None:
        self._http.close()

    def __del__(self) -> None:
        # As the openai SDK's client does: one dropped without close() (a runtime reset by a test
        # or by `twelvefactor invoke`) must not leave its pooled connections open.
        http: httpx.Client | None = getattr(self, "_http", None)
        if http is not None and not http.is_closed:
            with contextlib.suppress(Exception):
                http.close()

    def _send(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        retries, url = self.max_retries, self.base_url + path
        for retries_taken in range(retries + 1):
            retry_after: float | None = None
            try:
                response = self._http.request(method, url, json=body)
            except httpx.TimeoutException as error:
                failure = ProviderError(
                    f"no answer within {self.timeout_seconds}s ({type(error).__name__})", timed_out=True
                )
            except httpx.RequestError as error:
                failure = ProviderError(str(error) or type(error).__name__)
            else:
                if response.is_success:
                    return _json_object(response)
                failure = ProviderError(provider_message(response), status=response.status_code)
                retry_after = _retry_after(response.headers)
                if not _should_retry(response, retry_after):
                    raise failure
            if retries_taken == retries:
                raise failure
            delay = _retry_delay(retries_taken, retry_after)
            logger.info(
                "the model endpoint failed (%s); retry %d of %d in %.2fs",
                failure.status or failure.detail,
                retries_taken + 1,
                retries,
                delay,
            )
            time.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")


def parse_completion(answer: dict[str, Any]) -> Completion:
    """Read ``choices[0].message``, its finish reason and the usage, leniently: a field of the wrong
    shape is left empty, so the core records an invalid answer instead of the adapter crashing."""
    choices = answer.get("choices")
    choice: dict[str, Any] = (
        choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    )
    message: dict[str, Any] = choice["message"] if isinstance(choice.get("message"), dict) else {}
    calls = []
    tool_calls = message.get("tool_calls")
    for call in tool_calls if isinstance(tool_calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            arguments = function.get("arguments")
            calls.append(ToolCallRequest(function["name"], arguments if isinstance(arguments, str) else ""))
    return Completion(
        content=_text(message.get("content")),
        refusal=_text(message.get("refusal")),
        tool_calls=tuple(calls),
        finish_reason=_text(choice.get("finish_reason")),
        usage=_usage(answer.get("usage")),
    )


def provider_message(response: httpx.Response) -> str:
    """The provider's own words from an error answer (``{"error": {"message": ...}}``)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error", body) if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    if isinstance(error, str):
        return error
    return response.text.strip() or response.reason_phrase or f"HTTP {response.status_code}"


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise ProviderError(
            f"the answer is not a JSON object: {response.text[:200]!r}", status=response.status_code
        )
    return answer


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _usage(usage: Any) -> TokenUsage | None:
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not (isinstance(prompt, int) and isinstance(completion, int)) or min(prompt, completion) < 0:
        return None
    return TokenUsage(prompt_tokens=prompt, completion_tokens=completion)


def _should_retry(response: httpx.Response, retry_after: float | None) -> bool:
    if retry_after is not None and retry_after > MAX_RETRY_AFTER:
        return False  # the provider asks for a longer wait than a Lambda invocation should spend
    verdict: str | None = response.headers.get("x-should-retry")
    if verdict in ("true", "false"):
        return verdict == "true"
    status = response.status_code
    return status in RETRYABLE_STATUSES or status >= 500


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds the provider asks to wait: ``retry-after-ms``, else ``retry-after`` (seconds or a date)."""
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            continue
        return seconds if math.isfinite(seconds) else None
    moment = headers.get("retry-after")
    parsed = email.utils.parsedate_tz(moment) if moment else None
    return None if parsed is None else float(email.utils.mktime_tz(parsed) - time.time())


def _retry_delay(retries_taken: int, retry_after: float | None) -> float:
    if retry_after is not None and 0 < retry_after <= MAX_RETRY_AFTER:
        return retry_after
    backoff = min(INITIAL_RETRY_DELAY * 2.0**retries_taken, MAX_RETRY_DELAY)
    # Jitter, as the SDK does, so many reducers throttled at once do not retry in step.
    return backoff * (1 - 0.25 * jitter.fraction())
