"""Read template.yaml so local stacks and tests build what AWS would build, from the same source.

The template is the single description of tables, routes, environment and the state machine;
reading it here (instead of repeating key schemas and env var names in tests) means a change to
the template is a change to what the tests run against. Dev-only: the layer never needs it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import yaml

# Short tags whose long form is not simply "Fn::<name>".
_LONG_TAG_NAMES = {"Ref": "Ref", "Condition": "Condition"}
_PLACEHOLDER = re.compile(r"\$\{([^}!]+)\}")
_NO_VALUE = object()


class Template(dict[str, Any]):
    """A parsed template that remembers where it came from (DefinitionUri paths are relative)."""

    def __init__(self, body: Mapping[str, Any], path: Path) -> None:
        super().__init__(body)
        self.path = path


class ApiRoute(NamedTuple):
    method: str
    path: str
    function: str


class UnresolvedReference(KeyError):
    """A value needs something the template cannot know locally (a resource's name or ARN)."""


class _CloudFormationLoader(yaml.SafeLoader):
    """SafeLoader that reads `!Ref X` as `{"Ref": "X"}` and `!Sub s` as `{"Fn::Sub": s}`, etc."""


def _construct_short_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {_LONG_TAG_NAMES.get(suffix, f"Fn::{suffix}"): value}


_CloudFormationLoader.add_multi_constructor("!", _construct_short_tag)


def default_template_path() -> Path:
    # layers/twelvefactor/local/template.py -> the repository root holds template.yaml.
    return Path(__file__).resolve().parents[3] / "template.yaml"


def load_template(path: Path | str | None = None) -> Template:
    template_path = Path(path) if path is not None else default_template_path()
    body = yaml.load(template_path.read_text(encoding="utf-8"), Loader=_CloudFormationLoader)
    if not isinstance(body, dict) or "Resources" not in body:
        raise ValueError(f"{template_path} is not a CloudFormation template")
    return Template(body, template_path)


def resource(template: Mapping[str, Any], logical_id: str) -> dict[str, Any]:
    try:
        found: dict[str, Any] = template["Resources"][logical_id]
    except KeyError:
        raise KeyError(f"template has no resource {logical_id!r}") from None
    return found


def parameter_values(
    template: Mapping[str, Any], overrides: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Each parameter's default, replaced by the given overrides (like --parameter-overrides)."""
    values = {
        name: _scalar_text(spec["Default"])
        for name, spec in template.get("Parameters", {}).items()
        if "Default" in spec
    }
    values.update(overrides or {})
    return values


def table_definition(
    template: Mapping[str, Any], logical_id: str, table_name: str | None = None
) -> dict[str, Any]:
    """`create_table` keyword arguments for an AWS::DynamoDB::Table resource of the template."""
    table = resource(template, logical_id)
    if table["Type"] != "AWS::DynamoDB::Table":
        raise ValueError(f"{logical_id} is a {table['Type']}, not an AWS::DynamoDB::Table")
    props = table["Properties"]
    kwargs: dict[str, Any] = {
        "KeySchema": props["KeySchema"],
        "AttributeDefinitions": props["AttributeDefinitions"],
        "BillingMode": props.get("BillingMode", "PROVISIONED"),
    }
    if "ProvisionedThroughput" in props:
        kwargs["ProvisionedThroughput"] = props["ProvisionedThroughput"]
    indexes = props.get("GlobalSecondaryIndexes")
    if indexes:
        kwargs["GlobalSecondaryIndexes"] = [
            {
                key: index[key]
                for key in ("IndexName", "KeySchema", "Projection", "ProvisionedThroughput")
                if key in index
            }
            for index in indexes
        ]
    sse = props.get("SSESpecification")
    if sse:
        # CloudFormation spells it SSEEnabled; the API spells it Enabled.
        kwargs["SSESpecification"] = {"Enabled": bool(sse.get("SSEEnabled", False))}
    if table_name is not None:
        kwargs["TableName"] = table_name
    return kwargs


def ttl_attribute(template: Mapping[str, Any], logical_id: str) -> str | None:
    spec = resource(template, logical_id)["Properties"].get("TimeToLiveSpecification")
    if not spec or not spec.get("Enabled", False):
        return None
    return str(spec["AttributeName"])


def point_in_time_recovery(template: Mapping[str, Any], logical_id: str) -> bool:
    spec = resource(template, logical_id)["Properties"].get("PointInTimeRecoverySpecification", {})
    return bool(spec.get("PointInTimeRecoveryEnabled", False))


def state_machine_definition(
    template: Template,
    substitutions: Mapping[str, str],
    parameters: Mapping[str, str] | None = None,
    logical_id: str = "AgentStateMachine",
) -> str:
    """The ASL text as Step Functions would receive it after DefinitionSubstitutions.

    `substitutions` supplies what only a deployment knows (function ARNs); the rest (timeouts) come
    from the template's own expressions with parameter defaults or `parameters` overrides.
    """
    props = resource(template, logical_id)["Properties"]
    definition = (template.path.parent / props["DefinitionUri"]).read_text(encoding="utf-8")
    lookup = parameter_values(template, parameters)
    values: dict[str, str] = {}
    for key, expression in props.get("DefinitionSubstitutions", {}).items():
        if key in substitutions:
            values[key] = substitutions[key]
            continue
        resolved = _resolve(template, expression, lookup)
        values[key] = _scalar_text(resolved)
    values.update(substitutions)

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise UnresolvedReference(f"{props['DefinitionUri']} uses ${{{name}}} with no substitution")
        return values[name]

    return _PLACEHOLDER.sub(replace, definition)


def resource_name(
    template: Mapping[str, Any], logical_id: str, parameters: Mapping[str, str] | None = None
) -> str | None:
    """The name a resource's `Name` property gives it, resolved; None when CloudFormation picks one.

    The state machine has a fixed name so that NotifyFunction can name it without a cycle; a local
    stack must create it under that same name for Notify's STATE_MACHINE_ARN to point at it.
    """
    spec = template.get("Resources", {}).get(logical_id, {})
    name = spec.get("Properties", {}).get("Name")
    if name is None:
        return None
    return _scalar_text(_resolve(template, name, parameter_values(template, parameters)))


def api_routes(template: Mapping[str, Any]) -> list[ApiRoute]:
    """Every (method, path, function) an API Gateway event of the template routes."""
    routes = []
    for logical_id, spec in template["Resources"].items():
        if spec.get("Type") != "AWS::Serverless::Function":
            continue
        for event in spec.get("Properties", {}).get("Events", {}).values():
            if event.get("Type") == "Api":
                props = event["Properties"]
                routes.append(ApiRoute(str(props["Method"]).upper(), str(props["Path"]), logical_id))
    return sorted(routes)


def function_environment(
    template: Mapping[str, Any], logical_id: str, parameters: Mapping[str, str] | None = None
) -> dict[str, str]:
    """A function's environment as Lambda would see it: Globals merged, references resolved.

    `parameters` overrides parameter defaults and gives values for resources, keyed by logical id
    (`ThreadsTable`) for !Ref and by `Id.Attribute` (`AgentStateMachine.Arn`) for !GetAtt.
    A variable that resolves to AWS::NoValue is left out, as CloudFormation would.
    """
    function = resource(template, logical_id)
    globals_env = template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    own_env = function.get("Properties", {}).get("Environment", {}).get("Variables", {})
    lookup = parameter_values(template, parameters)
    environment: dict[str, str] = {}
    for name, expression in {**globals_env, **own_env}.items():
        value = _resolve(template, expression, lookup)
        if value is not _NO_VALUE:
            environment[name] = _scalar_text(value)
    return environment


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise TypeError(f"expected a scalar, got {value!r}")


def _lookup(lookup: Mapping[str, str], name: str) -> str:
    try:
        return lookup[name]
    except KeyError:
        raise UnresolvedReference(f"no value for {name!r}: pass it in parameters") from None


def _resolve(template: Mapping[str, Any], expression: Any, lookup: Mapping[str, str]) -> Any:
    """Evaluate the intrinsic functions a local run meets; anything else is an UnresolvedReference."""
    if not isinstance(expression, dict):
        if isinstance(expression, list):
            return [_resolve(template, item, lookup) for item in expression]
        return expression
    if len(expression) != 1 or not _is_intrinsic(next(iter(expression))):
        return {key: _resolve(template, value, lookup) for key, value in expression.items()}
    (function, argument), *_ = expression.items()
    if function == "Ref":
        return _NO_VALUE if argument == "AWS::NoValue" else _lookup(lookup, argument)
    if function == "Fn::GetAtt":
        attribute = argument if isinstance(argument, str) else ".".join(argument)
        return _lookup(lookup, attribute)
    if function == "Fn::Sub":
        text, variables = (argument, {}) if isinstance(argument, str) else argument
        local = {k: _scalar_text(_resolve(template, v, lookup)) for k, v in variables.items()}
        return _PLACEHOLDER.sub(
            lambda match: local.get(match.group(1)) or _lookup(lookup, match.group(1)), text
        )
    if function == "Fn::If":
        condition, when_true, when_false = argument
        chosen = when_true if _condition(template, condition, lookup) else when_false
        return _resolve(template, chosen, lookup)
    if function == "Fn::Join":
        separator, items = argument
        return separator.join(_scalar_text(item) for item in _resolve(template, items, lookup))
    if function == "Fn::Split":
        separator, text = argument
        return str(_resolve(template, text, lookup)).split(separator)
    if function == "Fn::Select":
        index, items = argument
        return _resolve(template, items, lookup)[int(_resolve(template, index, lookup))]
    if function in ("Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or", "Condition"):
        return _evaluate_condition(template, expression, lookup)
    raise UnresolvedReference(f"cannot evaluate {function} locally")


def _is_intrinsic(key: str) -> bool:
    # A one-key mapping such as {"Statement": [...]} is data, not a function call.
    return key in ("Ref", "Condition") or key.startswith("Fn::")


def _condition(template: Mapping[str, Any], name: str, lookup: Mapping[str, str]) -> bool:
    try:
        definition = template["Conditions"][name]
    except KeyError:
        raise UnresolvedReference(f"template has no condition {name!r}") from None
    return _evaluate_condition(template, definition, lookup)


def _evaluate_condition(template: Mapping[str, Any], expression: Any, lookup: Mapping[str, str]) -> bool:
    (function, argument), *_ = expression.items()
    if function == "Condition":
        return _condition(template, argument, lookup)
    if function == "Fn::Equals":
        left, right = (_resolve(template, side, lookup) for side in argument)
        return bool(left == right)
    if function == "Fn::Not":
        return not _evaluate_condition(template, argument[0], lookup)
    if function == "Fn::And":
        return all(_evaluate_condition(template, item, lookup) for item in argument)
    if function == "Fn::Or":
        return any(_evaluate_condition(template, item, lookup) for item in argument)
    raise UnresolvedReference(f"{function} is not a condition function")


# --- the CloudFormation `sam deploy` would create ---------------------------------------------------

# Local code locations, replaced by S3 URIs as `sam package` would: the transform refuses local paths.
_PACKAGED_PROPERTIES = ("CodeUri", "ContentUri", "DefinitionUri")


def transformed_template(
    template: Template,
    parameters: Mapping[str, str] | None = None,
    *,
    uploaded: Mapping[str, str] | None = None,
    region: str = "us-east-1",
) -> dict[str, Any]:
    """template.yaml after the SAM transform, the CloudFormation that AWS deploys.

    It is what carries the generated roles, versions, aliases, permissions and the API's OpenAPI
    body, so tests read grants and wiring here rather than in the SAM shorthand. ``uploaded`` gives
    a logical id's code an S3 URI of its own (two layer builds are two different URIs); others get
    ``s3://<bucket>/<logical id>``. ``parameters`` are those CloudFormation would pass the transform.
    """
    import contextlib  # noqa: PLC0415 - dev-only, and the transform is imported only here
    import copy  # noqa: PLC0415
    import io  # noqa: PLC0415
    import logging  # noqa: PLC0415
    import os  # noqa: PLC0415

    from samtranslator.translator.transform import transform  # noqa: PLC0415

    body = copy.deepcopy(dict(template))
    for logical_id, spec in body["Resources"].items():
        properties = spec.get("Properties", {})
        for name in _PACKAGED_PROPERTIES:
            if isinstance(properties.get(name), str) and not properties[name].startswith("s3://"):
                properties[name] = (uploaded or {}).get(logical_id, f"s3://packaged/{logical_id}")
    previous_region = os.environ.get("AWS_DEFAULT_REGION")
    os.environ["AWS_DEFAULT_REGION"] = region  # the transform builds partition-aware ARNs from it
    try:
        # The transform prints feature-toggle notices on stdout, and logs a warning for each toggle
        # it has no config for (no handler: Python prints it on stderr); both are noise here.
        logging.getLogger("samtranslator.feature_toggle").setLevel(logging.ERROR)
        with contextlib.redirect_stdout(io.StringIO()):
            transformed: dict[str, Any] = transform(body, dict(parameters or {}), _NoManagedPolicies())
    finally:
        if previous_region is None:
            os.environ.pop("AWS_DEFAULT_REGION", None)
        else:
            os.environ["AWS_DEFAULT_REGION"] = previous_region
    return transformed


class _NoManagedPolicies:
    """The transform's managed-policy loader: the template names no managed policy by short name
    (SAM adds the ones it needs, such as AWSLambdaBasicExecutionRole, by ARN)."""

    def load(self) -> dict[str, str]:
        return {}


def role_policies(
    transformed: Mapping[str, Any], role_id: str, values: Mapping[str, str]
) -> dict[str, dict[str, Any]]:
    """A generated role's inline policies (name -> document), references resolved with ``values``.

    ``values`` holds what !Ref, !GetAtt and pseudo parameters resolve to, as for
    `function_environment`; statements and list items that resolve to AWS::NoValue are left out.
    """
    role = transformed["Resources"][role_id]
    return {
        policy["PolicyName"]: _drop_no_value(_resolve(transformed, policy["PolicyDocument"], values))
        for policy in role["Properties"].get("Policies", [])
    }


def function_role_id(transformed: Mapping[str, Any], function_id: str) -> str:
    """The logical id of the role the transform generated for a function."""
    role = transformed["Resources"][function_id]["Properties"]["Role"]
    if not (isinstance(role, dict) and "Fn::GetAtt" in role):
        raise ValueError(f"{function_id} does not use a role generated by the transform: {role!r}")
    return str(role["Fn::GetAtt"][0])


def _drop_no_value(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _drop_no_value(item) for key, item in value.items() if item is not _NO_VALUE}
    if isinstance(value, list):
        return [_drop_no_value(item) for item in value if item is not _NO_VALUE]
    return value
