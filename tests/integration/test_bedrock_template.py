"""template.yaml's Bedrock grant: ``bedrock:InvokeModel`` for the Reducer, on the configured model only,
and only when the provider is Bedrock (the grants test in test_deployed_template reads the default,
OpenAI-compatible configuration, where no function may call Bedrock at all)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_deployed_template import FUNCTION_DIRS, LAYER_SHA, SECRETS, _Anything
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
MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"
PROFILE = "us.anthropic.claude-3-5-haiku-20241022-v1:0"


@pytest.fixture(scope="module")
def source() -> Template:
    return load_template(ROOT / "template.yaml")


def bedrock_grants(source: Template, overrides: dict[str, str]) -> dict[str, list[Any]]:
    """function -> the resources its role may call bedrock:InvokeModel on."""
    parameters = {"LayerCodeSha256": LAYER_SHA, **SECRETS, **overrides}
    deployed = transformed_template(source, parameters)
    values = _Anything(
        {**parameter_values(source, parameters), "AWS::Region": "us-east-1", "AWS::AccountId": "123456789012"}
    )
    values.setdefault("AWS::Partition", "aws")
    found: dict[str, list[Any]] = {}
    for function in FUNCTION_DIRS:
        for document in role_policies(deployed, function_role_id(deployed, function), values).values():
            for statement in document["Statement"]:
                actions = statement["Action"]
                if "bedrock:InvokeModel" in ([actions] if isinstance(actions, str) else actions):
                    resources = statement["Resource"]
                    found.setdefault(function, []).extend(
                        resources if isinstance(resources, list) else [resources]
                    )
    return found


def test_the_code_calls_converse_which_iam_authorises_as_invoke_model() -> None:
    # Given the Bedrock adapter's source: the one boto3 call it makes is converse on its client
    tree = ast.parse((ROOT / "layers/twelvefactor/adapters/bedrock.py").read_text(encoding="utf-8"))
    calls = {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Attribute)
        and node.func.value.attr == "_client"
    }
    # Then that is what the grant below is for (Converse is authorised as bedrock:InvokeModel)
    assert calls == {"converse"}


def test_an_openai_compatible_provider_grants_no_function_bedrock(source: Template) -> None:
    # When the template is deployed with the default provider, Then no role may invoke a Bedrock model
    assert bedrock_grants(source, {}) == {}


def test_bedrock_grants_the_reducer_invoke_model_on_the_configured_model_only(source: Template) -> None:
    # When the template is deployed with Bedrock and a model id
    grants = bedrock_grants(source, {"LlmProvider": "bedrock", "LlmModel": MODEL})

    # Then only the Reducer may invoke, and only that model (or a profile of that id) in its region
    assert set(grants) == {"ReducerFunction"}
    assert sorted(grants["ReducerFunction"]) == sorted(
        [
            f"arn:aws:bedrock:us-east-1::foundation-model/{MODEL}",
            f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/{MODEL}",
        ]
    )


def test_a_cross_region_profile_also_grants_its_foundation_model(source: Template) -> None:
    # When the model is a cross-region inference profile that routes to a foundation model
    overrides = {"LlmProvider": "bedrock", "LlmModel": PROFILE, "BedrockProfileModel": MODEL}
    grants = bedrock_grants(source, overrides)

    # Then the Reducer may use the profile, and that one foundation model in the profile's regions
    assert f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/{PROFILE}" in grants["ReducerFunction"]
    assert f"arn:aws:bedrock:*::foundation-model/{MODEL}" in grants["ReducerFunction"]
    assert all(MODEL in arn for arn in grants["ReducerFunction"])
