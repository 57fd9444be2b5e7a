"""The console's parts that need no browser: SigV4 signing as API Gateway checks it, the filters.

The signature is checked the way the IAM authorizer does: a server on loopback recomputes it from
the request as it arrived (method, path, the signed headers, the body) with the caller's secret key,
so a header changed after signing, or a body not covered, fails here.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from twelvefactor import cli
from twelvefactor.commands.console import build
from twelvefactor.commands.threads import ThreadsApi
from twelvefactor.console import views
from twelvefactor.console.sigv4 import SigV4, is_aws_url, region_of
from twelvefactor.core.events import (
    ApprovalRequested,
    ApprovalRequestedData,
    Done,
    DoneData,
    Escalation,
    EscalationData,
    Event,
    HumanRequest,
    HumanRequestData,
    ToolCall,
    ToolCallData,
    UserMessage,
    UserMessageData,
)
from twelvefactor.core.state import status

CREDENTIALS = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "session-token")
REGION = "eu-west-1"
_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<scope>[^,]+), "
    r"SignedHeaders=(?P<headers>[^,]+), Signature=(?P<signature>[0-9a-f]{64})$"
)


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeApi:
    url: str
    received: list[Received] = field(default_factory=list)


@pytest.fixture
def fake_api() -> Iterator[FakeApi]:
    received: list[Received] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            received.append(Received(self.command, self.path, dict(self.headers.items()), body))
            answer = json.dumps({"thread_id": "t1", "status": "accepted"}).encode()
            self.send_response(202)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        do_GET = do_POST = do_DELETE = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield FakeApi(f"http://127.0.0.1:{server.server_address[1]}", received)
    finally:
        server.shutdown()
        server.server_close()


def _verify(request: Received, base: str) -> dict[str, str]:
    """Recompute the SigV4 signature from the request as received; returns the parsed header."""
    found = _AUTHORIZATION.match(request.headers["Authorization"])
    assert found is not None, request.headers["Authorization"]
    signed = found.group("headers").split(";")
    lower = {name.lower(): value for name, value in request.headers.items()}
    rebuilt = AWSRequest(
        method=request.method,
        url=f"{base}{request.path}",
        data=request.body,
        headers={name: lower[name] for name in signed},
    )
    rebuilt.context["timestamp"] = lower["x-amz-date"]
    signer = SigV4Auth(CREDENTIALS, "execute-api", REGION)
    expected = signer.signature(signer.string_to_sign(rebuilt, signer.canonical_request(rebuilt)), rebuilt)
    assert found.group("signature") == expected
    return {**found.groupdict(), "token": lower.get("x-amz-security-token", "")}


def test_requests_to_the_api_carry_a_sigv4_signature_api_gateway_accepts(fake_api: FakeApi) -> None:
    # Given the threads client the console uses, signing for a deployed stage
    base = f"{fake_api.url}/prod"
    api = ThreadsApi(base, auth=SigV4(base, REGION, CREDENTIALS))

    # When it launches a thread (a body) and cancels one (no body)
    api.launch("deploybot", "Can you deploy the backend?")
    api._call("DELETE", "/threads/t1")
    api.close()

    # Then each request's signature holds for what arrived, under the user's key and execute-api's scope
    launch, cancel = fake_api.received
    assert (launch.method, launch.path, cancel.method) == ("POST", "/prod/threads", "DELETE")
    for request in (launch, cancel):
        parts = _verify(request, fake_api.url)
        assert parts["key"] == "AKIDEXAMPLE"
        assert parts["scope"].endswith(f"/{REGION}/execute-api/aws4_request")
        assert parts["token"] == "session-token"
        assert "host" in parts["headers"].split(";")
    assert "content-type" in _AUTHORIZATION.match(launch.headers["Authorization"])["headers"]  # type: ignore[index]


def test_a_body_changed_after_signing_fails_the_check(fake_api: FakeApi) -> None:
    # Given a signed launch as it arrived
    base = f"{fake_api.url}/prod"
    with httpx.Client(auth=SigV4(base, REGION, CREDENTIALS)) as client:
        client.post(f"{base}/threads", json={"agent": "deploybot", "message": "deploy"})
    arrived = fake_api.received[0]

    # When someone alters the body on the way, Then the signature no longer holds
    tampered = Received(
        arrived.method, arrived.path, arrived.headers, arrived.body.replace(b"deploy", b"delete")
    )
    with pytest.raises(AssertionError):
        _verify(tampered, fake_api.url)


def test_links_outside_the_api_such_as_presigned_s3_urls_are_not_signed(fake_api: FakeApi) -> None:
    # Given a client signing for the API under /prod
    base = f"{fake_api.url}/prod"
    with httpx.Client(auth=SigV4(base, REGION, CREDENTIALS)) as client:
        # When it fetches a URL outside the API (a large event's presigned link carries its own signature)
        client.get(f"{fake_api.url}/payloads/event.json?X-Amz-Signature=abc")

    # Then it goes out as it is: a second signature would make S3 refuse it
    assert "Authorization" not in fake_api.received[0].headers


def test_the_region_and_signing_default_come_from_an_execute_api_url() -> None:
    url = "https://abc123.execute-api.eu-central-1.amazonaws.com/prod"
    assert region_of(url) == "eu-central-1"
    assert is_aws_url(url)
    assert not is_aws_url("http://127.0.0.1:3000")
    assert region_of("http://127.0.0.1:3000") is None


AT = datetime(2024, 6, 3, 8, 0, tzinfo=UTC)
OPENING = UserMessage(at=AT, data=UserMessageData(text="Deploy"))
CALL = ToolCall(at=AT, data=ToolCallData(call_id="c1", intent="deploy_backend", arguments={"tag": "v1"}))
GATE = ApprovalRequested(
    at=AT, data=ApprovalRequestedData(call_id="c1", intent="deploy_backend", arguments={"tag": "v1"})
)


@pytest.mark.parametrize(
    ("events", "phase"),
    [
        ([OPENING], "running"),
        ([OPENING, CALL], "running"),
        ([OPENING, CALL, GATE], "waiting"),
        ([OPENING, HumanRequest(at=AT, data=HumanRequestData(question="Which tag?"))], "waiting"),
        (
            [OPENING, Escalation(at=AT, data=EscalationData(reason="error_budget", message="3 errors"))],
            "escalated",
        ),
        ([OPENING, Done(at=AT, data=DoneData(message="ok"))], "finished"),
    ],
)
def test_each_thread_falls_under_one_filter(events: list[Event], phase: str) -> None:
    # Given a thread's events, When the list files it, Then under the filter a person would look in
    assert views.phase(status(events), events) == phase


def test_the_pending_panel_names_the_call_waiting_for_approval_and_counts_model_steps() -> None:
    # Given a thread waiting for approval of a call the model decided
    events = [OPENING, CALL, GATE]

    # Then the panel asks to approve that very call, and the model was asked once
    found = views.pending(events)
    assert found is not None and (found.kind, found.detail) == ("approval", 'deploy_backend(tag="v1")')
    assert views.model_steps(events) == 1
    assert views.pending([OPENING, CALL]) is None


def test_the_console_command_needs_an_api_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given no API URL anywhere
    monkeypatch.delenv("TWELVEFACTOR_API_URL", raising=False)

    # When the console is started, Then it says what to pass and exits non-zero
    assert cli.main(["console"]) == 1
    assert "no API URL" in capsys.readouterr().err


def test_a_deployed_api_is_signed_with_the_user_s_credentials_and_the_local_one_is_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given AWS credentials in the environment
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")

    # When consoles are built for an execute-api URL and for the local gateway
    deployed = build("https://abc123.execute-api.eu-west-1.amazonaws.com/prod")
    local = build("http://127.0.0.1:3000")

    # Then only the deployed one signs
    assert deployed.api_label.endswith("(SigV4)")
    assert local.api_label == "http://127.0.0.1:3000"
    deployed.api.close()
    local.api.close()


def _view(thread_id: str, cost_usd: str | None) -> dict[str, Any]:
    """A thread as GET /threads/{id} answers it (the fields the console reads)."""
    return {
        "thread_id": thread_id,
        "agent": "deploybot",
        "channel": "api",
        "created_at": AT.isoformat(),
        "cost_usd": cost_usd,
    }


def test_the_list_and_the_thread_show_cost_in_dollars_and_an_unknown_price_as_unknown() -> None:
    # Given two threads as the API answers them: one priced, one on a model with no known price
    console = build("http://127.0.0.1:9")
    priced = views.thread_row(_view("a" * 32, "0.000063"), [OPENING])
    unpriced = views.thread_row(_view("b" * 32, None), [OPENING])

    # When the thread list and the thread's status line are rendered
    page = console.page(
        "list.html", rows=[priced, unpriced], chosen="all", counts=dict.fromkeys(views.FILTERS, 2)
    )
    html = page.body.decode()
    status_line = console.fragment("_status.html", row=unpriced)
    console.api.close()

    # Then the list has a cost column with the priced thread in dollars and the other as unknown, never $0
    assert '<th scope="col" class="num">Cost</th>' in html
    cells = re.findall(r'<td class="num cost">([^<]*)</td>', html)
    assert cells == ["$0.000063", "unknown"]
    assert "$0" not in status_line and 'id="cost">unknown<' in status_line
    assert 'id="cost">$0.000063<' in console.fragment("_status.html", row=priced)
