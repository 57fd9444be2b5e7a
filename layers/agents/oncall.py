"""oncall: TODO, one line on what this agent does and for whom.

Written by `twelvefactor new agent oncall`. The agent is plain code: intents (what the model may
choose, one pydantic model each), tools (an intent plus a deterministic executor and its policy:
read-only, needs approval) and the agent's budget. Its settings are its own, read from the
environment under ONCALL_ (docs/configuration.md).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from twelvefactor.core.agent import Agent
from twelvefactor.core.events import JsonValue
from twelvefactor.core.tools import Intent, Tool, ToolContext
from twelvefactor.settings import PrefixedSettings

from ._service import ServiceClient

NAME = "oncall"
DESCRIPTION = "TODO: an assistant that looks records up."


class OncallSettings(PrefixedSettings):
    """oncall's own settings: ONCALL_SERVICE_URL, ONCALL_TIMEOUT_SECONDS."""

    env_prefix = "ONCALL_"
    # Empty until the agent has a service: the executor stub answers by itself meanwhile.
    service_url: str = ""
    # A tool call that hangs would hold the reducer Lambda until its own timeout; fail fast instead.
    timeout_seconds: float = Field(default=10.0, gt=0, le=60)


class LookUp(Intent):
    """Look up records matching a short query."""

    intent: Literal["look_up"] = "look_up"
    query: str = Field(min_length=1, max_length=200, description="What to look up, in a few words")


def build_oncall(settings: OncallSettings | None = None) -> Agent:
    settings = settings or OncallSettings()
    service = ServiceClient("oncall service", settings.service_url, settings.timeout_seconds)

    def look_up(call: LookUp, _ctx: ToolContext) -> JsonValue:
        if not settings.service_url:
            # The stub: an honest empty answer, so the agent runs before its service exists.
            return {"query": call.query, "records": [], "stub": True}
        return service.get(f"/records?query={call.query}")

    return Agent(
        name=NAME,
        description=DESCRIPTION,
        tools=(Tool(LookUp, look_up, read_only=True),),
        max_steps=8,
    )
