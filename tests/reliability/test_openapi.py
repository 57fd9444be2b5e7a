"""OpenAPI: the Api function, served over HTTP, against the OpenAPI document it generates itself.

The document is Powertools' (`get_openapi_json_schema`) from the real functions/api/app.py; the
function runs behind `LocalGateway` (API Gateway's proxy events, on loopback) on moto. Schemathesis
generates requests for every operation from the document and checks each answer: never a 5xx, a
status code the document lists, and a body that matches the schema documented for it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance, status_code_conformance
from schemathesis.specs.openapi.checks import content_type_conformance

from tests.reliability.conftest import Cases
from tests.reliability.support import accepting_state_machine
from twelvefactor import runtime
from twelvefactor.commands.invoke import load_handler
from twelvefactor.local.gateway import LocalGateway, Route
from twelvefactor.local.handlers import load_module
from twelvefactor.local.template import Template, api_routes, load_template

pytestmark = [pytest.mark.scenario("OpenAPI"), pytest.mark.integration]

EXAMPLES_PER_OPERATION = 30
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def api_gateway(
    monkeypatch: pytest.MonkeyPatch,
    template: Template,
    threads_table: str,
    idempotency_table: str,
    payload_bucket: str,
) -> Iterator[tuple[LocalGateway, dict[str, Any]]]:
    """The Api function behind the local gateway (the template's routes), and its OpenAPI document."""
    for name, value in {
        "THREADS_TABLE": threads_table,
        "PAYLOAD_BUCKET": payload_bucket,
        "IDEMPOTENCY_TABLE": idempotency_table,
        "STATE_MACHINE_ARN": accepting_state_machine(),
        "WEBHOOK_SECRET": "openapi-webhook-secret",
        "POWERTOOLS_SERVICE_NAME": "twelvefactor-openapi",
    }.items():
        monkeypatch.setenv(name, value)
    runtime.reset()
    handler = load_handler(template, "ApiFunction")
    routes = [
        Route(route.method, route.path, route.function, handler)
        for route in api_routes(template)
        if route.function == "ApiFunction"
    ]
    app = load_module(template.path.parent / "functions/api/app.py", "openapi_document_of_api_function").app
    document = json.loads(app.get_openapi_json_schema())
    with LocalGateway(routes) as gateway:
        yield gateway, document
    runtime.reset()


def _operations() -> list[tuple[str, str]]:
    """The Api function's routes in template.yaml: each is an operation of its document."""
    return [
        (route.method, route.path) for route in api_routes(load_template()) if route.function == "ApiFunction"
    ]


def _document_path(document: dict[str, Any], template_path: str) -> str:
    """The document's name for a template path: the same path, its parameters maybe named otherwise."""
    shape = re.sub(r"\{[^}]+\}", "{}", template_path)
    [path] = [path for path in document["paths"] if re.sub(r"\{[^}]+\}", "{}", path) == shape]
    return path


@pytest.mark.fixes(
    "The Api function's OpenAPI document listed only 200 and 422 for every route, while the routes "
    "answer 202 and 400/401/404/409/502/503, and its 422 schema required a field the bodies never "
    "carry. Each route now documents its real responses, refusals with one ErrorBody model."
)
@pytest.mark.parametrize(("method", "path"), _operations(), ids=[f"{m} {p}" for m, p in _operations()])
def test_the_api_answers_as_its_openapi_document_says(
    api_gateway: tuple[LocalGateway, dict[str, Any]], cases: Cases, method: str, path: str
) -> None:
    """Requests generated from the Api function's own OpenAPI document (valid ones and ones that
    break it), sent over HTTP through the local gateway: no 5xx, every status code documented, every
    body matching the schema documented for it."""
    gateway, document = api_gateway
    operation = schemathesis.openapi.from_dict(document)[_document_path(document, path)][method]
    requests = st.one_of(operation.as_strategy(), operation.as_strategy(GenerationMode.NEGATIVE))

    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None)
    @given(case=requests)
    def check(case: Any) -> None:
        cases.add()
        case.call_and_validate(base_url=gateway.url, checks=CHECKS)

    check()
