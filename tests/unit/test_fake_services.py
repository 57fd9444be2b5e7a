"""The fake deployment and payments service: idempotency, precise 4xx, failure on demand.

Everything goes over real HTTP on loopback, the way the agents' executors and the demo use it.
"""

from __future__ import annotations

import http.client
import logging
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.support import poll_until
from twelvefactor.local.fake_services import CUSTOMERS, TAGS, run_fake_services

DEPLOY = {"service": "backend", "tag": "v1.2.3", "environment": "production"}
LINK = {
    "customer": "cus_jeff",
    "product": "prod_meetup",
    "price": "prc_meetup_standard",
    "quantity": 1,
    "amount_cents": 75_000,
    "memo": "Meetup",
}


@pytest.fixture
def url() -> Iterator[str]:
    with run_fake_services() as base_url:
        yield base_url


def post(url: str, path: str, body: dict[str, Any], key: str | None = "key-1") -> httpx.Response:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return httpx.post(f"{url}{path}", json=body, headers=headers)


def deploys(url: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = httpx.get(f"{url}/deploys").json()["deploys"]
    return result


def fail_next(url: str, times: int) -> None:
    httpx.post(f"{url}/_control/fail", json={"times": times}).raise_for_status()


def test_it_listens_on_loopback_and_lists_tags_and_customers(url: str) -> None:
    # Given a running fake service
    # When the tags and customers are read
    tags = httpx.get(f"{url}/tags").json()
    customers = httpx.get(f"{url}/customers").json()
    # Then it serves them from 127.0.0.1
    assert url.startswith("http://127.0.0.1:")
    assert tags == {"tags": list(TAGS)}
    assert customers == {"customers": list(CUSTOMERS)}


def test_a_repeated_idempotency_key_replays_the_first_deploy_without_deploying_again(url: str) -> None:
    # Given a deploy made with a key
    first = post(url, "/deploys", DEPLOY)
    # When the same request arrives again with the same key
    again = post(url, "/deploys", DEPLOY)
    # Then the first answer is replayed and only one deploy happened
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert deploys(url) == [first.json()]


def test_concurrent_requests_with_one_key_deploy_once(url: str) -> None:
    # Given eight identical requests racing with the same key
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: post(url, "/deploys", DEPLOY), range(8)))
    # Then all get the same deploy and only one was made
    assert {answer.json()["deployment_id"] for answer in answers} == {"dep-0001"}
    assert len(deploys(url)) == 1


def test_a_new_key_makes_a_new_deploy(url: str) -> None:
    # Given a deploy made with one key
    post(url, "/deploys", DEPLOY, key="key-1")
    # When the same body comes with another key
    second = post(url, "/deploys", DEPLOY, key="key-2")
    # Then it is a second deploy
    assert second.json()["deployment_id"] == "dep-0002"
    assert len(deploys(url)) == 2


def test_reusing_a_key_for_another_request_is_refused(url: str) -> None:
    # Given a key already used for a production deploy
    post(url, "/deploys", DEPLOY)
    # When it is reused for a different deploy
    answer = post(url, "/deploys", {**DEPLOY, "environment": "staging"})
    # Then the service refuses and changes nothing
    assert answer.status_code == 422
    assert "was used for a different request" in answer.json()["error"]
    assert [deploy["environment"] for deploy in deploys(url)] == ["production"]


@pytest.mark.parametrize(
    ("body", "key", "status", "reason"),
    [
        (DEPLOY, None, 400, "Idempotency-Key header is required"),
        ({**DEPLOY, "environment": "prod"}, "k", 422, "environment"),
        ({**DEPLOY, "tag": "v9.9.9"}, "k", 404, "unknown tag v9.9.9"),
        ({**DEPLOY, "force": True}, "k", 422, "force"),
    ],
)
def test_bad_deploy_requests_get_a_precise_error_a_log_line_and_change_nothing(
    url: str,
    caplog: pytest.LogCaptureFixture,
    body: dict[str, Any],
    key: str | None,
    status: int,
    reason: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="twelvefactor.local.fake_services")
    # When a bad deploy request arrives
    answer = post(url, "/deploys", body, key=key)
    # Then it gets a precise 4xx naming the problem, a log line says why, and nothing was deployed
    assert answer.status_code == status
    assert reason in answer.json()["error"]
    assert any(reason in record.getMessage() for record in caplog.records)
    assert deploys(url) == []


def test_a_refused_request_does_not_use_up_its_key(url: str) -> None:
    # Given a request refused for an unknown tag
    post(url, "/deploys", {**DEPLOY, "tag": "v9.9.9"})
    # When the corrected request comes with the same key
    answer = post(url, "/deploys", DEPLOY)
    # Then it is carried out
    assert answer.status_code == 201
    assert len(deploys(url)) == 1


@pytest.mark.parametrize(
    ("content_length", "status"), [("999999", 413), ("a lot", 400)], ids=["oversized", "not-a-number"]
)
def test_a_bad_content_length_is_refused_before_the_body_is_read(
    url: str, content_length: str, status: int
) -> None:
    # When a request announces a body that is too large, or not a length at all
    connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=10)
    try:
        connection.putrequest("POST", "/deploys")
        connection.putheader("Idempotency-Key", "key-1")
        connection.putheader("Content-Length", content_length)
        connection.endheaders()
        answer = connection.getresponse()
        answer.read()
    finally:
        connection.close()
    # Then it is refused without waiting for the body, and nothing was deployed
    assert answer.status == status
    assert deploys(url) == []


def test_failure_on_demand_fails_the_next_calls_then_recovers(url: str) -> None:
    # Given the service told to fail the next two calls
    fail_next(url, 2)
    # When three calls arrive
    tags = httpx.get(f"{url}/tags")
    deploy = post(url, "/deploys", DEPLOY)
    retried = post(url, "/deploys", DEPLOY)
    # Then the first two fail as if the service were unreachable and the third goes through
    assert tags.status_code == deploy.status_code == 503
    assert tags.json() == {"error": "Failed to connect to deployment service"}
    # A failed call did nothing, so its key was not used up: the retry with the same key deploys
    assert retried.status_code == 201
    assert len(deploys(url)) == 1


def test_payment_failures_name_the_payments_service(url: str) -> None:
    fail_next(url, 1)
    answer = httpx.get(f"{url}/customers")
    assert answer.status_code == 503
    assert answer.json() == {"error": "Failed to connect to payments service"}


def test_payment_links_are_idempotent_and_checked(url: str) -> None:
    # Given a link created with a key
    first = post(url, "/payment_links", LINK)
    # When the same request repeats, and another names an unknown customer
    again = post(url, "/payment_links", LINK)
    unknown = post(url, "/payment_links", {**LINK, "customer": "cus_nobody"}, key="key-2")
    # Then one link exists, with a url on the service, and the unknown customer is refused
    assert first.status_code == 201
    assert again.json() == first.json()
    assert first.json()["url"] == f"{url}/pay/{first.json()['id']}"
    assert unknown.status_code == 404
    assert "unknown customer cus_nobody" in unknown.json()["error"]
    assert httpx.get(f"{url}/payment_links").json()["payment_links"] == [first.json()]


def test_unknown_routes_and_methods_are_refused(url: str) -> None:
    assert httpx.get(f"{url}/nothing").status_code == 404
    assert httpx.delete(f"{url}/deploys").status_code == 501  # the stdlib refuses unknown verbs
    assert post(url, "/tags", {}).status_code == 405


def test_it_runs_standalone_from_the_command_line() -> None:
    # Given the module started as a program on a free port
    process = subprocess.Popen(
        [sys.executable, "-m", "twelvefactor.local.fake_services", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        # When it announces its address
        assert process.stdout is not None
        line = process.stdout.readline()
        base_url = line.rsplit(" ", 1)[-1].strip()
        # Then it answers there
        health = poll_until(lambda: httpx.get(f"{base_url}/health").json(), lambda body: body == {"ok": True})
        assert base_url.startswith("http://127.0.0.1:")
        assert health == {"ok": True}
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def test_recent_deploys_name_the_tag_each_replaced_and_a_rollback_restores_it(url: str) -> None:
    # Given two production deploys of the backend and one to staging
    post(url, "/deploys", {**DEPLOY, "tag": "v1.2.2"}, key="a")
    post(url, "/deploys", {**DEPLOY, "environment": "staging"}, key="b")
    post(url, "/deploys", DEPLOY, key="c")
    # When the recent deploys are read
    recent = httpx.get(f"{url}/deploys/recent").json()["deploys"]
    # Then they come newest first, each with the tag it replaced where it ran
    assert [(d["deployment_id"], d["previous_tag"]) for d in recent] == [
        ("dep-0003", "v1.2.2"),
        ("dep-0002", None),
        ("dep-0001", None),
    ]
    # When the newest is rolled back (twice with one key)
    first = post(url, "/rollbacks", {"deployment_id": "dep-0003"}, key="rb")
    again = post(url, "/rollbacks", {"deployment_id": "dep-0003"}, key="rb")
    # Then it is rolled back to the tag it replaced, once
    assert first.status_code == 201
    assert (first.json()["from_tag"], first.json()["to_tag"]) == ("v1.2.3", "v1.2.2")
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert len(httpx.get(f"{url}/rollbacks").json()["rollbacks"]) == 1


def test_a_rollback_of_an_unknown_or_first_deploy_is_refused_and_changes_nothing(url: str) -> None:
    post(url, "/deploys", DEPLOY, key="a")
    unknown = post(url, "/rollbacks", {"deployment_id": "dep-9999"}, key="x")
    first = post(url, "/rollbacks", {"deployment_id": "dep-0001"}, key="y")
    assert (unknown.status_code, unknown.json()["error"]) == (404, "unknown deployment dep-9999")
    assert (first.status_code, first.json()["error"]) == (409, "dep-0001 replaced no earlier deploy")
    assert httpx.get(f"{url}/rollbacks").json() == {"rollbacks": []}
