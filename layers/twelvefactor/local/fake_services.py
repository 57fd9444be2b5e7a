"""A small fake deployment and payments service for tests and the demo (dev-only, loopback only).

It behaves like the real thing where the agents depend on it: POSTs need an ``Idempotency-Key``
and a repeated key replays the first answer without doing the work twice; bad input gets a precise
4xx and changes nothing; and it can fail on demand (``POST /_control/fail {"times": n}``: the next
n calls answer 503 "Failed to connect to deployment service") so factor 9 can be exercised.

    GET  /tags            git tags, newest first        GET  /customers      known customers
    GET  /deploys         deploys done so far           GET  /products       products on sale
    POST /deploys         {service, tag, environment}   GET  /prices         prices, each of a product
    POST /_control/fail   {times}                       GET  /payment_links  links created so far
    GET  /health                                        POST /payment_links  {customer, product, price,
                                                                              quantity, amount_cents, memo}
    GET  /deploys/recent  the latest deploys, newest first, each with the tag it replaced
    GET  /rollbacks       rollbacks done so far
    POST /rollbacks       {deployment_id}: back to the tag that deploy replaced

A payment link is the seed's ``create_payment_link``: the customer, product and price must exist,
the price must be the product's, and ``amount_cents`` must be the price times the quantity.

Run it alone with ``python -m twelvefactor.local.fake_services --port 8765``.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .loopback import send_json

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
MAX_BODY_BYTES = 64_000

TAGS: tuple[dict[str, str], ...] = (
    {"name": "v1.2.3", "commit": "abc1234", "date": "2024-03-15T10:00:00Z"},
    {"name": "v1.2.2", "commit": "def5678", "date": "2024-03-14T15:30:00Z"},
    {"name": "v1.2.1", "commit": "9ab0cde", "date": "2024-03-13T09:15:00Z"},
)
CUSTOMERS: tuple[dict[str, str], ...] = (
    {"id": "cus_acme", "name": "Acme Corp", "email": "billing@acme.example.com"},
    {"id": "cus_jeff", "name": "Jeff Tinker", "email": "jeff@tinkerers.example.com"},
    {"id": "cus_globex", "name": "Globex", "email": "ap@globex.example.com"},
)
PRODUCTS: tuple[dict[str, str], ...] = (
    {"id": "prod_meetup", "name": "AI Tinkerers meetup ticket"},
    {"id": "prod_workshop", "name": "Agents workshop seat"},
)
PRICES: tuple[dict[str, Any], ...] = (
    {"id": "prc_meetup_standard", "product": "prod_meetup", "unit_amount": 75_000, "currency": "usd"},
    {"id": "prc_meetup_student", "product": "prod_meetup", "unit_amount": 2_500, "currency": "usd"},
    {"id": "prc_workshop", "product": "prod_workshop", "unit_amount": 40_000, "currency": "usd"},
)
# Which service a path belongs to, for the injected failure's message.
_SERVICE_OF_PATH = {
    "/tags": "deployment service",
    "/deploys": "deployment service",
    "/deploys/recent": "deployment service",
    "/rollbacks": "deployment service",
    "/customers": "payments service",
    "/products": "payments service",
    "/prices": "payments service",
    "/payment_links": "payments service",
}

Json = dict[str, Any]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeployRequest(_Body):
    service: Literal["backend", "frontend"]
    tag: str
    environment: Literal["staging", "production"]


class PaymentLinkRequest(_Body):
    customer: str
    product: str
    price: str
    quantity: int = Field(ge=1, le=100)
    amount_cents: int = Field(gt=0)
    memo: str = Field(min_length=1, max_length=500)


ModelT = TypeVar("ModelT", bound=_Body)


class RollbackRequest(_Body):
    deployment_id: str = Field(min_length=1, max_length=40)


class FailRequest(_Body):
    times: int = Field(ge=0, le=1_000)


@dataclass(frozen=True)
class Answer:
    status: int
    body: Json
    headers: dict[str, str] = field(default_factory=dict)


class ClientError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class FakeServices:
    """The services' state and routing, free of HTTP plumbing. One lock: it is a test double."""

    base_url: str = ""
    deploys: list[Json] = field(default_factory=list)
    payment_links: list[Json] = field(default_factory=list)
    rollbacks: list[Json] = field(default_factory=list)
    failures_left: int = 0
    # Idempotency-Key -> (the request it was first used for, the answer given then).
    _replays: dict[str, tuple[str, Answer]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, method: str, path: str, idempotency_key: str | None, raw_body: bytes) -> Answer:
        with self._lock:
            try:
                return self._route(method, path, idempotency_key, raw_body)
            except ClientError as error:
                logger.warning("rejected %s %s: %s", method, path, error)
                return Answer(error.status, {"error": str(error)})

    def _route(self, method: str, path: str, key: str | None, raw_body: bytes) -> Answer:
        if path == "/health":
            return Answer(HTTPStatus.OK, {"ok": True})
        if path == "/_control/fail" and method == "POST":
            self.failures_left = _parse(FailRequest, raw_body).times
            return Answer(HTTPStatus.OK, {"failures_left": self.failures_left})
        if path not in _SERVICE_OF_PATH:
            raise ClientError(HTTPStatus.NOT_FOUND, f"no route {method} {path}")
        if self.failures_left > 0:
            self.failures_left -= 1
            # Nothing was done, so nothing is remembered under the key: a retry does the work.
            return Answer(
                HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"Failed to connect to {_SERVICE_OF_PATH[path]}"}
            )
        if method == "GET":
            return Answer(HTTPStatus.OK, self._read(path))
        if method == "POST" and path in ("/deploys", "/payment_links", "/rollbacks"):
            return self._idempotent_post(path, key, raw_body)
        raise ClientError(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} is not allowed on {path}")

    def _read(self, path: str) -> Json:
        match path:
            case "/tags":
                return {"tags": list(TAGS)}
            case "/customers":
                return {"customers": list(CUSTOMERS)}
            case "/products":
                return {"products": list(PRODUCTS)}
            case "/prices":
                return {"prices": list(PRICES)}
            case "/deploys":
                return {"deploys": list(self.deploys)}
            case "/deploys/recent":
                return {"deploys": [self._with_previous(deploy) for deploy in reversed(self.deploys[-5:])]}
            case "/rollbacks":
                return {"rollbacks": list(self.rollbacks)}
        return {"payment_links": list(self.payment_links)}

    def _idempotent_post(self, path: str, key: str | None, raw_body: bytes) -> Answer:
        if not key:
            raise ClientError(HTTPStatus.BAD_REQUEST, "the Idempotency-Key header is required")
        fingerprint = f"{path} {_canonical(raw_body)}"
        if key in self._replays:
            first_request, answer = self._replays[key]
            if first_request != fingerprint:
                raise ClientError(
                    HTTPStatus.UNPROCESSABLE_ENTITY, f"Idempotency-Key {key} was used for a different request"
                )
            return Answer(answer.status, answer.body, {"Idempotent-Replayed": "true"})
        answer = {
            "/deploys": self._deploy,
            "/payment_links": self._create_payment_link,
            "/rollbacks": self._roll_back,
        }[path](raw_body)
        self._replays[key] = (fingerprint, answer)
        return answer

    def _deploy(self, raw_body: bytes) -> Answer:
        request = _parse(DeployRequest, raw_body)
        if request.tag not in {tag["name"] for tag in TAGS}:
            raise ClientError(HTTPStatus.NOT_FOUND, f"unknown tag {request.tag}")
        deploy = {
            "deployment_id": f"dep-{len(self.deploys) + 1:04d}",
            **request.model_dump(),
            "status": "succeeded",
        }
        self.deploys.append(deploy)
        return Answer(HTTPStatus.CREATED, deploy)

    def _with_previous(self, deploy: Json) -> Json:
        """The deploy and the tag it replaced in its service and environment (None: the first)."""
        earlier = [
            other["tag"]
            for other in self.deploys[: self.deploys.index(deploy)]
            if (other["service"], other["environment"]) == (deploy["service"], deploy["environment"])
        ]
        return {**deploy, "previous_tag": earlier[-1] if earlier else None}

    def _roll_back(self, raw_body: bytes) -> Answer:
        request = _parse(RollbackRequest, raw_body)
        deploy = next((d for d in self.deploys if d["deployment_id"] == request.deployment_id), None)
        if deploy is None:
            raise ClientError(HTTPStatus.NOT_FOUND, f"unknown deployment {request.deployment_id}")
        previous = self._with_previous(deploy)["previous_tag"]
        if previous is None:
            raise ClientError(HTTPStatus.CONFLICT, f"{request.deployment_id} replaced no earlier deploy")
        rollback = {
            "rollback_id": f"rb-{len(self.rollbacks) + 1:04d}",
            "deployment_id": request.deployment_id,
            "service": deploy["service"],
            "environment": deploy["environment"],
            "from_tag": deploy["tag"],
            "to_tag": previous,
            "status": "succeeded",
        }
        self.rollbacks.append(rollback)
        return Answer(HTTPStatus.CREATED, rollback)

    def _create_payment_link(self, raw_body: bytes) -> Answer:
        request = _parse(PaymentLinkRequest, raw_body)
        if request.customer not in {customer["id"] for customer in CUSTOMERS}:
            raise ClientError(HTTPStatus.NOT_FOUND, f"unknown customer {request.customer}")
        if request.product not in {product["id"] for product in PRODUCTS}:
            raise ClientError(HTTPStatus.NOT_FOUND, f"unknown product {request.product}")
        price = next((price for price in PRICES if price["id"] == request.price), None)
        if price is None:
            raise ClientError(HTTPStatus.NOT_FOUND, f"unknown price {request.price}")
        if price["product"] != request.product:
            raise ClientError(
                HTTPStatus.UNPROCESSABLE_ENTITY, f"price {request.price} is not a price of {request.product}"
            )
        expected = price["unit_amount"] * request.quantity
        if request.amount_cents != expected:
            raise ClientError(
                HTTPStatus.UNPROCESSABLE_ENTITY,
                f"amount_cents {request.amount_cents} is not {request.quantity} x {price['unit_amount']}"
                f" = {expected}",
            )
        link_id = f"plink_{len(self.payment_links) + 1:04d}"
        link = {
            "id": link_id,
            "url": f"{self.base_url}/pay/{link_id}",
            **request.model_dump(),
            "currency": price["currency"],
            "status": "active",
        }
        self.payment_links.append(link)
        return Answer(HTTPStatus.CREATED, link)


def _parse(model: type[ModelT], raw_body: bytes) -> ModelT:
    try:
        return model.model_validate_json(raw_body or b"{}")
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in detail['loc']) or 'body'}: {detail['msg']}"
            for detail in error.errors()[:3]
        )
        raise ClientError(HTTPStatus.UNPROCESSABLE_ENTITY, f"invalid request: {problems}") from None


def _canonical(raw_body: bytes) -> str:
    try:
        return json.dumps(json.loads(raw_body or b"null"), sort_keys=True)
    except ValueError:
        return raw_body.decode(errors="replace")


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        try:
            raw_body = self._read_body()
        except ClientError as error:
            logger.warning("rejected %s %s: %s", self.command, self.path, error)
            answer = Answer(error.status, {"error": str(error)})
        else:
            path = self.path.split("?", 1)[0]
            key = self.headers.get("Idempotency-Key")
            answer = self.server.services.handle(self.command, path, key, raw_body)
        send_json(self, answer.status, answer.body, answer.headers)

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length", "0")
        if not length.isdigit():
            raise ClientError(HTTPStatus.BAD_REQUEST, "Content-Length must be a number")
        if int(length) > MAX_BODY_BYTES:
            raise ClientError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY_BYTES} bytes")
        return self.rfile.read(int(length))

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int) -> None:
        super().__init__((HOST, port), _Handler)
        self.services = FakeServices(base_url=f"http://{HOST}:{self.server_address[1]}")


@contextmanager
def run_fake_services(port: int = 0) -> Iterator[str]:
    """Serve in a background thread; yields the base URL. Port 0 picks a free port."""
    server = _Server(port)
    # A short poll interval: shutdown() waits for the loop's next poll, and tests start many servers.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-services", daemon=True
    )
    thread.start()
    try:
        yield server.services.base_url
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fake deployment and payments service on 127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port (default: 8765)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    server = _Server(args.port)
    print(f"fake services listening on {server.services.base_url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
