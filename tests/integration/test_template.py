"""template.yaml, the layer build and statemachine/agent.asl.json, checked the way AWS would use them.

`sam validate --lint` and `sam build` run for real (offline lint; the build downloads wheels from the
package index). The ASL runs in moto's Step Functions interpreter with stand-in reducer and notify
handlers, so these tests pin the state machine's contract; the real handlers are wired elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.idempotency.persistence.dynamodb import DynamoDBPersistenceLayer

from tests.integration.conftest import REGION
from tests.support import poll_until
from twelvefactor.local.lambda_bridge import LambdaBridge, LambdaContext
from twelvefactor.local.template import (
    ApiRoute,
    Template,
    UnresolvedReference,
    api_routes,
    function_environment,
    load_template,
    resource,
    resource_name,
    state_machine_definition,
    table_definition,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ROLE_ARN = "arn:aws:iam::123456789012:role/agent-state-machine"
REDUCER_ARN = "arn:aws:lambda:us-east-1:123456789012:function:stack-ReducerFunction:live"
NOTIFY_ARN = "arn:aws:lambda:us-east-1:123456789012:function:stack-NotifyFunction:live"
FUNCTIONS = {
    "ReducerFunction": "reducer",
    "NotifyFunction": "notify",
    "ApiFunction": "api",
    "SlackFunction": "slack",
    "EmailFunction": "email",
    "EventBridgeFunction": "eventbridge",
    "JanitorFunction": "janitor",
}
# ELF e_machine values: what the CPU in the declared Lambda architecture executes.
ELF_MACHINES = {"x86_64": 0x3E, "arm64": 0xB7}


# --- sam validate / sam build -------------------------------------------------------------------


def _sam_environment() -> dict[str, str]:
    environment = {**os.environ, "SAM_CLI_TELEMETRY": "0", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    if shutil.which("pyenv"):
        # sam builds python3.12 functions only with a python3.12 on PATH; pyenv provides one here.
        versions = subprocess.run(
            ["pyenv", "versions", "--bare"], capture_output=True, text=True, check=False
        ).stdout.split()
        chosen = [next((v for v in versions if v.startswith(prefix)), None) for prefix in ("3.11", "3.12")]
        environment["PYENV_VERSION"] = ":".join(version for version in chosen if version)
    return environment


def _sam(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "sam"), *arguments],
        cwd=ROOT,
        env=_sam_environment(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One `sam build` per session (about 15 s with a warm pip cache); yields the build directory."""
    build_dir = tmp_path_factory.mktemp("sam") / "build"
    started = time.monotonic()
    result = _sam("build", "--template-file", "template.yaml", "--build-dir", str(build_dir))
    print(f"sam build took {time.monotonic() - started:.1f}s")
    assert result.returncode == 0, f"sam build failed:\n{result.stdout}\n{result.stderr}"
    yield build_dir
    shutil.rmtree(build_dir, ignore_errors=True)


def _elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", f"{path} is not an ELF shared object"
    return int.from_bytes(header[18:20], "little")


def _distribution_names(site: Path) -> set[str]:
    return {entry.name.split("-")[0].lower().replace("_", "-") for entry in site.glob("*.dist-info")}


def _requirement_name(requirement: str) -> str:
    name = requirement
    for separator in "[<>=!~; ":
        name = name.split(separator)[0]
    return name.lower().replace("_", "-")


def test_sam_validate_lint_passes_offline() -> None:
    # Given the template as committed
    # When SAM's linter (cfn-lint with the SAM transform) checks it
    result = _sam("validate", "--lint", "--template-file", "template.yaml")
    # Then it reports no finding
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "is a valid SAM Template" in result.stdout + result.stderr


def test_built_layer_holds_only_python312_binaries_for_the_declared_architecture(
    built: Path, template: Template
) -> None:
    # Given the architecture the template declares by default
    architecture = template["Parameters"]["Architecture"]["Default"]
    site = built / "TwelvefactorLayer" / "python"
    # When the layer's compiled extensions and wheel tags are inspected
    extensions = sorted(site.rglob("*.so"))
    tags = [
        line.removeprefix("Tag: ")
        for wheel in site.glob("*.dist-info/WHEEL")
        for line in wheel.read_text().splitlines()
        if line.startswith("Tag: ")
    ]
    # Then pydantic-core and friends are there, every one built for CPython 3.12 on that CPU
    assert any("pydantic_core" in str(path) for path in extensions)
    for path in extensions:
        assert ".cpython-312-" in path.name or ".abi3." in path.name, f"{path.name} is not for Python 3.12"
        assert _elf_machine(path) == ELF_MACHINES[architecture], f"{path.name} is not {architecture}"
    machine = {"x86_64": "x86_64", "arm64": "aarch64"}[architecture]
    for tag in tags:
        python, abi, platform = tag.split("-")
        if platform == "any":
            continue
        assert python == "cp312" or abi == "abi3", tag
        assert platform.startswith("manylinux") and platform.endswith(machine), tag


def test_built_layer_carries_the_runtime_dependencies_but_not_the_aws_sdk(built: Path) -> None:
    # Given the runtime dependencies pyproject.toml declares
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    # When the layer's installed distributions are listed
    installed = _distribution_names(built / "TwelvefactorLayer" / "python")
    # Then each declared one is installed, and the Lambda runtime's own SDK is not shadowed
    assert {_requirement_name(requirement) for requirement in declared} <= installed
    assert not {"boto3", "botocore", "s3transfer"} & installed
    assert not (built / "TwelvefactorLayer" / "python" / "boto3").exists()
    # And the X-Ray SDK, a cold-start cost, is left to the xray extra
    assert "aws-xray-sdk" not in installed


def _build_layer(artifacts: Path, **environment: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--makefile", str(ROOT / "layers" / "Makefile"), "build-TwelvefactorLayer"],
        cwd=artifacts.parent,
        env={**os.environ, "ARTIFACTS_DIR": str(artifacts), **environment},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def test_layer_built_with_the_xray_extra_carries_the_xray_sdk(tmp_path: Path) -> None:
    # Given the layer's make target, asked for the xray extra as `make build XRAY=1` asks
    artifacts = tmp_path / "artifacts"
    # When it builds
    result = _build_layer(artifacts, LAYER_EXTRAS="xray")
    # Then the layer carries the X-Ray SDK beside the runtime dependencies, still without the AWS SDK
    assert result.returncode == 0, result.stderr
    installed = _distribution_names(artifacts / "python")
    assert {"aws-xray-sdk", "aws-lambda-powertools", "pydantic"} <= installed
    assert not {"boto3", "botocore", "s3transfer"} & installed


def test_layer_build_refuses_an_extra_pyproject_does_not_define(tmp_path: Path) -> None:
    # Given a misspelt extra
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    # When the layer's make target runs with it
    result = _build_layer(artifacts, LAYER_EXTRAS="xary")
    # Then it stops naming the extra, before installing anything
    assert result.returncode != 0
    assert "LAYER_EXTRAS names 'xary', which pyproject.toml does not define" in result.stderr
    assert not list(artifacts.iterdir())


def test_built_layer_carries_our_packages_and_prompts_at_the_lambda_paths(built: Path) -> None:
    layer = built / "TwelvefactorLayer"
    # Given the prompts and packages in the repository
    prompts = sorted(path.name for path in (ROOT / "prompts").glob("*.jinja"))
    # When the layer is unpacked at /opt, python/ is on sys.path and prompts/ is /opt/prompts
    # Then the packages are importable from python/, the prompts sit at prompts/, dev-only code is left out
    assert prompts, "the repository should hold prompt templates"
    assert sorted(path.name for path in (layer / "prompts").glob("*.jinja")) == prompts
    assert (layer / "python" / "twelvefactor" / "core" / "reducer.py").is_file()
    assert (layer / "python" / "agents" / "__init__.py").is_file()
    assert not (layer / "python" / "twelvefactor" / "local").exists()
    assert not list(layer.rglob("__pycache__"))


def test_built_functions_hold_their_handlers(built: Path) -> None:
    # Given the built template SAM wrote next to the artifacts
    built_template = load_template(built / "template.yaml")
    for logical_id in FUNCTIONS:
        # When each function's built code location is resolved
        code = built / built_template["Resources"][logical_id]["Properties"]["CodeUri"]
        # Then it holds the handler module the template names
        assert (code / "app.py").is_file(), logical_id


def test_layer_build_refuses_an_unknown_architecture(tmp_path: Path) -> None:
    # Given an architecture Lambda does not have
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    # When the layer's make target runs with it
    result = subprocess.run(
        ["make", "--makefile", str(ROOT / "layers" / "Makefile"), "build-TwelvefactorLayer"],
        cwd=tmp_path,
        env={**os.environ, "ARTIFACTS_DIR": str(artifacts), "ARCHITECTURE": "sparc"},
        capture_output=True,
        text=True,
        check=False,
    )
    # Then it stops with the reason before installing anything
    assert result.returncode != 0
    assert "ARCHITECTURE must be x86_64 or arm64" in result.stderr
    assert not list(artifacts.iterdir())


# --- tables and bucket built from the template ----------------------------------------------------


def test_threads_table_has_the_templates_keys_index_and_ttl(threads_table: str, template: Template) -> None:
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    # Given the table the fixture built from template.yaml
    # When moto describes it
    described = dynamodb.describe_table(TableName=threads_table)["Table"]
    ttl = dynamodb.describe_time_to_live(TableName=threads_table)["TimeToLiveDescription"]
    # Then it has the resource's key schema, the gsi1 index, on-demand billing and the TTL attribute
    resource = template["Resources"]["ThreadsTable"]["Properties"]
    assert described["KeySchema"] == resource["KeySchema"]
    assert described["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert [index["IndexName"] for index in described["GlobalSecondaryIndexes"]] == ["gsi1"]
    assert described["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}


def test_threads_table_gsi_finds_items_by_their_gsi1_keys(threads_table: str) -> None:
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    # Given a thread's META item listed under THREADS and an event item that is not
    dynamodb.put_item(
        TableName=threads_table,
        Item={
            "pk": {"S": "THREAD#t1"},
            "sk": {"S": "META"},
            "gsi1pk": {"S": "THREADS"},
            "gsi1sk": {"S": "2025-01-01T00:00:00Z#t1"},
        },
    )
    dynamodb.put_item(
        TableName=threads_table, Item={"pk": {"S": "THREAD#t1"}, "sk": {"S": "EVENT#0000000000"}}
    )
    # When gsi1 is queried for THREADS
    found = dynamodb.query(
        TableName=threads_table,
        IndexName="gsi1",
        KeyConditionExpression="gsi1pk = :threads",
        ExpressionAttributeValues={":threads": {"S": "THREADS"}},
    )["Items"]
    # Then only the META item comes back
    assert [(item["pk"]["S"], item["sk"]["S"]) for item in found] == [("THREAD#t1", "META")]


def test_idempotency_table_fits_powertools_defaults(idempotency_table: str) -> None:
    # Given Powertools idempotency on the template's table with its default attribute names
    persistence = DynamoDBPersistenceLayer(
        table_name=idempotency_table, boto3_client=boto3.client("dynamodb", region_name=REGION)
    )
    config = IdempotencyConfig()
    config.register_lambda_context(LambdaContext(function_name="EventBridgeFunction"))
    calls: list[str] = []

    @idempotent_function(data_keyword_argument="event", persistence_store=persistence, config=config)
    def handle(event: dict[str, str]) -> dict[str, str]:
        calls.append(event["id"])
        return {"handled": event["id"]}

    # When the same event is handled twice
    first = handle(event={"id": "evt-1"})
    second = handle(event={"id": "evt-1"})
    # Then the work ran once and the stored result answered the replay
    assert first == second == {"handled": "evt-1"}
    assert calls == ["evt-1"]


def test_payload_bucket_stores_objects(payload_bucket: str) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    # Given the bucket from the fixture
    # When an inbound mail object is written and read back
    s3.put_object(Bucket=payload_bucket, Key="inbound/abc", Body=b"From: a@example.com\r\n\r\nhi")
    # Then the bytes are there
    assert s3.get_object(Bucket=payload_bucket, Key="inbound/abc")["Body"].read().endswith(b"hi")


# --- local/template.py helpers ----------------------------------------------------------------------


def test_table_definition_is_the_templates_resource(template: Template) -> None:
    # Given the IdempotencyTable resource
    resource = template["Resources"]["IdempotencyTable"]["Properties"]
    # When it becomes create_table arguments
    kwargs = table_definition(template, "IdempotencyTable", table_name="t")
    # Then keys, attributes and billing are the resource's, spelled the way the API wants
    assert kwargs == {
        "TableName": "t",
        "KeySchema": resource["KeySchema"],
        "AttributeDefinitions": resource["AttributeDefinitions"],
        "BillingMode": "PAY_PER_REQUEST",
        "SSESpecification": {"Enabled": True},
    }


def test_table_definition_refuses_a_resource_that_is_not_a_table(template: Template) -> None:
    with pytest.raises(ValueError, match="not an AWS::DynamoDB::Table"):
        table_definition(template, "PayloadBucket")


def test_state_machine_definition_resolves_every_placeholder(template: Template) -> None:
    # Given the deployment-only values (function ARNs)
    substitutions = {"ReducerFunctionArn": REDUCER_ARN, "NotifyFunctionArn": NOTIFY_ARN}
    # When the definition is rendered with the parameters' defaults
    text = state_machine_definition(template, substitutions)
    # Then nothing is left to substitute, it is JSON, and the defaults are the wait settings
    assert "${" not in text
    definition = json.loads(text)
    wait = definition["States"]["Load wait settings"]["Parameters"]["wait"]
    defaults = {
        name: template["Parameters"][name]["Default"]
        for name in ("WaitTimeoutSeconds", "HeartbeatMarginSeconds")
    }
    timeout = f"States.StringToJson('{defaults['WaitTimeoutSeconds']}')"
    assert wait == {
        "timeout_seconds.$": timeout,
        "heartbeat_seconds.$": f"States.MathAdd({timeout}, -{defaults['HeartbeatMarginSeconds']})",
    }
    assert definition["States"]["Reduce"]["Parameters"]["FunctionName"] == REDUCER_ARN
    assert definition["States"]["Wait for human"]["Parameters"]["FunctionName"] == NOTIFY_ARN


def test_state_machine_definition_names_a_missing_substitution(template: Template) -> None:
    # Given no ARN for the reducer, which only a deployment knows
    # When rendering, Then the error names what is missing instead of leaving ${...} in the ASL
    with pytest.raises(UnresolvedReference, match="ReducerFunction"):
        state_machine_definition(template, {"NotifyFunctionArn": NOTIFY_ARN})


def test_api_routes_list_every_route_with_its_function(template: Template) -> None:
    # When the routes are read from the template
    routes = api_routes(template)
    # Then each API operation of the issue is routed to the function that serves it
    assert set(routes) == {
        ApiRoute("POST", "/threads", "ApiFunction"),
        ApiRoute("GET", "/threads", "ApiFunction"),
        ApiRoute("GET", "/threads/{id}", "ApiFunction"),
        ApiRoute("GET", "/threads/{id}/events", "ApiFunction"),
        ApiRoute("POST", "/threads/{id}/responses", "ApiFunction"),
        ApiRoute("DELETE", "/threads/{id}", "ApiFunction"),
        ApiRoute("POST", "/callbacks/{callback_id}", "ApiFunction"),
        ApiRoute("POST", "/slack/events", "SlackFunction"),
        ApiRoute("POST", "/slack/interactions", "SlackFunction"),
    }


def test_function_environment_merges_globals_and_resolves_references(template: Template) -> None:
    # Given names for the resources and a non-default parameter
    values = {
        "ThreadsTable": "threads",
        "PayloadBucket": "payloads",
        "IdempotencyTable": "idem",
        "AgentStateMachine": "arn:aws:states:us-east-1:123456789012:stateMachine:agent",
        "SlackSigningSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:slack-AbCdEf",
    }
    # When the Slack function's environment is resolved
    environment = function_environment(template, "SlackFunction", values)
    # Then globals and the function's own variables are merged with references resolved,
    # and a conditional variable whose parameter is empty is left out as CloudFormation would
    assert environment["THREADS_TABLE"] == "threads"
    assert environment["STATE_MACHINE_ARN"] == values["AgentStateMachine"]
    assert environment["SLACK_SIGNING_SECRET_ARN"] == values["SlackSigningSecretArn"]
    assert environment["LOG_LEVEL"] == template["Parameters"]["LogLevel"]["Default"]
    assert environment["POWERTOOLS_SERVICE_NAME"] == "twelvefactor"
    assert "SLACK_BOT_TOKEN_ARN" not in environment


def test_notify_is_given_the_arn_of_the_state_machine_the_template_names(template: Template) -> None:
    # Given a stack's name, and the names CloudFormation's pseudo parameters resolve to
    pseudo = {
        "AWS::StackName": "agents-dev",
        "AWS::Region": "eu-west-1",
        "AWS::AccountId": "123456789012",
        "AWS::Partition": "aws",
    }
    # When Notify's environment and the state machine's name are resolved for that stack
    resources = {"ThreadsTable": "threads", "PayloadBucket": "payloads"}
    environment = function_environment(template, "NotifyFunction", {**pseudo, **resources})
    machine = resource_name(template, "AgentStateMachine", pseudo)
    # Then Notify can start an execution of that very machine (when a task token it hands back is
    # refused), which its policy allows, without a !Ref that would be a dependency cycle
    arn = f"arn:aws:states:eu-west-1:123456789012:stateMachine:{machine}"
    assert machine == "agents-dev-agent"
    assert environment["STATE_MACHINE_ARN"] == arn
    statements = resource(template, "NotifyFunction")["Properties"]["Policies"][-1]["Statement"]
    [resume] = [s for s in statements if isinstance(s, dict) and s.get("Sid") == "ResumeWhenAlreadyAnswered"]
    assert "states:StartExecution" in resume["Action"]


def test_every_function_variable_is_a_setting_the_code_reads(template: Template) -> None:
    # Given the environment variable names twelvefactor.settings declares, and those each of the
    # application's agents reads under its own prefix
    from twelvefactor import application, settings

    declared = {
        field.alias
        for cls in vars(settings).values()
        if isinstance(cls, type) and issubclass(cls, settings.EnvironmentSettings)
        for field in cls.model_fields.values()
        if field.alias
    }
    application.load().build_registry()  # imports every agent's module, and so its settings class
    declared |= {
        f"{cls.env_prefix}{name}".upper()
        for cls in settings.PrefixedSettings.__subclasses__()
        if cls.__module__.startswith("agents.")
        for name in cls.model_fields
    }
    # When every function's environment is resolved
    values = {
        name: f"value-of-{name}"
        for name in ("ThreadsTable", "PayloadBucket", "IdempotencyTable", "AgentStateMachine")
    } | {pseudo: "x" for pseudo in ("AWS::Partition", "AWS::Region", "AWS::AccountId", "AWS::StackName")}
    names = {name for logical_id in FUNCTIONS for name in function_environment(template, logical_id, values)}
    # Then each variable (besides Powertools' own) is one the code reads: no typo silently ignored
    powertools_own = {
        "POWERTOOLS_SERVICE_NAME",
        "POWERTOOLS_METRICS_NAMESPACE",
        "POWERTOOLS_TRACER_CAPTURE_RESPONSE",
    }
    assert names - {*powertools_own, "LOG_LEVEL"} <= declared


def test_function_environment_names_an_unresolvable_reference(template: Template) -> None:
    # Given no name for the table, which only a deployment knows
    # When resolving, Then the error says what to pass
    with pytest.raises(UnresolvedReference, match="ThreadsTable"):
        function_environment(template, "ReducerFunction", {})


# --- the state machine's contract, run by moto's interpreter ------------------------------------------


Handler = Callable[[dict[str, Any], Any], Any]


def _start(template: Template, parameters: dict[str, str] | None = None) -> tuple[Any, str]:
    sfn = boto3.client("stepfunctions", region_name=REGION)
    definition = state_machine_definition(
        template, {"ReducerFunctionArn": REDUCER_ARN, "NotifyFunctionArn": NOTIFY_ARN}, parameters
    )
    machine = sfn.create_state_machine(name="agent", definition=definition, roleArn=ROLE_ARN)
    execution = sfn.start_execution(
        stateMachineArn=machine["stateMachineArn"], name="thread-t1", input=json.dumps({"thread_id": "t1"})
    )
    return sfn, execution["executionArn"]


def _finished(sfn: Any, execution_arn: str) -> dict[str, Any]:
    return dict(
        poll_until(
            lambda: sfn.describe_execution(executionArn=execution_arn),
            lambda described: described["status"] != "RUNNING",
        )
    )


@pytest.fixture
def bridge(aws: None) -> Iterator[LambdaBridge]:
    with LambdaBridge().installed() as installed:
        yield installed


def _reducer_answering(*statuses: str) -> Handler:
    remaining = list(statuses)

    def reduce(event: dict[str, Any], _context: Any) -> dict[str, str]:
        return {"thread_id": event["thread_id"], "status": remaining.pop(0)}

    return reduce


def test_a_thread_that_finishes_runs_the_reducer_once_with_its_id_and_execution_name(
    bridge: LambdaBridge, template: Template
) -> None:
    # Given a reducer that finishes the thread in one go
    bridge.register("stack-ReducerFunction", _reducer_answering("done"))
    # When an execution starts for the thread
    sfn, execution_arn = _start(template)
    described = _finished(sfn, execution_arn)
    # Then it succeeds having sent the reducer the thread id and the execution's own name (by
    # which a run whose turn ended knows to stop), and nothing else
    assert described["status"] == "SUCCEEDED"
    assert bridge.invocations == [
        ("stack-ReducerFunction", {"thread_id": "t1", "execution": described["name"]})
    ]


def test_a_waiting_thread_pauses_on_notify_and_resumes_on_task_success(
    bridge: LambdaBridge, template: Template
) -> None:
    # Given a reducer that waits for a person once, then finishes, and a notifier that keeps the token
    tokens: list[str] = []
    bridge.register("stack-ReducerFunction", _reducer_answering("waiting", "done"))
    bridge.register("stack-NotifyFunction", lambda event, _context: tokens.append(event["task_token"]))
    sfn, execution_arn = _start(template)
    # When the notifier has been called, the execution is paused on its token
    poll_until(lambda: list(tokens), bool)
    assert sfn.describe_execution(executionArn=execution_arn)["status"] == "RUNNING"
    # And when the person's answer resumes it
    sfn.send_task_success(taskToken=tokens[0], output=json.dumps({"thread_id": "t1"}))
    described = _finished(sfn, execution_arn)
    # Then the reducer ran again and the execution finished; notify got the id and the token only
    assert described["status"] == "SUCCEEDED"
    assert [name for name, _ in bridge.invocations] == [
        "stack-ReducerFunction",
        "stack-NotifyFunction",
        "stack-ReducerFunction",
    ]
    assert bridge.invocations[1][1] == {"thread_id": "t1", "task_token": tokens[0]}


def test_a_wait_nobody_answers_is_recorded_in_the_thread_and_escalated(
    bridge: LambdaBridge, template: Template
) -> None:
    # Given a wait of 2 seconds with a 1-second heartbeat nobody sends, and a reducer that records errors
    recorded: list[dict[str, Any]] = []

    def reduce(event: dict[str, Any], _context: Any) -> dict[str, str]:
        if "error" in event:
            recorded.append(event)
        # An escalated thread waits for a person, like any other wait.
        return {"thread_id": event["thread_id"], "status": "waiting"}

    bridge.register("stack-ReducerFunction", reduce)
    bridge.register("stack-NotifyFunction", lambda _event, _context: None)
    # When the execution runs and nobody answers
    sfn, execution_arn = _start(template, {"WaitTimeoutSeconds": "2", "HeartbeatMarginSeconds": "1"})
    described = _finished(sfn, execution_arn)
    # Then the reducer was told which wait failed and why, and the execution ends as an escalation
    assert len(recorded) == 1
    assert recorded[0]["thread_id"] == "t1"
    assert recorded[0]["error"]["Error"] in {"States.HeartbeatTimeout", "States.Timeout"}
    assert described["status"] == "FAILED"
    assert described["error"] == "Escalated"


def test_a_failing_reducer_has_its_error_recorded_and_the_thread_can_still_finish(
    bridge: LambdaBridge, template: Template
) -> None:
    # Given a reducer that crashes on the step, then records the error and finishes the thread
    recorded: list[dict[str, Any]] = []

    def reduce(event: dict[str, Any], _context: Any) -> dict[str, str]:
        if "error" not in event:
            raise RuntimeError("model endpoint unreachable")
        recorded.append(event["error"])
        return {"thread_id": event["thread_id"], "status": "done"}

    bridge.register("stack-ReducerFunction", reduce)
    # When the execution runs
    sfn, execution_arn = _start(template)
    described = _finished(sfn, execution_arn)
    # Then the crash reached the reducer as an error, and the recorded outcome decided the end
    assert described["status"] == "SUCCEEDED"
    assert len(recorded) == 1
    assert "RuntimeError" in recorded[0]["Cause"] and "model endpoint unreachable" in recorded[0]["Cause"]


def test_an_unknown_status_fails_the_execution_loudly(bridge: LambdaBridge, template: Template) -> None:
    # Given a reducer that answers with a status the state machine does not know
    bridge.register("stack-ReducerFunction", _reducer_answering("pondering"))
    # When the execution runs
    sfn, execution_arn = _start(template)
    described = _finished(sfn, execution_arn)
    # Then it fails with a named error instead of looping or succeeding
    assert described["status"] == "FAILED"
    assert described["error"] == "UnknownStatus"
    assert len(bridge.invocations) == 1


def test_the_default_template_path_is_the_repositorys(template: Template) -> None:
    assert template.path == ROOT / "template.yaml"
    assert load_template(ROOT / "template.yaml") == template


def test_tracer_never_copies_a_response_into_a_trace(template: Template) -> None:
    # Given the variables every function gets
    globals_env = template["Globals"]["Function"]["Environment"]["Variables"]
    # Then a layer built with the X-Ray SDK still keeps responses (event bodies, presigned S3 links
    # usable without credentials) out of the traces
    assert str(globals_env["POWERTOOLS_TRACER_CAPTURE_RESPONSE"]).lower() == "false"
