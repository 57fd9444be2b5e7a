"""oncall: a CloudWatch alarm fires; the agent looks up recent deploys, asks the on-call person in
Slack whether to roll the suspect one back, and rolls back only when they approve.

Written by `twelvefactor new agent oncall`, then filled in. The agent is plain code: the recent
deploys are pre-fetched before the model is first asked (factor 13), so the model sees them and
never guesses an id; a rollback always waits for a person's Approve or Reject in the on-call Slack
channel (the approval gate, factor 7). Its settings are its own, read from the environment under
ONCALL_ (docs/configuration.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from twelvefactor.core.agent import Agent
from twelvefactor.core.channels import SlackRef
from twelvefactor.core.events import JsonValue, Thread
from twelvefactor.core.tools import Grounded, Intent, Tool, ToolContext
from twelvefactor.settings import PrefixedSettings

from ._service import ServiceClient

NAME = "oncall"
DESCRIPTION = (
    "an on-call assistant: when an alarm fires it checks recent deploys and offers to roll back "
    "the suspect one."
)

# The deployment service's own ids only: nothing it could read as a path or an option.
DeploymentId = Annotated[str, StringConstraints(pattern=r"^dep-[0-9]{1,8}$")]
# Empty when not configured (the template's default).
SlackId = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9]{0,20}$")]


class OncallSettings(PrefixedSettings):
    """oncall's own settings: ONCALL_SERVICE_URL, ONCALL_TIMEOUT_SECONDS, and the Slack
    conversation the on-call person answers in: ONCALL_SLACK_TEAM_ID, ONCALL_SLACK_CHANNEL_ID."""

    env_prefix = "ONCALL_"
    service_url: str = "http://127.0.0.1:8765"
    # A tool call that hangs would hold the reducer Lambda until its own timeout; fail fast instead.
    timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    # Without both, an alarm's thread has no one to ask and waits for an API answer.
    slack_team_id: SlackId = ""
    slack_channel_id: SlackId = ""


class ListRecentDeploys(Intent):
    """List the latest deploys, newest first, each with the tag it replaced."""

    intent: Literal["list_recent_deploys"] = "list_recent_deploys"


class RollBack(Intent):
    """Roll one deploy back to the tag it replaced. The on-call person approves it first."""

    intent: Literal["roll_back"] = "roll_back"
    deployment_id: DeploymentId = Field(
        description="The deploy to undo, exactly as list_recent_deploys returned it, e.g. dep-0001"
    )
    reason: str = Field(min_length=1, max_length=300, description="Why this deploy is the suspect")


def prefetch_recent_deploys(_thread: Thread) -> Sequence[Intent]:
    return [ListRecentDeploys()]


def rolled_back(call: RollBack, result: JsonValue) -> str:
    """The done message of a rollback that ran, written by code from the service's answer: the
    model is not asked again (it tended to propose the same rollback a second time)."""
    if not isinstance(result, dict):
        return f"Rolled back {call.deployment_id}."
    return (
        f"Rolled back {result.get('service')} in {result.get('environment')} from "
        f"{result.get('from_tag')} to {result.get('to_tag')} ({result.get('rollback_id')})."
    )


def build_oncall(settings: OncallSettings | None = None) -> Agent:
    settings = settings or OncallSettings()
    service = ServiceClient("deployment service", settings.service_url, settings.timeout_seconds)

    def list_recent_deploys(_call: ListRecentDeploys, _ctx: ToolContext) -> JsonValue:
        return service.get("/deploys/recent")

    def roll_back(call: RollBack, ctx: ToolContext) -> JsonValue:
        body = {"deployment_id": call.deployment_id}
        return service.post("/rollbacks", body, idempotency_key=ctx.idempotency_key)

    on_call = None
    if settings.slack_team_id and settings.slack_channel_id:
        on_call = SlackRef(team_id=settings.slack_team_id, channel_id=settings.slack_channel_id)
    return Agent(
        name=NAME,
        description=DESCRIPTION,
        tools=(
            Tool(ListRecentDeploys, list_recent_deploys, read_only=True),
            # The policy is code: a rollback is offered only for a deploy the service listed, every
            # one waits for a yes from the on-call person, and one that ran ends the turn.
            Tool(
                RollBack,
                roll_back,
                requires_approval=True,
                requires=("list_recent_deploys",),
                grounded={"deployment_id": Grounded("list_recent_deploys", "deploys.deployment_id")},
                completes=rolled_back,
            ),
        ),
        prefetch=prefetch_recent_deploys,
        human_channel=on_call,
        max_steps=6,
    )
