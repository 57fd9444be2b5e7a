"""SigV4 for the console's calls to a deployed API: the user's own AWS credentials, through botocore.

API Gateway's IAM authorizer checks these signatures, so the console needs nothing deployed and
opens no new way in. Only requests to the API are signed: a large event's presigned S3 link carries
its own signature and would be refused with a second one.
"""

from __future__ import annotations

import re
from collections.abc import Generator

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.session import Session

SERVICE = "execute-api"
_REGION_IN_HOST = re.compile(r"\.execute-api\.([a-z0-9-]+)\.amazonaws\.com$")


class NoCredentials(RuntimeError):
    """botocore found no AWS credentials (environment, profile, SSO, instance role...)."""


def region_of(url: str) -> str | None:
    """The region in an API Gateway URL (``https://ID.execute-api.REGION.amazonaws.com/STAGE``)."""
    found = _REGION_IN_HOST.search(httpx.URL(url).host)
    return found.group(1) if found else None


def is_aws_url(url: str) -> bool:
    return httpx.URL(url).host.endswith(".amazonaws.com")


class SigV4(httpx.Auth):
    """Signs each request under ``base_url`` as botocore signs AWS API calls."""

    requires_request_body = True

    def __init__(self, base_url: str, region: str, credentials: Credentials | None = None) -> None:
        self._base = httpx.URL(base_url.rstrip("/") + "/")
        self._region = region
        found = credentials or Session().get_credentials()
        if found is None:
            raise NoCredentials(
                "no AWS credentials found: sign in (aws sso login, a profile, or AWS_ACCESS_KEY_ID/"
                "AWS_SECRET_ACCESS_KEY) to use the console with a deployed API"
            )
        self._credentials = found

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._covers(request.url):
            signed = AWSRequest(
                method=request.method,
                url=str(request.url),
                data=request.content,
                headers={k: v for k, v in request.headers.items() if k.lower() in _SIGNED_HEADERS},
            )
            SigV4Auth(self._credentials.get_frozen_credentials(), SERVICE, self._region).add_auth(signed)
            for name, value in signed.headers.items():
                request.headers[name] = value
        yield request

    def _covers(self, url: httpx.URL) -> bool:
        return (url.scheme, url.host, url.port) == (self._base.scheme, self._base.host, self._base.port) and (
            url.path.startswith(self._base.path) or url.path + "/" == self._base.path
        )


# Signed besides host and the x-amz-* headers botocore adds: what the API reads from the request.
_SIGNED_HEADERS = frozenset({"content-type", "idempotency-key"})
