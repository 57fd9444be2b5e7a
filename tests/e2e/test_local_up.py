"""`twelvefactor local up` as a developer runs it: a long-running process that prints where everything
is, serves the API until it is told to stop, and then stops cleanly."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import httpx
import pytest

from twelvefactor.local.fake_openai import FakeOpenAI

pytestmark = pytest.mark.e2e

READY_LINE = "What Slack and SES would have shown appears below."


@pytest.fixture
def provider() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


def start_local_up(provider: FakeOpenAI, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "twelvefactor.cli", "local", "up", "--llm", provider.base_url, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OPENAI_API_KEY": "sk-local-test", "LLM_MODEL": provider.model},
    )


def read_until(process: subprocess.Popen[str], marker: str, timeout: float = 120) -> str:
    """stdout up to the line containing ``marker``; fails (with what was printed) past the deadline."""
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout

    def pump() -> None:
        for line in stdout:
            lines.put(line)
            if marker in line:
                return
        lines.put("")

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    while True:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            process.kill()
            raise AssertionError("local up printed no ready line in time:\n" + "".join(seen)) from None
        seen.append(line)
        if marker in line or not line:
            return "".join(seen)


def test_local_up_prints_where_everything_is_serves_the_api_and_stops_on_sigterm(
    provider: FakeOpenAI,
) -> None:
    # Given `twelvefactor local up` on free ports, with an OpenAI-compatible provider and a parameter
    process = start_local_up(
        provider,
        "--port",
        "0",
        "--moto-port",
        "0",
        "--console-port",
        "0",
        "--parameter",
        "AllowedEmailSenders=@ops.example.com",
    )
    try:
        banner = read_until(process, READY_LINE)

        # Then it prints the API URL, the moto endpoint and the exports for boto3 and the threads CLI
        api_url = re.search(r"export TWELVEFACTOR_API_URL=(\S+)", banner)
        endpoint = re.search(r"export AWS_ENDPOINT_URL=(\S+)", banner)
        assert api_url is not None and endpoint is not None, banner
        assert "POST   /threads" in banner and "POST   /slack/events" in banner
        assert "X-Slack-Signature: v0=" in banner  # the signed example request
        # ... and the functions' environment, with the parameter given
        assert "export EMAIL_ALLOWED_SENDERS=@ops.example.com\n" in banner
        assert "export IDEMPOTENCY_TABLE=" in banner and "export PAYLOAD_BUCKET=" in banner
        # ... and the API it names answers
        assert httpx.get(f"{api_url.group(1)}/threads").json() == []
        # ... and so does the console it started, on loopback
        console_url = re.search(r"Console \(threads in a browser\)\s+(http://127\.0\.0\.1:\d+)", banner)
        assert console_url is not None, banner
        page = httpx.get(console_url.group(1))
        assert page.status_code == 200 and "No threads here" in page.text
    finally:
        # When it is told to stop
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=60)

    # Then it stops cleanly and says so
    assert process.returncode == 0, err
    assert "stopped" in err


def test_local_up_names_a_port_in_use_and_exits_at_once(provider: FakeOpenAI) -> None:
    # Given a port something already listens on
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        busy = listener.getsockname()[1]

        # When local up is asked to serve the API there
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "twelvefactor.cli",
                "local",
                "up",
                "--llm",
                provider.base_url,
                "--port",
                str(busy),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "OPENAI_API_KEY": "sk-local-test", "LLM_MODEL": provider.model},
            check=False,
        )

    # Then it fails with the port named, having started nothing
    assert result.returncode == 1
    assert f"port {busy} is in use" in result.stderr
