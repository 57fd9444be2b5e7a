"""``twelvefactor invoke LOGICAL_ID EVENT.json``: the Docker-free ``sam local invoke``.

Runs one function of template.yaml in this process: its handler (``CodeUri`` + ``Handler``), its
environment as Lambda would see it (Globals merged, intrinsics resolved) with the current
environment on top, and every AWS call going wherever ``AWS_ENDPOINT_URL`` points (a moto server,
the local stack). Prints the handler's JSON result; a handler error is printed the way Lambda
reports it and exits 1. An unusable argument exits 2.

Template references to resources resolve to their logical ids (lowercased for buckets; a state
machine's to its ARN); set the variable itself (``THREADS_TABLE=...``) or pass
``--parameter ThreadsTable=name`` to point elsewhere.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import sys
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twelvefactor.local.template import (
    Template,
    UnresolvedReference,
    function_environment,
    load_template,
    resource,
    resource_name,
)

EXIT_HANDLER_ERROR = 1
EXIT_UNUSABLE = 2
LOCAL_ACCOUNT_ID = "123456789012"
Handler = Callable[[dict[str, Any], Any], Any]


class UnusableInput(Exception):
    """An argument, template or event file the command cannot use."""


@dataclass
class LocalContext:
    """The parts of Lambda's context object that Powertools and handlers read."""

    function_name: str
    memory_limit_in_mb: int = 512
    timeout_seconds: int = 30
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def invoked_function_arn(self) -> str:
        region = os.environ.get("AWS_REGION", "us-east-1")
        return f"arn:aws:lambda:{region}:{LOCAL_ACCOUNT_ID}:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return self.timeout_seconds * 1000


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "logical_id", metavar="LOGICAL_ID", help="a function of the template, e.g. ApiFunction"
    )
    parser.add_argument(
        "event", type=Path, metavar="EVENT.json", help="the event, e.g. events/api-launch.json"
    )
    parser.add_argument("--template", type=Path, help="template.yaml to read (default: the repository's)")
    parser.add_argument(
        "--parameter",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a template parameter or resource value, like sam's --parameter-overrides (repeatable)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    output = sys.stdout
    try:
        template = load_template(args.template)
        parameters = _parse_parameters(args.parameter)
        event = _read_event(args.event)
        environment = lambda_environment(template, args.logical_id, parameters, os.environ)
    except UnusableInput as error:
        sys.stderr.write(f"twelvefactor invoke: {error}\n")
        return EXIT_UNUSABLE
    os.environ.update(environment)
    # Imported only now: Powertools loggers take their service name from the environment when made.
    from twelvefactor import runtime  # noqa: PLC0415

    runtime.reset()  # everything the handler builds reads the environment just set
    # Like `sam local invoke`: the function's logs and metrics on stderr, its result alone on stdout.
    with contextlib.redirect_stdout(sys.stderr):
        try:
            handler = load_handler(template, args.logical_id)
        except UnusableInput as error:
            sys.stderr.write(f"twelvefactor invoke: {error}\n")
            return EXIT_UNUSABLE
        try:
            result = handler(event, LocalContext(function_name=args.logical_id))
        except Exception as error:
            report = {
                "errorType": type(error).__name__,
                "errorMessage": str(error),
                "stackTrace": traceback.format_tb(error.__traceback__),
            }
            output.write(json.dumps(report, indent=2) + "\n")
            return EXIT_HANDLER_ERROR
    output.write(json.dumps(result, indent=2, default=str) + "\n")
    return 0


def lambda_environment(
    template: Template,
    logical_id: str,
    parameters: Mapping[str, str],
    current: Mapping[str, str],
) -> dict[str, str]:
    """The template's environment for the function, under the variables already set here."""
    _function(template, logical_id)
    lookup = {**_local_resource_values(template, current), **parameters}
    try:
        environment = function_environment(template, logical_id, lookup)
    except UnresolvedReference as error:
        raise UnusableInput(f"{logical_id}'s environment: {error}") from None
    environment.setdefault("AWS_LAMBDA_FUNCTION_NAME", logical_id)
    environment.setdefault("AWS_DEFAULT_REGION", lookup["AWS::Region"])
    environment.setdefault("AWS_REGION", lookup["AWS::Region"])
    return {**environment, **{name: current[name] for name in environment if name in current}}


def load_handler(template: Template, logical_id: str) -> Handler:
    """Import the function's handler from its CodeUri, under a module name of its own.

    Every function's module is called ``app``; loading each under a distinct name lets several
    functions live in one process (tests, the local stack) without shadowing one another.
    """
    properties = _function(template, logical_id).get("Properties", {})
    globals_ = template.get("Globals", {}).get("Function", {})
    handler_spec = str(properties.get("Handler", globals_.get("Handler", "app.handler")))
    module_name, _, attribute = handler_spec.rpartition(".")
    path = template.path.parent / str(properties.get("CodeUri", ".")) / f"{module_name.replace('.', '/')}.py"
    if not path.is_file():
        raise UnusableInput(f"{logical_id}'s handler file {path} does not exist")
    unique_name = f"twelvefactor_functions.{logical_id}.{module_name}"
    module = sys.modules.get(unique_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(unique_name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[unique_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[unique_name]
            raise
    handler = getattr(module, attribute, None)
    if not callable(handler):
        raise UnusableInput(f"{path} has no callable {attribute!r}")
    return handler  # type: ignore[no-any-return]


def _function(template: Template, logical_id: str) -> dict[str, Any]:
    try:
        found = resource(template, logical_id)
    except KeyError as error:
        raise UnusableInput(str(error.args[0])) from None
    if found.get("Type") != "AWS::Serverless::Function":
        raise UnusableInput(f"{logical_id} is a {found.get('Type')}, not an AWS::Serverless::Function")
    return found


def _local_resource_values(template: Template, current: Mapping[str, str]) -> dict[str, str]:
    """What !Ref and !GetAtt of the template's resources mean locally: names are logical ids."""
    region = current.get("AWS_REGION") or current.get("AWS_DEFAULT_REGION") or "us-east-1"
    values = {
        "AWS::Region": region,
        "AWS::AccountId": LOCAL_ACCOUNT_ID,
        "AWS::Partition": "aws",
        "AWS::StackName": "twelvefactor-local",
        "AWS::URLSuffix": "amazonaws.com",
    }
    arn_kinds = {
        "AWS::Serverless::StateMachine": "states:{region}:{account}:stateMachine:{name}",
        "AWS::StepFunctions::StateMachine": "states:{region}:{account}:stateMachine:{name}",
        "AWS::Serverless::Function": "lambda:{region}:{account}:function:{name}",
        "AWS::DynamoDB::Table": "dynamodb:{region}:{account}:table/{name}",
        "AWS::S3::Bucket": "s3:::{name}",
    }
    for logical_id, spec in template.get("Resources", {}).items():
        kind = spec.get("Type", "")
        # A name the template fixes (the state machine's, which Notify names) is kept as it is.
        name = resource_name(template, logical_id, values) or logical_id
        arn = "arn:aws:" + arn_kinds.get(kind, "{name}").format(
            region=region, account=LOCAL_ACCOUNT_ID, name=name
        )
        # A state machine's Ref is its ARN; a bucket's name must be lowercase; the rest go by name.
        values[logical_id] = arn if "StateMachine" in kind else name
        if kind == "AWS::S3::Bucket":
            values[logical_id] = name.lower()
        values[f"{logical_id}.Arn"] = arn
        values[f"{logical_id}.Name"] = name
    return values


def _parse_parameters(items: list[str]) -> dict[str, str]:
    parameters = {}
    for item in items:
        name, separator, value = item.partition("=")
        if not separator or not name:
            raise UnusableInput(f"--parameter {item!r} is not NAME=VALUE")
        parameters[name] = value
    return parameters


def _read_event(path: Path) -> dict[str, Any]:
    try:
        event = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise UnusableInput(f"cannot read {path}: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise UnusableInput(f"{path} is not JSON: {error}") from None
    if not isinstance(event, dict):
        raise UnusableInput(f"{path} must hold a JSON object")
    return event
