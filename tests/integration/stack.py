"""The serverless stack in one process, for handler tests: moto tables, bucket and the real state
machine (template.yaml's ASL, executed by moto) whose Lambda tasks run our real reducer and
notify handlers; a fake deployment service on loopback; the LLM scripted through the runtime.

Handlers run one at a time (`serialized`): in Lambda each invocation has its container to itself,
while here they share Powertools' process-wide logger and metrics state with moto's execution
thread. Import `stack_fixture` and `webhook_receiver_fixture` into a test module to use `stack`.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.integration.conftest import REGION
from tests.support import poll_until
from twelvefactor import runtime
from twelvefactor.adapters import webhook
from twelvefactor.adapters.ports import PendingWait
from twelvefactor.commands.invoke import Handler, LocalContext, load_handler
from twelvefactor.core import state
from twelvefactor.core.events import Event, Thread, TokenUsage
from twelvefactor.core.ports import ModelReply
from twelvefactor.core.state import ThreadStatus
from twelvefactor.local.fake_services import run_fake_services
from twelvefactor.local.lambda_bridge import LambdaBridge
from twelvefactor.local.scripted import ScriptedModel, ScriptedReply
from twelvefactor.local.template import Template, state_machine_definition

EVENTS_DIR = Path(__file__).resolve().parents[2] / "events"
SAMPLE_THREAD_ID = "0f6c2b9a4d7e4f1b8a3c5d6e7f809112"  # the id written into the events/ samples
SAMPLE_CALLBACK_ID = "Zk3v9QwJr1XbT0hLmN2pS7uYcE4aD6fG"
IAM_CALLER = "arn:aws:iam::123456789012:user/alice"  # the caller identity in the events/ samples
WEBHOOK_SECRET = "integration-webhook-secret"
ROLE_ARN = "arn:aws:iam::123456789012:role/twelvefactor-state-machine"
_HANDLER_LOCK = threading.RLock()


def function_arn(logical_id: str) -> str:
    return f"arn:aws:lambda:{REGION}:123456789012:function:{logical_id}:live"


def serialized(handler: Handler) -> Handler:
    def run(event: dict[str, Any], context: Any) -> Any:
        with _HANDLER_LOCK:
            return handler(event, context)

    return run


def intent(name: str, **arguments: Any) -> str:
    return json.dumps({"intent": name, **arguments})


def usage_reply(content: str, prompt_tokens: int = 100, completion_tokens: int = 20) -> ModelReply:
    return ModelReply(
        content=content, usage=TokenUsage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
    )


def sample(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS_DIR / f"{name}.json").read_text())
    return event


def _replace_ids(value: Any, replacements: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        for old, new in replacements.items():
            value = value.replace(old, new)
        return value
    if isinstance(value, dict):
        return {key: _replace_ids(item, replacements) for key, item in value.items()}
    if isinstance(value, list):
        return [_replace_ids(item, replacements) for item in value]
    return value


def api_event(
    name: str,
    *,
    thread_id: str | None = None,
    callback_id: str | None = None,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    query: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """An events/api-*.json sample aimed at a real thread/callback, optionally with another body."""
    replacements = {}
    if thread_id is not None:
        replacements[SAMPLE_THREAD_ID] = thread_id
    if callback_id is not None:
        replacements[SAMPLE_CALLBACK_ID] = callback_id
    event: dict[str, Any] = _replace_ids(sample(name), replacements)
    if body is not None:
        event["body"] = body if isinstance(body, str) else json.dumps(body)
    for key, value in (headers or {}).items():
        event["headers"][key] = value
        event["multiValueHeaders"][key] = [value]
    if query is not None:
        event["queryStringParameters"] = dict(query)
        event["multiValueQueryStringParameters"] = {key: [value] for key, value in query.items()}
    return event


def signed_callback_event(
    callback_id: str, payload: Mapping[str, Any], secret: str = WEBHOOK_SECRET
) -> dict[str, Any]:
    body = webhook.encode(payload)
    return api_event(
        "api-callback",
        callback_id=callback_id,
        body=body.decode(),
        headers=webhook.signed_headers(secret, body),
    )


@dataclass
class Response:
    status: int
    body: Any


@dataclass
class WebhookReceiver:
    """A caller's webhook endpoint on loopback: records every POST with its headers."""

    url: str
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def notifications(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _headers, body in self.received]


@dataclass
class Stack:
    template: Template
    sfn: Any
    state_machine_arn: str
    deploy_service_url: str
    receiver: WebhookReceiver
    handlers: dict[str, Handler] = field(default_factory=dict)
    model: ScriptedModel = field(default_factory=lambda: ScriptedModel([]))
    bridge: LambdaBridge = field(default_factory=LambdaBridge)  # the state machine's Lambda tasks

    def script(self, *replies: ScriptedReply, **overrides: Any) -> ScriptedModel:
        """What the model answers, in order, from now on (a fresh runtime built around it)."""
        self.model = ScriptedModel(replies)
        runtime.reset(llm=self.model, **overrides)
        return self.model

    def handler(self, logical_id: str) -> Handler:
        if logical_id not in self.handlers:
            self.handlers[logical_id] = serialized(load_handler(self.template, logical_id))
        return self.handlers[logical_id]

    def invoke(self, logical_id: str, event: dict[str, Any]) -> Any:
        return self.handler(logical_id)(copy.deepcopy(event), LocalContext(function_name=logical_id))

    def api(self, event: dict[str, Any]) -> Response:
        result = self.invoke("ApiFunction", event)
        return Response(int(result["statusCode"]), json.loads(result["body"]) if result.get("body") else None)

    @property
    def store(self) -> Any:
        return runtime.current().store

    def thread(self, thread_id: str) -> Thread:
        return self.store.load(thread_id)[1]  # type: ignore[no-any-return]

    def events(self, thread_id: str) -> tuple[Event, ...]:
        return self.thread(thread_id).events

    def wait_for(self, thread_id: str, status: ThreadStatus) -> Thread:
        """Poll until the thread has this status and, when it waits, Notify has saved its wait."""

        def settled(thread: Thread) -> bool:
            if state.status(thread.events) is not status:
                return False
            return not status.is_waiting or self.store.get_wait(thread_id) is not None

        return poll_until(lambda: self.thread(thread_id), settled)

    def wait(self, thread_id: str) -> PendingWait:
        found = self.store.get_wait(thread_id)
        assert found is not None, f"thread {thread_id} has no pending wait"
        return found  # type: ignore[no-any-return]

    def executions(self) -> list[dict[str, Any]]:
        return list(self.sfn.list_executions(stateMachineArn=self.state_machine_arn)["executions"])

    def stop_running(self) -> None:
        for execution in self.executions():
            if execution["status"] == "RUNNING":
                self.sfn.stop_execution(executionArn=execution["executionArn"])


class _Recorder(BaseHTTPRequestHandler):
    receiver: WebhookReceiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.receiver.received.append((dict(self.headers.items()), body))  # type: ignore[attr-defined]
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(name="webhook_receiver")
def webhook_receiver_fixture() -> Iterator[WebhookReceiver]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    receiver = WebhookReceiver(url=f"http://127.0.0.1:{server.server_address[1]}/agent-webhook")
    server.receiver = receiver  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(name="stack")
def stack_fixture(
    monkeypatch: pytest.MonkeyPatch,
    template: Template,
    threads_table: str,
    idempotency_table: str,
    payload_bucket: str,
    webhook_receiver: WebhookReceiver,
) -> Iterator[Stack]:
    sfn = boto3.client("stepfunctions", region_name=REGION)
    definition = state_machine_definition(
        template,
        {
            "ReducerFunctionArn": function_arn("ReducerFunction"),
            "NotifyFunctionArn": function_arn("NotifyFunction"),
        },
    )
    machine = sfn.create_state_machine(name="AgentStateMachine", definition=definition, roleArn=ROLE_ARN)
    with run_fake_services() as deploy_service_url:
        for name, value in {
            "THREADS_TABLE": threads_table,
            "PAYLOAD_BUCKET": payload_bucket,
            "IDEMPOTENCY_TABLE": idempotency_table,
            "STATE_MACHINE_ARN": machine["stateMachineArn"],
            "WEBHOOK_SECRET": WEBHOOK_SECRET,
            # As the local stack does: the webhook receivers here listen on loopback, over HTTP.
            "WEBHOOK_ALLOW_LOOPBACK": "true",
            "DEPLOYBOT_SERVICE_URL": deploy_service_url,
            "PAYMENTS_SERVICE_URL": deploy_service_url,
            "POWERTOOLS_SERVICE_NAME": "twelvefactor-test",
            # As template.yaml sets them: the framework's own defaults name no agent.
            "EVENTBRIDGE_LAUNCH_RULES": "Deployment Requested=deploybot",
            "SLACK_DEFAULT_AGENT": "deploybot",
            "EMAIL_DEFAULT_AGENT": "deploybot",
        }.items():
            monkeypatch.setenv(name, value)
        for name in (
            "PROMPTS_DIR",
            "SLACK_BOT_TOKEN",
            "SLACK_BOT_TOKEN_ARN",
            "SLACK_OPERATIONS_CHANNEL",
            "WEBHOOK_SECRET_ARN",
        ):
            monkeypatch.delenv(name, raising=False)
        runtime.reset()
        built = Stack(template, sfn, machine["stateMachineArn"], deploy_service_url, webhook_receiver)
        built.bridge.register("ReducerFunction", built.handler("ReducerFunction"))
        built.bridge.register("NotifyFunction", built.handler("NotifyFunction"))
        with built.bridge.installed():
            try:
                yield built
            finally:
                built.stop_running()
                runtime.reset()


__all__ = ["stack_fixture", "webhook_receiver_fixture"]
