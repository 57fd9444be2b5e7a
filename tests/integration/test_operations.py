"""Alarms and the dashboard watch metrics the code really emits (names and dimensions).

The Reducer and Api functions run on threads that go through every kind of step (tool calls, a tool
error, a model error, an approval wait and its answer, done, an escalation, a cancel) with metrics
switched on; their EMF lines are what CloudWatch would receive. Every alarm and every dashboard series
in template.yaml must name one of those metrics with exactly its dimensions, or one of the AWS
metrics of a resource the template defines, so none can silently watch nothing.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.integration.stack import (  # noqa: F401 - fixtures
    Stack,
    api_event,
    intent,
    stack_fixture,
    usage_reply,
    webhook_receiver_fixture,
)
from twelvefactor.adapters.ports import ThreadMeta
from twelvefactor.core.events import Approval, ApprovalData, UserMessage, UserMessageData
from twelvefactor.local.template import Template, resource

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC) - timedelta(minutes=5)
DEPLOY = {"tag": "v1.2.3", "environment": "production"}
# The AWS metrics an alarm may watch, and which resource type each dimension must name.
AWS_DIMENSIONS = {
    ("AWS/States", "StateMachineArn"): "AWS::Serverless::StateMachine",
    ("AWS/Lambda", "FunctionName"): "AWS::Serverless::Function",
    ("AWS/DynamoDB", "TableName"): "AWS::DynamoDB::Table",
    ("AWS/SQS", "QueueName"): "AWS::SQS::Queue",
}
# (metric name, its dimensions and their values), for every EMF record printed
Emitted = set[tuple[str, tuple[tuple[str, str], ...]]]


def _emitted(output: str, service: str) -> Emitted:
    """Each metric with its dimension values, from Powertools' EMF lines; the
    ``service`` the tests run under reads as the one template.yaml gives the functions."""
    found: Emitted = set()
    for line in output.splitlines():
        if not line.startswith('{"_aws"'):
            continue
        record = json.loads(line)
        for directive in record["_aws"]["CloudWatchMetrics"]:
            assert directive["Namespace"] == "Twelvefactor"
            for dimensions in directive["Dimensions"]:
                for metric in directive["Metrics"]:
                    values = {name: record[name] for name in dimensions}
                    if values.get("service") == os.environ["POWERTOOLS_SERVICE_NAME"]:
                        values["service"] = service
                    found.add((metric["Name"], tuple(sorted(values.items()))))
    return found


def _thread(stack: Stack) -> str:
    thread_id = uuid.uuid4().hex
    meta = ThreadMeta(thread_id=thread_id, agent="deploybot", created_at=NOW)
    opening = UserMessage(at=NOW, data=UserMessageData(text="Deploy the latest backend tag to production."))
    stack.store.create(meta, [opening])
    return thread_id


def _reduce(stack: Stack, thread_id: str, **extra: Any) -> None:
    stack.invoke("ReducerFunction", {"thread_id": thread_id, **extra})


@pytest.fixture
def emitted(
    stack: Stack, template: Template, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Emitted]:
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    # A thread that lists tags, gets one invalid answer, asks to deploy, is approved and finishes
    stack.script(
        usage_reply(intent("list_git_tags"), 100, 10),
        usage_reply("this is not an intent", 50, 5),
        usage_reply(intent("deploy_backend", **DEPLOY), 200, 20),
    )  # (the deploy that ran ends the turn with deploybot's own message: the model is not asked)
    approved = _thread(stack)
    _reduce(stack, approved)
    awaiting = stack.events(approved)[-1]
    assert awaiting.type == "approval_requested"
    call_id = awaiting.data.call_id  # type: ignore[union-attr]
    answer = Approval(at=datetime.now(UTC), data=ApprovalData(call_id=call_id, approved=True))
    stack.store.append(approved, [answer], expected_last_seq=len(stack.events(approved)) - 1)
    _reduce(stack, approved)
    assert stack.events(approved)[-1].type == "done"
    # A thread whose tool cannot reach its service (a tool error), then a failed wait (escalation)
    monkeypatch.setenv("DEPLOYBOT_SERVICE_URL", "http://127.0.0.1:9")
    stack.script(
        intent("list_git_tags"), intent("request_human_input", question="The service is down. Retry?")
    )
    failing = _thread(stack)
    _reduce(stack, failing)
    _reduce(stack, failing, error={"Error": "States.Timeout", "Cause": "no answer"})
    # And a cancel through the API
    cancelled = _thread(stack)
    assert stack.api(api_event("api-cancel", thread_id=cancelled)).status == 202
    yield _emitted(capsys.readouterr().out, _service(template))


def _service(template: Template) -> str:
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    return str(variables["POWERTOOLS_SERVICE_NAME"])


def _alarm_metrics(template: Template) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """(alarm, namespace, metric name, dimensions) for every metric every alarm reads."""
    for logical_id, body in template["Resources"].items():
        if body["Type"] != "AWS::CloudWatch::Alarm":
            continue
        properties = body["Properties"]
        if "MetricName" in properties:
            dimensions = {item["Name"]: item["Value"] for item in properties["Dimensions"]}
            yield logical_id, properties["Namespace"], properties["MetricName"], dimensions
        for query in properties.get("Metrics", []):
            if "MetricStat" in query:
                metric = query["MetricStat"]["Metric"]
                dimensions = {item["Name"]: item["Value"] for item in metric["Dimensions"]}
                yield logical_id, metric["Namespace"], metric["MetricName"], dimensions


def _check(template: Template, emitted: Emitted, where: str, namespace: str, name: str, dims: Any) -> None:
    if namespace == "Twelvefactor":
        assert (name, tuple(sorted(dims.items()))) in emitted, f"{where} watches {name} {dims}: not emitted"
        return
    for dimension, value in dims.items():
        kind = AWS_DIMENSIONS[namespace, dimension]
        logical_id = _logical_id(value)
        assert resource(template, logical_id)["Type"] == kind, f"{where}: {dimension} is not a {kind}"


def _logical_id(value: Any) -> str:
    """The resource a dimension's value names: `!Ref X`, `!GetAtt X.Attribute` or a literal id."""
    if isinstance(value, dict) and "Ref" in value:
        return str(value["Ref"])
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        target = value["Fn::GetAtt"]
        return str(target[0] if isinstance(target, list) else target.split(".")[0])
    return str(value)


def test_every_alarm_watches_a_metric_that_is_emitted(template: Template, emitted: Emitted) -> None:
    # Given the metrics the functions emitted for threads that went through every kind of step
    # When each alarm's metrics are looked up among them
    alarms = list(_alarm_metrics(template))

    # Then every one is there, under the same dimensions (service as template.yaml sets it)
    assert ("Escalations", (("service", _service(template)),)) in emitted
    assert len({alarm for alarm, *_rest in alarms}) == 9  # docs/operating.md's eight and the DLQ's
    for alarm, namespace, name, dimensions in alarms:
        _check(template, emitted, alarm, namespace, name, dimensions)


def test_the_issue_s_metrics_are_emitted_by_agent_and_kind(emitted: Emitted) -> None:
    # Given the same runs, Then each breakdown the dashboard and docs/operating.md name was emitted
    agent = ("Agent", "deploybot")
    service = ("service", "twelvefactor")
    for expected in [
        ("ThreadsStarted", (agent, service)),
        ("ThreadsFinished", (agent, service)),
        ("ThreadsCancelled", (agent, service)),
        ("ThreadsEscalated", (agent, ("Reason", "wait_timeout"), service)),
        ("ModelDecisions", (agent, ("Kind", "tool_call"), service)),
        ("ModelDecisions", (agent, ("Kind", "error"), service)),
        ("ModelDecisions", (agent, ("Kind", "done"), service)),
        ("Errors", (agent, ("Kind", "llm"), service)),
        ("Errors", (agent, ("Kind", "tool"), service)),
        ("ToolCalls", (agent, ("Tool", "deploy_backend"), service)),
        ("ToolErrors", (agent, ("Tool", "list_git_tags"), service)),
        ("Tokens", (agent, service)),
        ("WaitsOpened", (agent, ("Kind", "approval"), service)),
        ("WaitsAnswered", (agent, ("Kind", "approval"), service)),
        ("WaitAge", (agent, ("Kind", "approval"), service)),
        ("LlmLatency", (service,)),
        ("LlmCostUsd", (service,)),  # the stack's model (gpt-4o-mini) has a known price
    ]:
        assert expected in emitted, f"{expected} was not emitted"


def test_every_dashboard_series_is_emitted(template: Template, emitted: Emitted) -> None:
    # Given the dashboard's body (its ${...} substitutions are resource names)
    source = resource(template, "OperationsDashboard")["Properties"]["DashboardBody"]["Fn::Sub"]
    body = json.loads(re.sub(r"\$\{[^}]+\}", "x", source))
    shapes = {(name, frozenset(dimension for dimension, _value in dims)) for name, dims in emitted}
    names = {name for name, _dims in emitted}
    shown: set[str] = set()
    for widget in body["widgets"]:
        for series in widget["properties"].get("metrics", []):
            # When a series names one of our metrics, directly or through a SEARCH
            if isinstance(series[0], dict):
                expression = series[0]["expression"]
                match = re.search(r"\{Twelvefactor,([^}]*)\} MetricName=\"(\w+)\"", expression)
                assert match, expression
                dims = frozenset(match.group(1).split(","))
                # Then that metric is emitted under exactly those dimensions
                assert (match.group(2), dims) in shapes, expression
                shown.add(match.group(2))
            elif series[0] == "Twelvefactor":
                assert series[1] in names, f"the dashboard shows {series[1]}, which no code emits"
                assert (series[1], frozenset({"service"})) in shapes, series
                shown.add(series[1])
    # And it charts what the issue asks for: threads by status, decisions, LLM latency, errors and
    # escalations, waits (opened and answered: no gauge of outstanding ones, see docs/operating.md), cost
    assert {
        "ThreadsStarted",
        "ThreadsFinished",
        "ModelDecisions",
        "LlmLatency",
        "LlmErrors",
        "Escalations",
        "WaitsOpened",
        "WaitsAnswered",
        "LlmCostUsd",
    } <= shown, shown
