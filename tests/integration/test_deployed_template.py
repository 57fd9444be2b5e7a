"""The CloudFormation `sam deploy` creates from template.yaml, checked where moto cannot check it.

template.yaml is transformed offline by samtranslator, as CloudFormation's SAM transform does, and
these tests read what that generates: the roles and their grants, the function versions and aliases,
the API's OpenAPI body, the event wiring. Each test names an issue-18 finding that passed
`sam validate --lint` and every other test, and would have broken a real deploy.

The grants test derives what each function needs from the code itself (the boto3 calls of each
adapter, through the runtime's services, from each handler), so a new call in an adapter fails here
until every function that reaches it is granted the action.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import aws_lambda_powertools.utilities.idempotency.persistence.dynamodb as powertools_dynamodb
import pytest

from twelvefactor.local.handlers import function_ids
from twelvefactor.local.template import (
    Template,
    function_role_id,
    load_template,
    parameter_values,
    role_policies,
    transformed_template,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LAYER_SHA = "1" * 64
# Secrets configured, so the conditional grants are there to be read.
SECRETS = {
    name: f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}-AbCdEf"
    for name in ("OpenAiApiKeySecretArn", "SlackSigningSecretArn", "SlackBotTokenArn", "WebhookSecretArn")
}


@pytest.fixture(scope="module")
def source() -> Template:
    return load_template(ROOT / "template.yaml")


@pytest.fixture(scope="module")
def deployed(source: Template) -> dict[str, Any]:
    return transformed_template(source, {"LayerCodeSha256": LAYER_SHA, **SECRETS})


def _resources(deployed: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: spec for name, spec in deployed["Resources"].items() if spec["Type"] == kind}


def _versions(deployed: dict[str, Any]) -> dict[str, str]:
    """function logical id -> the logical id of the version its alias points at."""
    return {
        spec["Properties"]["FunctionName"]["Ref"]: spec["Properties"]["FunctionVersion"]["Fn::GetAtt"][0]
        for spec in _resources(deployed, "AWS::Lambda::Alias").values()
    }


# --- 1. a layer-only change publishes new versions ----------------------------------------------------


def test_a_layer_only_change_publishes_a_new_version_of_every_function(source: Template) -> None:
    # Given two builds that differ only in the layer (another upload, another hash of its content)
    first = transformed_template(
        source,
        {"LayerCodeSha256": "a" * 64},
        uploaded={"TwelvefactorLayer": "s3://artifacts/layer-build-1.zip"},
    )
    second = transformed_template(
        source,
        {"LayerCodeSha256": "b" * 64},
        uploaded={"TwelvefactorLayer": "s3://artifacts/layer-build-2.zip"},
    )
    again = transformed_template(
        source,
        {"LayerCodeSha256": "a" * 64},
        uploaded={"TwelvefactorLayer": "s3://artifacts/layer-build-1.zip"},
    )
    # When CloudFormation compares them, Then every function's live alias moves to a new version
    # (a new logical id is a new AWS::Lambda::Version), and the same build publishes nothing new
    before, after = _versions(first), _versions(second)
    assert set(before) == set(function_ids(source))
    assert all(before[function] != after[function] for function in before), (before, after)
    assert _versions(again) == before


def test_the_layer_hash_is_a_required_parameter(source: Template) -> None:
    # Given the parameter every function publishes on
    spec = source["Parameters"]["LayerCodeSha256"]
    # Then a deploy that does not pass it is refused rather than quietly keeping the old layer
    assert "Default" not in spec
    assert re.fullmatch(spec["AllowedPattern"], "0" * 64) and not re.fullmatch(spec["AllowedPattern"], "")
    for function in function_ids(source):
        assert source["Resources"][function]["Properties"]["AutoPublishCodeSha256"] == {
            "Ref": "LayerCodeSha256"
        }


# --- 2. protected routes are invoked by API Gateway, not with the caller's credentials -----------------


def _integrations(deployed: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    [api] = _resources(deployed, "AWS::ApiGateway::RestApi").values()
    for path, methods in api["Properties"]["Body"]["paths"].items():
        for method, operation in methods.items():
            yield path, method, operation


def test_no_route_invokes_its_function_with_the_callers_credentials(deployed: dict[str, Any]) -> None:
    # When every route's integration is read from the generated OpenAPI body
    routes = list(_integrations(deployed))
    # Then none passes the caller's identity to Lambda (`credentials: arn:aws:iam::*:user/*` would
    # need every caller to hold lambda:InvokeFunction), and the IAM-protected ones are still protected
    assert routes
    for path, method, operation in routes:
        assert "credentials" not in operation["x-amazon-apigateway-integration"], (path, method)
    protected = {
        (path, method)
        for path, method, operation in routes
        if {"AWS_IAM": []} in operation.get("security", [])
    }
    assert ("/threads/{id}", "delete") in protected
    assert ("/slack/events", "post") not in protected


# --- 3 and 8. every function is granted what its code calls, and no more --------------------------------

# boto3 calls whose IAM action is not the operation's own name.
_SPECIAL_ACTIONS = {
    ("dynamodb", "transact_write_items"): {
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:ConditionCheckItem",
    },
    ("dynamodb", "batch_writer"): {"dynamodb:BatchWriteItem"},
    ("s3", "generate_presigned_url"): {"s3:GetObject"},  # the link is signed with the function's role
    ("s3", "delete_objects"): {"s3:DeleteObject"},
    ("s3", "list_objects_v2"): {"s3:ListBucket"},
    ("ses", "send_email"): {"ses:SendEmail"},
}
# adapter -> (source file, class, {attribute holding a boto3 client or resource: IAM service prefix})
_ADAPTERS = {
    "store": (
        "layers/twelvefactor/adapters/dynamodb_store.py",
        "DynamoThreadStore",
        {"_table": "dynamodb", "_client": "dynamodb", "_s3": "s3"},
    ),
    "workflow": (
        "layers/twelvefactor/adapters/stepfunctions.py",
        "StepFunctionsWorkflow",
        {"_client": "states"},
    ),
    "email": ("layers/twelvefactor/adapters/email_channel.py", "EmailChannel", {"_ses": "ses"}),
    "idempotency": (powertools_dynamodb.__file__, "DynamoDBPersistenceLayer", {"client": "dynamodb"}),
}


def _action(service: str, operation: str) -> set[str]:
    special = _SPECIAL_ACTIONS.get((service, operation))
    if special is not None:
        return special
    return {f"{service}:{''.join(part.title() for part in operation.split('_'))}"}


def _class_node(path: str | Path, name: str) -> ast.ClassDef:
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    return next(node for node in ast.walk(tree) if isinstance(node, ast.ClassDef) and node.name == name)


def _self_attribute(node: ast.AST) -> str | None:
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return node.attr
    return None


def _transitive(direct: dict[str, set[Any]], calls: dict[str, set[str]]) -> dict[str, set[Any]]:
    """Each method's own findings plus those of the methods of its class it calls, to any depth."""
    resolved: dict[str, set[Any]] = {}

    def visit(method: str, seen: frozenset[str]) -> set[Any]:
        found = set(direct.get(method, set()))
        for callee in calls.get(method, set()) - seen:
            found |= visit(callee, seen | {callee})
        return found

    for method in direct:
        resolved[method] = visit(method, frozenset({method}))
    return resolved


@cache
def adapter_actions(adapter: str) -> dict[str, frozenset[str]]:
    """method -> the IAM actions its boto3 calls need, read from the adapter's source."""
    path, class_name, receivers = _ADAPTERS[adapter]
    direct: dict[str, set[str]] = {}
    calls: dict[str, set[str]] = {}
    for method in _class_node(path, class_name).body:
        if not isinstance(method, ast.FunctionDef):
            continue
        actions, own_calls = direct.setdefault(method.name, set()), calls.setdefault(method.name, set())
        for node in ast.walk(method):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            receiver = _self_attribute(node.func.value)
            if receiver in receivers:
                operation = node.func.attr
                if operation == "get_paginator":
                    operation = ast.literal_eval(node.args[0])
                actions |= _action(receivers[receiver], operation)
        # Methods called or handed on (``self._load(thread_id, self._event_from)``) both run.
        own_calls |= {node.attr for node in ast.walk(method) if _self_attribute(node) is not None}
    return {method: frozenset(found) for method, found in _transitive(direct, calls).items()}


@cache
def runtime_reach() -> dict[str, frozenset[tuple[str, str]]]:
    """Runtime method or property -> the (adapter, method) pairs it can reach, from runtime.py."""
    direct: dict[str, set[tuple[str, str]]] = {}
    calls: dict[str, set[str]] = {}
    for method in _class_node(ROOT / "layers/twelvefactor/runtime.py", "Runtime").body:
        if not isinstance(method, ast.FunctionDef):
            continue
        reached, own = direct.setdefault(method.name, set()), calls.setdefault(method.name, set())
        for node in ast.walk(method):
            if isinstance(node, ast.Attribute):
                adapter = _self_attribute(node.value)
                if adapter in ("store", "workflow"):
                    reached.add((adapter, node.attr))
                elif _self_attribute(node) is not None:
                    own.add(node.attr)
        if method.name in ("deliver", "_build_channel"):
            reached.add(("email", "send"))  # a thread's channel may be email
        if method.name in ("once", "processed"):
            reached |= {("idempotency", name) for name in adapter_actions("idempotency")}
    return {method: frozenset(found) for method, found in _transitive(direct, calls).items()}


def _modules_of(handler: Path) -> list[Path]:
    """The handler and the twelvefactor.triggers modules it imports (they read the store for it)."""
    tree = ast.parse(handler.read_text(encoding="utf-8"))
    found = [handler]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("twelvefactor.triggers"):
            package = ROOT / "layers" / str(node.module).replace(".", "/")
            if package.is_dir():  # from twelvefactor.triggers import slack
                found += [package / f"{alias.name}.py" for alias in node.names]
            else:
                found.append(package.with_suffix(".py"))
    return found


def _runtime_receiver(node: ast.AST) -> bool:
    """``rt`` or ``runtime.current()``: how handlers reach their function's runtime."""
    if isinstance(node, ast.Name):
        return node.id == "rt"
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "current"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "runtime"
    )


def _store_receiver(node: ast.AST) -> bool:
    """``store`` or ``<runtime>.store``."""
    if isinstance(node, ast.Name):
        return node.id == "store"
    return isinstance(node, ast.Attribute) and node.attr == "store" and _runtime_receiver(node.value)


def needed_actions(function_dir: str) -> set[str]:
    """Every IAM action the function's code can call, derived from its handler down to boto3:
    runtime services and properties the handler uses, store methods it (or a trigger module it
    imports) calls directly, and clients it asks the runtime for."""
    reach, store = runtime_reach(), adapter_actions("store")
    needed: set[str] = set()
    for module in _modules_of(ROOT / "functions" / function_dir / "app.py"):
        clients: dict[str, str] = {}
        tree = ast.parse(module.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                call = node.value
                if isinstance(call.func, ast.Attribute) and call.func.attr == "client" and call.args:
                    for target in node.targets:
                        if isinstance(target, ast.Name):
                            clients[target.id] = ast.literal_eval(call.args[0])
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                receiver = node.func.value
                if isinstance(receiver, ast.Name) and receiver.id in clients:
                    needed |= _action(clients[receiver.id], node.func.attr)
                if _store_receiver(receiver):
                    needed |= store.get(node.func.attr, frozenset())
            if isinstance(node, ast.Attribute) and _runtime_receiver(node.value):
                for adapter, method in reach.get(node.attr, frozenset()):
                    needed |= adapter_actions(adapter).get(method, frozenset())
    return needed


def granted_actions(deployed: dict[str, Any], source: Template, function: str) -> dict[str, list[Any]]:
    """action -> the resources the function's generated role is allowed it on."""
    values = _Anything({**parameter_values(source, {"LayerCodeSha256": LAYER_SHA, **SECRETS})})
    granted: dict[str, list[Any]] = {}
    for document in role_policies(deployed, function_role_id(deployed, function), values).values():
        for statement in document["Statement"]:
            assert statement["Effect"] == "Allow"
            actions = statement["Action"]
            for action in [actions] if isinstance(actions, str) else actions:
                resources = statement["Resource"]
                granted.setdefault(action, []).extend(
                    resources if isinstance(resources, list) else [resources]
                )
    return granted


class _Anything(dict[str, str]):
    """Resources resolve to their own names: the grants test compares actions, the scoping test names."""

    def __missing__(self, name: str) -> str:
        return f"<{name}>"


FUNCTION_DIRS = {
    "ReducerFunction": "reducer",
    "NotifyFunction": "notify",
    "ApiFunction": "api",
    "SlackFunction": "slack",
    "EmailFunction": "email",
    "EventBridgeFunction": "eventbridge",
    "JanitorFunction": "janitor",
}
# Granted beyond what the code calls today, each with its reason.
ALLOWED_EXTRA = {
    # DELETE /threads/{id} may end a paused wait on its task token (SendTaskFailure) or stop the
    # thread's executions (ListExecutions, StopExecution): the cancel path keeps all three.
    ("ApiFunction", "states:SendTaskFailure"),
    ("ApiFunction", "states:ListExecutions"),
    ("ApiFunction", "states:StopExecution"),
    # SendEmail and SendRawEmail are one permission in SES's own guidance: replies may carry attachments.
    *((function, "ses:SendRawEmail") for function in ("ReducerFunction", "NotifyFunction", "EmailFunction")),
    # Lambda's event source mapping reads the stream with the Janitor's role, and the failure queue
    # is written with it: Lambda's calls, not the code's.
    *(
        ("JanitorFunction", action)
        for action in (
            "dynamodb:DescribeStream",
            "dynamodb:GetRecords",
            "dynamodb:GetShardIterator",
            "dynamodb:ListStreams",
            "sqs:SendMessage",
        )
    ),
    # Lambda's asynchronous-invocation failures go to the queue with the function's role.
    ("EmailFunction", "sqs:SendMessage"),
    ("EventBridgeFunction", "sqs:SendMessage"),
}
# Reached only when a secret is configured (Parameters), through Powertools' get_secret.
SECRET_READERS = {
    "ReducerFunction": 3,  # the LLM key, the Slack bot token, the webhook secret
    "NotifyFunction": 2,
    "ApiFunction": 1,
    "SlackFunction": 2,
}


def test_the_derivation_sees_the_calls_the_issue_found(deployed: dict[str, Any]) -> None:
    # Given the code as it is: DELETE /threads/{id} cancels the thread's execution (the API only)
    # Then the derivation finds those calls, so the grants test below cannot pass vacuously
    cancel = adapter_actions("workflow")["cancel"]
    assert cancel and cancel <= {"states:ListExecutions", "states:StopExecution", "states:SendTaskFailure"}
    assert cancel <= needed_actions("api")
    assert "states:StopExecution" in cancel and "states:StopExecution" not in needed_actions("slack")
    assert {"dynamodb:BatchWriteItem", "s3:ListBucket", "s3:DeleteObject"} <= needed_actions("janitor")


@pytest.mark.parametrize("function", list(FUNCTION_DIRS))
def test_every_action_the_code_calls_is_granted_and_nothing_else(
    deployed: dict[str, Any], source: Template, function: str
) -> None:
    # Given what the function's code can call, derived from its handler down to each boto3 call
    needed = needed_actions(FUNCTION_DIRS[function])
    # When the role the transform generates for it is read
    granted = granted_actions(deployed, source, function)
    # Then every call is allowed, and every grant is one the code calls (or is listed with its reason)
    assert needed - set(granted) == set(), f"{function} calls actions its role does not allow"
    secrets = {action for action in granted if action == "secretsmanager:GetSecretValue"}
    extra = set(granted) - needed - secrets - {action for owner, action in ALLOWED_EXTRA if owner == function}
    assert extra == set(), f"{function} is granted actions its code never calls"
    assert len(granted.get("secretsmanager:GetSecretValue", [])) == SECRET_READERS.get(function, 0)


@pytest.mark.parametrize("function", list(FUNCTION_DIRS))
def test_every_grant_names_its_resources(deployed: dict[str, Any], source: Template, function: str) -> None:
    # When the function's generated role is read, Then no statement allows an action on every resource
    # (SAM's DynamoDB stream event would have attached one), and no managed policy but logging/tracing
    granted = granted_actions(deployed, source, function)
    assert all("*" not in resources for resources in granted.values()), granted
    role = deployed["Resources"][function_role_id(deployed, function)]
    assert set(role["Properties"]["ManagedPolicyArns"]) <= {
        "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
        "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
    }


def test_payload_grants_stay_under_their_prefixes(deployed: dict[str, Any], source: Template) -> None:
    # Given the bucket's two prefixes: thread payloads, and the raw mail SES writes
    # Then object grants are scoped to a prefix, and only the Email function reads inbound mail
    for function in FUNCTION_DIRS:
        granted = granted_actions(deployed, source, function)
        for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
            for resource in granted.get(action, []):
                assert resource in ("<PayloadBucket.Arn>/threads/*", "<PayloadBucket.Arn>/inbound/*"), (
                    resource
                )
                if resource.endswith("inbound/*"):
                    assert (function, action) == ("EmailFunction", "s3:GetObject")


# --- 4. every Lambda task retries a SnapStart restore and Lambda's service errors -------------------------

SERVICE_ERRORS = {
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
    "Lambda.ClientExecutionTimeoutException",
}


def _longest_wait(retrier: dict[str, Any]) -> float:
    """Seconds a retrier waits in all, at most (before jitter), for MaxAttempts retries."""
    interval, rate = retrier.get("IntervalSeconds", 1), retrier.get("BackoffRate", 2.0)
    cap = retrier.get("MaxDelaySeconds", float("inf"))
    return float(sum(min(interval * rate**attempt, cap) for attempt in range(retrier.get("MaxAttempts", 3))))


def test_every_lambda_task_retries_snapstart_restores_and_service_errors() -> None:
    # Given the state machine definition the stack deploys
    definition = json.loads((ROOT / "statemachine/agent.asl.json").read_text(encoding="utf-8"))
    tasks = {
        name: state
        for name, state in definition["States"].items()
        if state["Type"] == "Task" and state["Resource"].startswith("arn:aws:states:::lambda:invoke")
    }
    assert set(tasks) == {"Reduce", "Wait for human", "Record failure", "Record wait failure"}
    for name, task in tasks.items():
        retriers = task.get("Retry", [])
        # Then an Inactive SnapStart version is waited for long enough to be restored (minutes)
        snapstart = [r for r in retriers if "Lambda.SnapStartNotReadyException" in r["ErrorEquals"]]
        assert snapstart and _longest_wait(snapstart[0]) >= 300, name
        # And Lambda's transient service errors are retried too, each by some retrier
        retried = {error for retrier in retriers for error in retrier["ErrorEquals"]}
        assert retried >= SERVICE_ERRORS, (name, SERVICE_ERRORS - retried)
        # And no earlier catch-all retrier swallows them before their own (the first match wins)
        first_all = next(
            (
                i
                for i, r in enumerate(retriers)
                if {"States.ALL", "States.TaskFailed"} & set(r["ErrorEquals"])
            ),
            len(retriers),
        )
        assert retriers.index(snapstart[0]) < first_all, name


# --- 5. replaced versions are deleted -----------------------------------------------------------------


def test_replaced_function_versions_are_deleted(deployed: dict[str, Any]) -> None:
    # When the generated versions are read, Then CloudFormation deletes each once it is replaced
    versions = _resources(deployed, "AWS::Lambda::Version")
    assert len(versions) == len(FUNCTION_DIRS)
    assert {spec.get("DeletionPolicy") for spec in versions.values()} == {"Delete"}


def test_snapstart_is_kept_only_where_a_person_waits(deployed: dict[str, Any], source: Template) -> None:
    # Asynchronous and stream-driven functions gain little from a restore and pay for each snapshot;
    # the others follow SnapStartApplyOn (None where a region has no SnapStart)
    functions = _resources(deployed, "AWS::Lambda::Function")
    applied = {name: spec["Properties"]["SnapStart"]["ApplyOn"] for name, spec in functions.items()}
    assert applied == {
        **{
            key: {"Ref": "SnapStartApplyOn"}
            for key in ("ReducerFunction", "NotifyFunction", "ApiFunction", "SlackFunction")
        },
        **dict.fromkeys(("EmailFunction", "EventBridgeFunction", "JanitorFunction"), "None"),
    }
    assert source["Parameters"]["SnapStartApplyOn"]["Default"] == "PublishedVersions"


# --- 6. the heartbeat stays below the timeout ----------------------------------------------------------


def test_the_heartbeat_is_below_the_timeout_for_every_allowed_parameter_value(source: Template) -> None:
    # Given the ranges the parameters allow
    timeout = source["Parameters"]["WaitTimeoutSeconds"]
    margin = source["Parameters"]["HeartbeatMarginSeconds"]
    # When the state machine derives the heartbeat (timeout minus margin)
    definition = (ROOT / "statemachine/agent.asl.json").read_text(encoding="utf-8")
    assert (
        "States.MathAdd(States.StringToJson('${WaitTimeoutSeconds}'), -${HeartbeatMarginSeconds})"
        in definition
    )
    assert "HeartbeatSeconds" not in source["Parameters"]
    # Then at the range's edges it is a positive number of seconds below the timeout
    for seconds in (timeout["MinValue"], timeout["MaxValue"]):
        for gap in (margin["MinValue"], margin["MaxValue"]):
            assert 0 < seconds - gap < seconds


# --- 7. failed asynchronous events are kept and seen --------------------------------------------------


def test_async_functions_send_failed_events_to_an_alarmed_queue(deployed: dict[str, Any]) -> None:
    # When the asynchronous invocation settings are read
    configs = {
        spec["Properties"]["FunctionName"]["Ref"]: spec["Properties"]
        for spec in _resources(deployed, "AWS::Lambda::EventInvokeConfig").values()
    }
    # Then SES's and EventBridge's functions keep a failed event in the queue, for the live alias
    assert set(configs) == {"EmailFunction", "EventBridgeFunction"}
    for properties in configs.values():
        assert properties["Qualifier"] == "live"
        assert properties["DestinationConfig"]["OnFailure"]["Destination"] == {
            "Fn::GetAtt": ["AsyncFailureQueue", "Arn"]
        }
    # And an alarm watches that queue
    alarms = _resources(deployed, "AWS::CloudWatch::Alarm").values()
    watched = [
        a
        for a in alarms
        if a["Properties"].get("Dimensions")
        == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["AsyncFailureQueue", "QueueName"]}}]
    ]
    assert watched and watched[0]["Properties"]["Threshold"] == 0


# --- 9. the stage is throttled and logs every request ----------------------------------------------------


def test_the_stage_throttles_every_route_and_writes_an_access_log(deployed: dict[str, Any]) -> None:
    [stage] = _resources(deployed, "AWS::ApiGateway::Stage").values()
    properties = stage["Properties"]
    # Then one method setting covers every route (the unauthenticated ones too), from parameters
    assert properties["MethodSettings"] == [
        {
            "ResourcePath": "/*",
            "HttpMethod": "*",
            "ThrottlingRateLimit": {"Ref": "ApiThrottlingRateLimit"},
            "ThrottlingBurstLimit": {"Ref": "ApiThrottlingBurstLimit"},
        }
    ]
    # And the access log (on unless ApiAccessLogging=disabled) goes to a log group the stack owns
    condition, logged, not_logged = properties["AccessLogSetting"]["Fn::If"]
    assert deployed["Conditions"][condition] == {"Fn::Equals": [{"Ref": "ApiAccessLogging"}, "enabled"]}
    assert logged["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogs", "Arn"]}
    assert "$context.requestId" in logged["Format"]
    assert not_logged == {"Ref": "AWS::NoValue"}
    assert deployed["Resources"]["ApiAccessLogs"]["Properties"]["RetentionInDays"] == {
        "Ref": "ApiAccessLogRetentionDays"
    }


# --- every caller invokes the live alias ------------------------------------------------------------------


def _alias_refs(deployed: dict[str, Any]) -> set[str]:
    return set(_resources(deployed, "AWS::Lambda::Alias"))


def test_every_caller_invokes_the_live_alias(deployed: dict[str, Any]) -> None:
    aliases = _alias_refs(deployed)
    resources = deployed["Resources"]
    # The state machine's tasks
    substitutions = resources["AgentStateMachine"]["Properties"]["DefinitionSubstitutions"]
    assert {substitutions[key]["Ref"] for key in ("ReducerFunctionArn", "NotifyFunctionArn")} <= aliases
    # API Gateway's integrations
    for path, method, operation in _integrations(deployed):
        uri = operation["x-amazon-apigateway-integration"]["uri"]["Fn::Sub"]
        assert re.search(r"\$\{(\w+Aliaslive)\}/invocations$", uri), (path, method, uri)
    # EventBridge's rule, the stream's mapping, SES's receipt rule and every invoke permission
    for rule in _resources(deployed, "AWS::Events::Rule").values():
        assert all(target["Arn"]["Ref"] in aliases for target in rule["Properties"]["Targets"])
    for mapping in _resources(deployed, "AWS::Lambda::EventSourceMapping").values():
        assert mapping["Properties"]["FunctionName"]["Ref"] in aliases
    for rule in _resources(deployed, "AWS::SES::ReceiptRule").values():
        for action in rule["Properties"]["Rule"]["Actions"]:
            if "LambdaAction" in action:
                assert action["LambdaAction"]["FunctionArn"]["Ref"] in aliases
    for name, permission in _resources(deployed, "AWS::Lambda::Permission").items():
        assert permission["Properties"]["FunctionName"]["Ref"] in aliases, name
