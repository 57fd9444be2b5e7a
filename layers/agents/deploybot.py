"""deploybot, the 12-factor seed's example: "Can you deploy the backend?" -> list_git_tags ->
deploy_backend(tag, environment) -> done_for_now, with production deploys held for a human.

The seed's ``request_more_information(message)`` is not a tool here: every agent already has the
built-in ``request_human_input`` (question, context, urgency, format, choices), which is the same
move with a richer shape, and which the reducer, the channels and the replies already treat as a
pause for a person. A second intent meaning the same thing would only give the model two ways to
say one thing.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from twelvefactor.core.agent import Agent
from twelvefactor.core.events import JsonValue
from twelvefactor.core.tools import Executor, Grounded, Intent, Tool, ToolContext
from twelvefactor.settings import PrefixedSettings

from ._service import ServiceClient

NAME = "deploybot"
DESCRIPTION = "a deployment assistant that lists git tags and deploys the backend or the frontend."

Environment = Literal["staging", "production"]
# Plain tag names only: nothing the service could read as a path, an option or a second argument.
GitTag = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")]


class ListGitTags(Intent):
    """List the git tags that can be deployed, newest first."""

    intent: Literal["list_git_tags"] = "list_git_tags"


class DeployBackend(Intent):
    """Deploy one git tag of the backend to staging or production."""

    intent: Literal["deploy_backend"] = "deploy_backend"
    tag: GitTag = Field(
        description="The git tag to deploy, exactly as list_git_tags returned it, e.g. v1.2.3"
    )
    environment: Environment = Field(description="Where to deploy: staging or production")


class DeployFrontend(Intent):
    """Deploy one git tag of the frontend to staging or production."""

    intent: Literal["deploy_frontend"] = "deploy_frontend"
    tag: GitTag = Field(
        description="The git tag to deploy, exactly as list_git_tags returned it, e.g. v1.2.3"
    )
    environment: Environment = Field(description="Where to deploy: staging or production")


def is_production(call: DeployBackend | DeployFrontend) -> bool:
    """The approval policy: a person approves every production deploy; staging goes ahead."""
    return call.environment == "production"


# Control flow as policy (twelvefactor.core.control): a deploy is offered only once the tags are in
# the thread, its tag only as list_git_tags returned it, and a successful deploy ends the turn with
# a message code writes from the service's answer. The tags stay current until a person speaks or
# a deploy ran, so the model is not offered the same lookup twice in between.
TAG_FROM_LOOKUP = Grounded(source="list_git_tags", path="tags.name")


def deployed(call: DeployBackend | DeployFrontend, result: JsonValue) -> str:
    """The done message of a successful deploy, written by code from the approved call (the model's
    summaries were unreliable) and the deployment id the service returned."""
    service = call.intent.removeprefix("deploy_")
    deployment = result.get("deployment_id") if isinstance(result, dict) else None
    where = f" (deployment {deployment})" if isinstance(deployment, str) else ""
    return f"Deployed {service} {call.tag} to {call.environment}{where}."


class DeploybotSettings(PrefixedSettings):
    """deploybot's own settings: DEPLOYBOT_SERVICE_URL, DEPLOYBOT_TIMEOUT_SECONDS."""

    env_prefix = "DEPLOYBOT_"
    service_url: str = "http://127.0.0.1:8765"
    # A tool call that hangs would hold the reducer Lambda until its own timeout; fail fast instead.
    timeout_seconds: float = Field(default=10.0, gt=0, le=60)


def build_deploybot(settings: DeploybotSettings | None = None) -> Agent:
    settings = settings or DeploybotSettings()
    service = ServiceClient("deployment service", settings.service_url, settings.timeout_seconds)

    def list_git_tags(_call: ListGitTags, _ctx: ToolContext) -> JsonValue:
        return service.get("/tags")

    def deploy(service_name: Literal["backend", "frontend"]) -> Executor:
        def execute(call: DeployBackend | DeployFrontend, ctx: ToolContext) -> JsonValue:
            body = {"service": service_name, "tag": call.tag, "environment": call.environment}
            return service.post("/deploys", body, idempotency_key=ctx.idempotency_key)

        return execute

    return Agent(
        name=NAME,
        description=DESCRIPTION,
        tools=(
            Tool(ListGitTags, list_git_tags, read_only=True),
            Tool(
                DeployBackend,
                deploy("backend"),
                requires_approval=is_production,
                requires=("list_git_tags",),
                grounded={"tag": TAG_FROM_LOOKUP},
                completes=deployed,
            ),
            Tool(
                DeployFrontend,
                deploy("frontend"),
                requires_approval=is_production,
                requires=("list_git_tags",),
                grounded={"tag": TAG_FROM_LOOKUP},
                completes=deployed,
            ),
        ),
        max_steps=10,
    )
