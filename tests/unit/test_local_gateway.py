"""The local API gateway turns HTTP into API Gateway proxy events and proxy responses back into HTTP."""

from __future__ import annotations

import base64
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from twelvefactor.local.gateway import LocalGateway, Route


def _echo(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {
        "statusCode": 201,
        "headers": {"Content-Type": "application/json", "X-Function": context.function_name},
        "body": json.dumps(event),
    }


def test_a_request_reaches_the_handler_as_a_rest_proxy_event() -> None:
    # Given a gateway with a parameterised route
    with LocalGateway([Route("POST", "/threads/{id}/responses", "ApiFunction", _echo)]) as gateway:
        # When a client posts to it
        response = httpx.post(
            f"{gateway.url}/threads/t-1/responses?after=3",
            json={"approved": True},
            headers={"Idempotency-Key": "k1"},
        )
    # Then the handler saw API Gateway's event shape, and its answer came back as HTTP
    assert response.status_code == 201
    assert response.headers["X-Function"] == "ApiFunction"
    event = response.json()
    assert event["resource"] == "/threads/{id}/responses"
    assert event["httpMethod"] == "POST"
    assert event["pathParameters"] == {"id": "t-1"}
    assert event["queryStringParameters"] == {"after": "3"}
    assert event["headers"]["Idempotency-Key"] == "k1"
    assert json.loads(event["body"]) == {"approved": True}
    assert event["isBase64Encoded"] is False
    assert event["requestContext"]["resourcePath"] == "/threads/{id}/responses"


def test_binary_bodies_are_base64_encoded_like_api_gateway() -> None:
    with LocalGateway([Route("ANY", "/upload", "Fn", _echo)]) as gateway:
        response = httpx.put(
            f"{gateway.url}/upload", content=b"\x00\x01", headers={"Content-Type": "image/png"}
        )
    event = response.json()
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"\x00\x01"


def test_unknown_paths_are_404_and_wrong_methods_405() -> None:
    with LocalGateway([Route("GET", "/threads/{id}", "Fn", _echo)]) as gateway:
        missing = httpx.get(f"{gateway.url}/nope")
        wrong_method = httpx.delete(f"{gateway.url}/threads/t-1")
    assert missing.status_code == 404
    assert wrong_method.status_code == 405


def test_a_crashing_handler_is_a_502_not_a_dropped_connection() -> None:
    def crash(_event: dict[str, Any], _context: Any) -> dict[str, Any]:
        raise RuntimeError("boom")

    with LocalGateway([Route("GET", "/crash", "Fn", crash)]) as gateway:
        response = httpx.get(f"{gateway.url}/crash")
    assert response.status_code == 502
    assert "boom" in response.json()["message"]


def test_requests_are_served_one_at_a_time_like_one_execution_environment() -> None:
    # Given two functions whose handlers count how many invocations run at once
    lock = threading.Lock()
    running = [0]
    most = [0]

    def counting(event: dict[str, Any], context: Any) -> dict[str, Any]:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)  # the invocation's work, long enough for the others to arrive
        with lock:
            running[0] -= 1
        return {"statusCode": 200, "body": context.function_name}

    routes = [
        Route("POST", "/threads", "ApiFunction", counting),
        Route("POST", "/slack", "SlackFunction", counting),
    ]
    with LocalGateway(routes) as gateway, ThreadPoolExecutor(max_workers=8) as pool:
        # When eight requests arrive at once, four for each function
        paths = ["/threads", "/slack"] * 4
        responses = list(pool.map(lambda path: httpx.post(f"{gateway.url}{path}", timeout=10), paths))

    # Then all are answered, each by its own function, and no two invocations ever ran at once
    answers = [(response.status_code, response.text) for response in responses]
    assert answers == [(200, "ApiFunction"), (200, "SlackFunction")] * 4
    assert most == [1]
