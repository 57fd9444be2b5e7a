"""The whole application on one laptop: moto server, the template's resources, the handlers, a gateway.

`LocalStack` builds what ``sam deploy`` would, from template.yaml itself: the thread and idempotency
tables (key schema, GSI, TTL), the payload bucket, the SES identity replies are sent from, the Lambda
functions and the state machine from ``statemachine/agent.asl.json`` with its DefinitionSubstitutions
resolved to those functions. moto's Step Functions interpreter executes the ASL for real and its
Lambda tasks run our handlers in this process (`LambdaBridge`); the template's API routes are served
by `LocalGateway`. Around them: the Slack Web API stand-in, the fake deployment service, and the LLM
the caller chose (a base URL: the scripted fake server, the embedded model, or a real provider).

All handlers share this process, so they share ``os.environ``: it holds the union of the functions'
environments (a variable two functions set differently is an error, reported before anything runs),
with the stack's own endpoints and local secrets on top. Everything is undone on exit.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import email.utils
import hashlib
import hmac
import io
import json
import logging
import os
import secrets
import socket
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlencode

import boto3
import httpx

from .. import runtime
from ..settings import LlmProvider, LlmSettings, OutputMode
from . import roles
from .fake_services import run_fake_services
from .gateway import LocalGateway, Route
from .handlers import Handler, function_ids, isolated_metrics, load_handler, one_invocation
from .lambda_bridge import LambdaBridge
from .slack_standin import SlackCall, SlackStandIn
from .template import (
    Template,
    api_routes,
    function_environment,
    function_role_id,
    load_template,
    resource_name,
    role_policies,
    state_machine_definition,
    table_definition,
    transformed_template,
    ttl_attribute,
)

HOST = "127.0.0.1"
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's default account
# The Slack workspace the local stack pretends to be; the bot id is what the stand-in's auth.test says.
SLACK_TEAM = "TLOCAL"
SLACK_CHANNEL = "CLOCALDEV"
SLACK_USER = "ULOCALDEV"
SLACK_BOT_USER = "UBOT"
API_URL_VARIABLE = "TWELVEFACTOR_API_URL"
MOTO_CONFIG = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
# Removed from the handlers' environment: they would send a local run to AWS Secrets Manager or a profile.
_NOT_LOCAL = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "OPENAI_API_KEY_SECRET_ARN",
    "SLACK_SIGNING_SECRET_ARN",
    "SLACK_BOT_TOKEN_ARN",
    "WEBHOOK_SECRET_ARN",
)
EMBEDDED_TIMEOUT_SECONDS = 300.0


class StackError(RuntimeError):
    """The local stack cannot start; the message says why and what to do."""


class PortInUse(StackError):
    pass


def serial_dynamodb(app: Callable[..., Any]) -> Callable[..., Any]:
    """The moto server's WSGI app, answering one DynamoDB request at a time.

    DynamoDB applies each request atomically; moto's server does not when its threads interleave:
    TransactWriteItems deep-copies whole tables to roll back with no lock ("dictionary changed size
    during iteration" 500s under the throughput benchmark, and a rollback can undo another request's
    committed write). Serialising restores the service's guarantee. Clients still race *between*
    requests (read the thread, then write), which is the contention the runtime must handle.
    """
    lock = threading.Lock()

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if not str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith("DynamoDB_"):
            return app(environ, start_response)
        with lock:
            return list(app(environ, start_response))  # the whole answer, made under the lock

    return serve


class EnvironmentConflict(StackError):
    pass


@dataclass(frozen=True)
class LlmEndpoint:
    """Any OpenAI-compatible endpoint; ``base_url=None`` means the OpenAI API itself."""

    base_url: str | None
    model: str
    api_key: str | None = None
    output_mode: OutputMode = "json_schema"
    description: str = ""
    # A provider is worth a pre-flight check (a key to reject); the stack's own servers are not.
    kind: Literal["provider", "embedded", "scripted"] = "provider"
    # None keeps LLM_TIMEOUT_SECONDS as configured; a small CPU model needs far more than a provider.
    timeout_seconds: float | None = None
    # None keeps LLM_TEMPERATURE as configured; the embedded model runs at 0 so a demo repeats.
    temperature: float | None = None
    # "bedrock": the handlers use the Bedrock adapter, reaching the Converse stand-in at ``bedrock_url``
    # (`twelvefactor.local.fake_bedrock`, backed by this endpoint) through boto3's endpoint variable.
    provider: LlmProvider = "openai"
    bedrock_url: str | None = None


@dataclass(frozen=True)
class SentEmail:
    source: str
    to: tuple[str, ...]
    subject: str
    text: str


def ensure_port_free(port: int, what: str) -> None:
    """Fail fast and clearly: moto's threaded server waits forever when its bind fails."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError as error:
            raise PortInUse(
                f"port {port} is in use ({what} wanted it): stop what listens there or choose another "
                "port (0 picks a free one)"
            ) from error


def merged_environment(
    template: Template, parameters: Mapping[str, str], overridden: Collection[str] = ()
) -> dict[str, str]:
    """Every function's environment in one dict, as one process must hold it.

    A variable that two functions set to different values cannot be honoured in one process, so it
    is an error, unless the stack sets that variable itself (``overridden``) for all of them anyway.
    """
    merged: dict[str, str] = {}
    owners: dict[str, list[tuple[str, str]]] = {}
    for logical_id in function_ids(template):
        for name, value in function_environment(template, logical_id, parameters).items():
            owners.setdefault(name, []).append((logical_id, value))
            merged[name] = value
    conflicts = {
        name: found
        for name, found in owners.items()
        if name not in overridden and len({value for _owner, value in found}) > 1
    }
    if conflicts:
        lines = [
            f"  {name}: " + ", ".join(f"{owner}={value!r}" for owner, value in found)
            for name, found in sorted(conflicts.items())
        ]
        raise EnvironmentConflict(
            "the local stack runs every function in one process, but template.yaml gives these "
            "variables different values in different functions:\n" + "\n".join(lines)
        )
    return merged


@dataclass
class LocalStack:
    """Use as a context manager. While it runs: ``api_url`` (the gateway), ``moto_url``, ``slack``
    (the stand-in and its record of calls), ``slack_user`` (signed Slack requests), ``services_url``
    (the fake deployment service) and ``environment`` (what the handlers see)."""

    llm: LlmEndpoint
    name: str = "twelvefactor-local"
    moto_port: int = 0
    api_port: int = 0
    slack_port: int = 0
    services_port: int = 0
    log_level: str = "WARNING"
    # Template parameter overrides, as `sam deploy --parameter-overrides` would take them.
    parameters: Mapping[str, str] = field(default_factory=dict)
    template_path: Path | None = None
    on_slack: Callable[[SlackCall], None] | None = None

    _running: ClassVar[bool] = False

    def __post_init__(self) -> None:
        self.template: Template = load_template(self.template_path)
        self.signing_secret = secrets.token_hex(16)
        self.webhook_secret = secrets.token_hex(16)
        self.bot_token = "xoxb-local-" + secrets.token_hex(8)
        self._exit = ExitStack()
        self._saved_env: dict[str, str | None] = {}

    # --- names the template's resources get -------------------------------------------------------

    def physical_name(self, logical_id: str) -> str:
        """The template's own `Name` for a resource where it gives one, else `<stack>-<logical id>`."""
        named = resource_name(self.template, logical_id, self._pseudo_parameters())
        return named if named is not None else f"{self.name}-{logical_id}"

    def _pseudo_parameters(self) -> dict[str, str]:
        return {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Partition": "aws",
            "AWS::StackName": self.name,
            "AWS::URLSuffix": "amazonaws.com",
        }

    @property
    def bucket_name(self) -> str:
        return self.physical_name("PayloadBucket").lower()

    def function_arn(self, logical_id: str) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self.physical_name(logical_id)}"

    @property
    def state_machine_arn(self) -> str:
        return f"arn:aws:states:{REGION}:{ACCOUNT_ID}:stateMachine:{self.physical_name('AgentStateMachine')}"

    # --- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> LocalStack:
        try:
            self._start()
        except BaseException:
            self._exit.close()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self._exit.close()

    def _start(self) -> None:
        # Before anything starts: a conflict is a template problem, not a runtime one.
        merged_environment(self.template, self._parameters("http://127.0.0.1:0"), self._own_environment(""))
        for port, what in (
            (self.moto_port, "the moto server"),
            (self.api_port, "the API gateway"),
            (self.slack_port, "the Slack stand-in"),
            (self.services_port, "the fake deployment service"),
        ):
            ensure_port_free(port, what)
        if LocalStack._running:
            raise StackError(
                "a local stack already runs in this process (moto's state and the handlers' "
                "environment are process-wide): stop it first"
            )
        LocalStack._running = True
        self._exit.callback(setattr, LocalStack, "_running", False)
        self._exit.callback(self._restore_environment)
        self._quiet_moto_access_log()
        self._start_moto()
        self.slack = self._exit.enter_context(SlackStandIn(port=self.slack_port, on_call=self.on_slack))
        self.services_url = self._exit.enter_context(run_fake_services(self.services_port))
        self._provision()
        self.environment = self.handler_environment()
        self._set_environment(self.environment)
        self._exit.callback(runtime.reset)
        runtime.reset()
        # Each function's code runs with its own role's credentials (twelvefactor.local.roles).
        self.function_runtimes = {
            logical_id: runtime.Runtime(session=credentials.session(REGION))
            for logical_id, credentials in self._create_roles().items()
        }
        metric_set = self._exit.enter_context(isolated_metrics())
        handlers = {
            logical_id: self._as_function(logical_id, metric_set)
            for logical_id in function_ids(self.template)
        }
        for rt in self.function_runtimes.values():
            self._warm(rt)
        # From here on moto refuses what a caller's policies do not allow, as IAM would.
        previous = roles.set_access_control(self.moto_url, 0)
        self._exit.callback(roles.set_access_control, self.moto_url, previous)
        bridge = LambdaBridge({self.physical_name(logical_id): h for logical_id, h in handlers.items()})
        self.bridge = self._exit.enter_context(bridge.installed())
        # Executions still paused or running would call handlers into a stopped stack: end them first.
        self._exit.callback(self._stop_executions)
        self.gateway = self._exit.enter_context(
            LocalGateway(self._routes(handlers), host=HOST, port=self.api_port)
        )
        self.api_url = self.gateway.url
        self.slack_user = SlackUser(self.api_url, self.signing_secret)

    def _start_moto(self) -> None:
        from moto.server import ThreadedMotoServer  # noqa: PLC0415 - dev-only, heavy import

        server = ThreadedMotoServer(ip_address=HOST, port=self.moto_port, verbose=False)
        server.start()
        self._exit.callback(server.stop)
        # Before any request: the server's WSGI app, a private attribute (renamed by a moto upgrade,
        # the stack fails to start, loudly, rather than run without the lock).
        server._server.app = roles.presigned_urls_unchecked(  # type: ignore[union-attr]
            serial_dynamodb(server._server.app)  # type: ignore[union-attr]
        )
        self._exit.enter_context(roles.unchecked_while_presigned())
        host, port = server.get_host_and_port()
        self.moto_url = f"http://{host}:{port}"
        # moto's Step Functions interpreter calls Lambda through this port.
        self._set_environment(
            {
                "MOTO_PORT": str(port),
                "AWS_ENDPOINT_URL": self.moto_url,
                "AWS_ACCESS_KEY_ID": "local",
                "AWS_SECRET_ACCESS_KEY": "local",
                "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION,
                **dict.fromkeys(_NOT_LOCAL),
                **dict.fromkeys(name for name in os.environ if name.startswith("AWS_ENDPOINT_URL_")),
            }
        )
        previous = httpx.get(f"{self.moto_url}/moto-api/config", timeout=10).json()
        httpx.post(f"{self.moto_url}/moto-api/config", json=MOTO_CONFIG, timeout=10).raise_for_status()

        def reset_moto() -> None:
            # moto's state and config are process-wide: leave them as they were for whoever comes next.
            httpx.post(f"{self.moto_url}/moto-api/reset", timeout=10)
            httpx.post(f"{self.moto_url}/moto-api/config", json=previous, timeout=10)

        self._exit.callback(reset_moto)

    def _provision(self) -> None:
        """Create what the template declares, with the template's own definitions."""
        dynamodb = boto3.client("dynamodb")
        for logical_id in ("ThreadsTable", "IdempotencyTable"):
            name = self.physical_name(logical_id)
            dynamodb.create_table(**table_definition(self.template, logical_id, table_name=name))
            attribute = ttl_attribute(self.template, logical_id)
            if attribute is not None:
                dynamodb.update_time_to_live(
                    TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": attribute}
                )
        boto3.client("s3").create_bucket(Bucket=self.bucket_name)
        # moto verifies an identity at once; SES refuses to send from an unverified one, as on AWS.
        boto3.client("ses").verify_email_identity(EmailAddress=self.parameter_values()["EmailFromAddress"])
        role = boto3.client("iam").create_role(
            RoleName=self.physical_name("LocalRole"),
            AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
        )["Role"]["Arn"]
        awslambda = boto3.client("lambda")
        for logical_id in function_ids(self.template):
            awslambda.create_function(
                FunctionName=self.physical_name(logical_id),
                Runtime="python3.12",
                Role=role,
                Handler="app.handler",
                Code={"ZipFile": _placeholder_zip()},  # the code that runs is the checkout's, via the bridge
            )
        definition = state_machine_definition(
            self.template,
            {
                "ReducerFunctionArn": self.function_arn("ReducerFunction"),
                "NotifyFunctionArn": self.function_arn("NotifyFunction"),
            },
            parameters=self.parameter_values(),
        )
        boto3.client("stepfunctions").create_state_machine(
            name=self.physical_name("AgentStateMachine"), definition=definition, roleArn=role
        )

    def _create_roles(self) -> dict[str, roles.RoleCredentials]:
        """The roles `sam deploy` would generate, created in moto from the transformed template: one
        per function (assumed; returned by function), and the state machine's, held by the user whose
        key moto's interpreter signs with. The stack's own key becomes an administrator's."""
        parameters = {"LayerCodeSha256": "0" * 64, **self.parameter_values()}
        transformed = transformed_template(
            self.template, {k: v for k, v in parameters.items() if k in self.template["Parameters"]}
        )
        values = _ArnsForAnything({**parameters, **self._arn_values()})
        iam, sts = boto3.client("iam"), boto3.client("sts")
        roles.create_user_with_key(
            iam, f"{self.name}-admin", roles.ADMIN_KEY, {"Administrator": roles.ADMINISTRATOR}, ACCOUNT_ID
        )
        machine_role = transformed["Resources"]["AgentStateMachine"]["Properties"]["RoleArn"]["Fn::GetAtt"][0]
        roles.create_user_with_key(
            iam,
            f"{self.name}-{machine_role}",
            roles.INTERPRETER_KEY,
            role_policies(transformed, machine_role, values),
            ACCOUNT_ID,
        )
        created = {}
        for logical_id in function_ids(self.template):
            role_id = function_role_id(transformed, logical_id)
            created[logical_id] = roles.create_role(
                iam,
                sts,
                f"{self.name}-{role_id}"[:64],
                transformed["Resources"][role_id]["Properties"]["AssumeRolePolicyDocument"],
                role_policies(transformed, role_id, values),
            )
        return created

    def _arn_values(self) -> dict[str, str]:
        """What !GetAtt X.Arn resolves to in policies (moto checks no resource but S3's; see roles)."""
        bucket = f"arn:aws:s3:::{self.bucket_name}"
        table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{self.physical_name('ThreadsTable')}"
        return {
            "ThreadsTable.Arn": table,
            "ThreadsTable.StreamArn": f"{table}/stream/local",
            "IdempotencyTable.Arn": f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/"
            + self.physical_name("IdempotencyTable"),
            "PayloadBucket.Arn": bucket,
        }

    def _as_function(self, logical_id: str, metric_set: Any) -> Handler:
        """The function's handler, imported and invoked with its own runtime (and so its role)."""
        rt = self.function_runtimes[logical_id]
        with runtime.scoped(rt):
            handler = one_invocation(load_handler(self.template, logical_id), metric_set)

        def invoke(event: dict[str, Any], context: Any) -> Any:
            with runtime.scoped(rt):
                return handler(event, context)

        return invoke

    def parameter_values(self) -> dict[str, str]:
        """Template parameters for this run: the caller's overrides win over the stack's choices."""
        return self._parameters(self.services_url)

    def _parameters(self, services_url: str) -> dict[str, str]:
        return {
            "LlmBaseUrl": self.llm.base_url or "",
            "LlmProvider": self.llm.provider,
            "LlmModel": self.llm.model,
            "LlmOutputMode": self.llm.output_mode,
            # Every agent's service parameter (<Agent>ServiceUrl, docs/configuration.md) points at
            # the fake services, so a new agent needs no change here.
            **{
                name: services_url
                for name in self.template.get("Parameters", {})
                if name.endswith("ServiceUrl")
            },
            "AllowedSlackResponders": SLACK_USER,
            "LogLevel": self.log_level,
            "EmailFromAddress": "agent@example.com",
            **self.parameters,
            **self._resource_values(),
        }

    def _resource_values(self) -> dict[str, str]:
        """What !Ref and !GetAtt resolve to here, keyed as `function_environment` expects."""
        values = {
            **self._pseudo_parameters(),
            "ThreadsTable": self.physical_name("ThreadsTable"),
            "IdempotencyTable": self.physical_name("IdempotencyTable"),
            "PayloadBucket": self.bucket_name,
            "AgentStateMachine": self.state_machine_arn,
            "AgentStateMachine.Arn": self.state_machine_arn,
            "AgentStateMachine.Name": self.physical_name("AgentStateMachine"),
        }
        for logical_id in function_ids(self.template):
            values[logical_id] = self.physical_name(logical_id)
            values[f"{logical_id}.Arn"] = self.function_arn(logical_id)
        return values

    def handler_environment(self) -> dict[str, str | None]:
        """The union of the functions' environments, then the stack's own values (None removes)."""
        own = self._own_environment(self.slack.base_url)
        return {**merged_environment(self.template, self.parameter_values(), own), **own}

    def _own_environment(self, slack_base_url: str) -> dict[str, str | None]:
        prompts_dir = self.template.path.parent / "prompts"
        own: dict[str, str | None] = {
            "OPENAI_BASE_URL": self.llm.base_url,
            # Local servers ignore the key; a placeholder stands in when none is configured.
            "OPENAI_API_KEY": self.llm.api_key or os.environ.get("OPENAI_API_KEY") or "local",
            "LLM_MODEL": self.llm.model,
            "LLM_OUTPUT_MODE": self.llm.output_mode,
            # The template points at the layer's copy (/opt/prompts); here it is the checkout's.
            "PROMPTS_DIR": str(prompts_dir),
            "SLACK_API_BASE_URL": slack_base_url,
            "SLACK_BOT_TOKEN": self.bot_token,
            "SLACK_SIGNING_SECRET": self.signing_secret,
            "WEBHOOK_SECRET": self.webhook_secret,
            # Local mode, explicitly: callers' webhook receivers listen on this machine's loopback.
            "WEBHOOK_ALLOW_LOOPBACK": "true",
            "LOG_LEVEL": self.log_level,
            # EMF lines on stdout and X-Ray segments mean nothing without CloudWatch and the daemon.
            "POWERTOOLS_METRICS_DISABLED": "true",
            "POWERTOOLS_TRACE_DISABLED": "true",
        }
        if self.llm.timeout_seconds is not None:
            own["LLM_TIMEOUT_SECONDS"] = str(self.llm.timeout_seconds)
        if self.llm.temperature is not None:
            own["LLM_TEMPERATURE"] = str(self.llm.temperature)
        if self.llm.provider == "bedrock":
            own["LLM_PROVIDER"] = "bedrock"
            own["AWS_ENDPOINT_URL_BEDROCK_RUNTIME"] = self.llm.bedrock_url
        return own

    def _quiet_moto_access_log(self) -> None:
        """moto's server logs every request through werkzeug: hundreds of lines per thread."""
        werkzeug = logging.getLogger("werkzeug")
        self._exit.callback(werkzeug.setLevel, werkzeug.level)
        werkzeug.setLevel(logging.WARNING)

    def _routes(self, handlers: Mapping[str, Handler]) -> list[Route]:
        return [
            Route(route.method, route.path, self.physical_name(route.function), handlers[route.function])
            for route in api_routes(self.template)
        ]

    @staticmethod
    def _warm(rt: runtime.Runtime) -> None:
        """Build the shared clients once, before requests arrive on many threads at once: creating
        boto3 clients from one session is not thread-safe (on Lambda each container has one thread)."""
        _ = rt.store, rt.workflow, rt.idempotency_store, rt.registry, rt.prompts, rt.slack, rt.llm
        rt.channel("email")

    def _set_environment(self, values: Mapping[str, str | None]) -> None:
        for name, value in values.items():
            self._saved_env.setdefault(name, os.environ.get(name))
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    def _restore_environment(self) -> None:
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env.clear()

    def _stop_executions(self) -> None:
        """Stop what still runs, so no execution calls a handler into a stack being taken apart.

        moto reports a stopped execution that was paused on a task token as RUNNING until its wait
        would have ended, so this stops each once rather than waiting for the status to change.
        """
        sfn = boto3.client("stepfunctions", endpoint_url=self.moto_url)
        pages = sfn.get_paginator("list_executions").paginate(
            stateMachineArn=self.state_machine_arn, statusFilter="RUNNING"
        )
        for page in pages:
            for execution in page["executions"]:
                sfn.stop_execution(executionArn=execution["executionArn"], error="LocalStackStopped")

    # --- what the terminal shows ---------------------------------------------------------------

    def client_environment(self) -> dict[str, str]:
        """What to export so boto3, the AWS CLI, curl, `twelvefactor threads` and `twelvefactor invoke`
        reach this stack: the endpoint, then every variable the stack's handlers run with (the same
        `environment`, so a function invoked from that shell sees the tables, bucket, state machine
        and parameters the stack's own functions see). A provider key the caller set is left out:
        that shell has it already, and a banner is no place for it."""
        handlers = {
            name: value
            for name, value in self.environment.items()
            if value is not None and not (name == "OPENAI_API_KEY" and self.llm.api_key)
        }
        return {
            "AWS_ENDPOINT_URL": self.moto_url,
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_DEFAULT_REGION": REGION,
            API_URL_VARIABLE: self.api_url,
            **handlers,
        }

    def sent_emails(self) -> list[SentEmail]:
        """Mail the functions sent through SES, as moto captured it (moto's documented way to read it)."""
        from moto.ses.models import ses_backends  # noqa: PLC0415

        found = []
        for message in list(ses_backends[ACCOUNT_ID][REGION].sent_messages):
            raw = getattr(message, "raw_data", None)
            if raw is not None:
                parsed = email.message_from_string(raw, policy=email.policy.default)
                body = parsed.get_body(preferencelist=("plain",))
                text = body.get_content() if body is not None else ""
                subject = str(parsed.get("Subject", ""))
                to = [address for _name, address in email.utils.getaddresses(parsed.get_all("To", []))]
            else:
                text, subject = str(message.body), str(message.subject)
                to = list(message.destinations.get("ToAddresses", []))
            found.append(SentEmail(str(message.source), tuple(to), subject, str(text).strip()))
        return found


class _ArnsForAnything(dict[str, str]):
    """Resolves any other reference to a placeholder: policies name queues and aliases the local
    stack does not create, and moto checks no resource outside S3 anyway (see roles)."""

    def __missing__(self, name: str) -> str:
        return f"arn:aws:local:{REGION}:{ACCOUNT_ID}:{name}"


def _placeholder_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "# runs in the local stack's process, see twelvefactor.local.stack\n")
    return buffer.getvalue()


# --- Slack, as a person using it -------------------------------------------------------------------


class SlackUser:
    """Sends what Slack would send when someone mentions the app or clicks a button, signed with the
    app's signing secret, to the local gateway's Slack routes."""

    def __init__(
        self, api_url: str, signing_secret: str, *, user: str = SLACK_USER, channel: str = SLACK_CHANNEL
    ) -> None:
        self.api_url = api_url
        self.signing_secret = signing_secret
        self.user = user
        self.channel = channel

    def signed_headers(self, body: bytes, content_type: str, at: float | None = None) -> dict[str, str]:
        timestamp = str(int(time.time() if at is None else at))
        digest = hmac.new(
            self.signing_secret.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256
        ).hexdigest()
        return {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": timestamp,
            "X-Slack-Signature": f"v0={digest}",
        }

    def mention_body(self, text: str, ts: str | None = None) -> bytes:
        ts = ts or f"{time.time():.6f}"
        event = {
            "token": "unused-verification-token",
            "team_id": SLACK_TEAM,
            "api_app_id": "ALOCAL",
            "type": "event_callback",
            "event_id": "Ev" + uuid.uuid4().hex[:12].upper(),
            "event_time": int(time.time()),
            "authorizations": [{"user_id": SLACK_BOT_USER, "team_id": SLACK_TEAM, "is_bot": True}],
            "event": {
                "type": "app_mention",
                "user": self.user,
                "text": f"<@{SLACK_BOT_USER}> {text}",
                "ts": ts,
                "event_ts": ts,
                "channel": self.channel,
            },
        }
        return json.dumps(event).encode()

    def mention(self, text: str, ts: str | None = None) -> tuple[httpx.Response, str]:
        """@-mention the app; returns the gateway's answer and the message ts (the Slack thread's root)."""
        ts = ts or f"{time.time():.6f}"
        body = self.mention_body(text, ts)
        response = httpx.post(
            f"{self.api_url}/slack/events",
            content=body,
            headers=self.signed_headers(body, "application/json"),
            timeout=30,
        )
        return response, ts

    def click(self, message: SlackCall, action_id: str, message_ts: str | None = None) -> httpx.Response:
        """Click the button ``action_id`` of a message the app posted (as the stand-in recorded it)."""
        button = next(
            (
                element
                for block in message.arguments.get("blocks") or []
                if block.get("type") == "actions"
                for element in block.get("elements", [])
                if element.get("action_id") == action_id
            ),
            None,
        )
        if button is None:
            raise ValueError(f"the message has no button {action_id!r}")
        ts = message_ts or str(message.arguments.get("ts") or f"{time.time():.6f}")
        payload = {
            "type": "block_actions",
            "user": {"id": self.user},
            "team": {"id": SLACK_TEAM},
            "channel": {"id": str(message.arguments.get("channel", self.channel))},
            "container": {
                "type": "message",
                "message_ts": ts,
                "channel_id": message.arguments.get("channel"),
            },
            "message": {"ts": ts, "text": message.arguments.get("text", "")},
            "actions": [{**button, "action_ts": f"{time.time():.6f}"}],
        }
        body = urlencode({"payload": json.dumps(payload)}).encode()
        return httpx.post(
            f"{self.api_url}/slack/interactions",
            content=body,
            headers=self.signed_headers(body, "application/x-www-form-urlencoded"),
            timeout=30,
        )

    def curl_example(self, text: str = "Can you deploy the backend?") -> str:
        """A shell command that sends a correctly signed app_mention (the signature covers its time)."""
        body = self.mention_body(text).decode()
        headers = self.signed_headers(body.encode(), "application/json")
        header_flags = " ".join(f"-H '{name}: {value}'" for name, value in headers.items())
        return f"curl -sS -X POST {self.api_url}/slack/events {header_flags} --data '{body}'"


# --- which language model ---------------------------------------------------------------------------


@contextmanager
def open_llm(
    choice: str | None = None, *, port: int = 0, say: Callable[[str], None] = lambda _text: None
) -> Iterator[LlmEndpoint]:
    """``embedded`` (SmolLM2 on llama.cpp's server, started here), an OpenAI-compatible base URL,
    or None: the provider OPENAI_BASE_URL/OPENAI_API_KEY configure if either is set, else embedded.
    A provider's model and output mode come from LLM_MODEL and LLM_OUTPUT_MODE, as in Lambda."""
    settings = LlmSettings()
    if choice is None and (settings.base_url or settings.api_key):
        choice = settings.base_url or "default"
    if choice in (None, "embedded"):
        from . import embedded_llm  # noqa: PLC0415 - only this path needs it

        say("Starting the embedded model (SmolLM2-135M on llama.cpp's OpenAI-compatible server)...")
        with embedded_llm.embedded_llm(port) as base_url:
            yield LlmEndpoint(
                base_url,
                embedded_llm.MODEL_ALIAS,
                output_mode="json_object",  # llama.cpp turns the schema into a grammar
                description=f"embedded SmolLM2-135M (llama.cpp server at {base_url})",
                kind="embedded",
                # The first answer includes reading the whole prompt on a shared CPU: minutes, not seconds.
                timeout_seconds=EMBEDDED_TIMEOUT_SECONDS,
                # Greedy decoding: the same thread gets the same decision, so `make demo` repeats.
                temperature=0.0,
            )
        return
    provider_url = None if choice == "default" else choice
    if provider_url is not None and not provider_url.startswith(("http://", "https://")):
        raise StackError(f"--llm takes embedded or an http(s) base URL, not {choice!r}")
    api_key = settings.api_key.get_secret_value() if settings.api_key else None
    yield LlmEndpoint(
        provider_url,
        settings.model,
        api_key=api_key,
        output_mode=settings.output_mode,
        description=f"{settings.model} at {provider_url or 'the OpenAI API (the default endpoint)'}",
    )


@contextmanager
def as_provider(llm: LlmEndpoint, provider: LlmProvider) -> Iterator[LlmEndpoint]:
    """The endpoint as the handlers should reach it: unchanged for openai; for bedrock, through a
    Converse stand-in on loopback that this endpoint answers (the handlers use boto3's Converse)."""
    if provider == "openai":
        yield llm
        return
    from .fake_bedrock import EmbeddedConverse, FakeBedrock  # noqa: PLC0415 - only this path needs it

    if llm.base_url is None:
        raise StackError("--provider bedrock needs a model server to answer (embedded, or --llm URL)")
    backend = EmbeddedConverse(llm.base_url, llm.model, timeout_seconds=llm.timeout_seconds or 600.0)
    try:
        with FakeBedrock(backend) as standin:
            yield dataclasses.replace(
                llm,
                provider="bedrock",
                bedrock_url=standin.url,
                description=f"Bedrock Converse stand-in at {standin.url}, answered by {llm.description}",
            )
    finally:
        backend.close()


def check_llm(llm: LlmEndpoint) -> None:
    """Ask the endpoint for its models once, so a bad key or URL fails here, in words, not as three
    error events and an escalation in the first thread."""
    import openai  # noqa: PLC0415 - the reducer's own client, loaded only when a stack starts

    from twelvefactor.adapters.llm import OpenAIModel  # noqa: PLC0415

    client = OpenAIModel(
        model=llm.model, base_url=llm.base_url, api_key=llm.api_key, max_retries=0, timeout_seconds=15
    )
    where = client.base_url
    try:
        client.list_models()
    except openai.APIStatusError as error:
        if error.status_code == 401:
            raise StackError(
                f"the provider at {where} rejected the API key (set a valid OPENAI_API_KEY): {error.message}"
            ) from error
        if error.status_code == 403:
            raise StackError(f"the provider at {where} refused access: {error.message}") from error
        # Other statuses pass: some compatible servers have no /models; the first real call will tell.
    except openai.APIError as error:
        raise StackError(f"nothing answers at {where}: check the URL and that the server runs") from error
    finally:
        client.close()
