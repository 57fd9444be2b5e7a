"""Typed settings (factor III of the original twelve: config in the environment).

Every function validates the settings it needs once, at cold start, and fails loudly on a bad or
missing value. These classes are the single list of environment variables the runtime reads;
template.yaml sets them and docs/configuration.md describes them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

OutputMode = Literal["json_schema", "json_object", "tools"]
LlmProvider = Literal["openai", "bedrock"]


class EnvironmentSettings(BaseModel):
    """Settings read from the environment: each field from the variable its alias names, unless the
    caller passes it. Every field here is a scalar and every variable is spelled as Lambda sets it,
    which is all we used pydantic-settings for; it cost each function about 50 ms of cold start
    (asyncio, argparse and dotenv among its imports) to do that."""

    # defer_build: a class is built when a function first reads it, so each function builds only its
    # own few of these (the Api function never needs LlmSettings, the reducer never SlackSettings).
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True, defer_build=True)
    # A field with no alias is read from ENV_PREFIX + its name in capitals (see PrefixedSettings).
    env_prefix: ClassVar[str] = ""

    @model_validator(mode="before")
    @classmethod
    def _read_environment(cls, given: Any) -> Any:
        if not isinstance(given, dict):
            return given
        found = dict(given)
        for name, field in cls.model_fields.items():
            key = field.alias or name
            variable = field.alias or f"{cls.env_prefix}{name}".upper()
            if name not in found and key not in found and variable in os.environ:
                found[key] = os.environ[variable]
        return found


class PrefixedSettings(EnvironmentSettings):
    """The base of an agent's own settings: each field is read from the variable named by the
    class's ``env_prefix`` and the field's name, e.g. ``service_url`` of a class whose prefix is
    ``ONCALL_`` from ``ONCALL_SERVICE_URL``. The framework's settings name no agent; an agent owns
    its service URLs, timeouts and secret ARNs this way (docs/configuration.md)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Checked at import: a prefix that is not an environment variable's prefix would read nothing.
        if cls.env_prefix and not (cls.env_prefix.isupper() and cls.env_prefix.endswith("_")):
            raise TypeError(f"{cls.__name__}.env_prefix must be capitals ending in _, e.g. ONCALL_")


class LlmSettings(EnvironmentSettings):
    """Any OpenAI-compatible endpoint (OpenAI, Azure OpenAI, vLLM, Ollama, llama.cpp's server) through
    the openai SDK, or Amazon Bedrock's Converse API with the function's IAM role (no key)."""

    provider: LlmProvider = Field(default="openai", alias="LLM_PROVIDER")

    base_url: str | None = Field(default=None, alias="OPENAI_BASE_URL")
    api_key: SecretStr | None = Field(default=None, alias="OPENAI_API_KEY")
    # In Lambda the key lives in Secrets Manager; the handler resolves it with Powertools Parameters.
    api_key_secret_arn: str | None = Field(default=None, alias="OPENAI_API_KEY_SECRET_ARN")
    model: str = Field(default="gpt-4o-mini", alias="LLM_MODEL")
    output_mode: OutputMode = Field(default="json_schema", alias="LLM_OUTPUT_MODE")
    timeout_seconds: float = Field(default=60.0, gt=0, alias="LLM_TIMEOUT_SECONDS")
    max_retries: int = Field(default=3, ge=0, le=10, alias="LLM_MAX_RETRIES")
    temperature: float = Field(default=0.0, ge=0, le=2, alias="LLM_TEMPERATURE")
    # Bedrock: LLM_MODEL is the model id or inference profile; the region defaults to the function's.
    bedrock_region: str | None = Field(default=None, alias="BEDROCK_REGION")
    # tools: forced tool choice, one intent per reply; json_schema: Converse structured output.
    bedrock_output_mode: Literal["tools", "json_schema"] = Field(default="tools", alias="BEDROCK_OUTPUT_MODE")
    # Cache points after the stable prefix; off for a model that refuses them.
    bedrock_prompt_cache: bool = Field(default=True, alias="BEDROCK_PROMPT_CACHE")


class PricingSettings(EnvironmentSettings):
    """The model whose price a thread's usage is costed at (the Reducer's and the Api's LLM_MODEL)."""

    model: str = Field(default="gpt-4o-mini", alias="LLM_MODEL")


class AgentSettings(EnvironmentSettings):
    """Where the framework finds the application's agents. Each agent's own settings (its services,
    timeouts, secrets) are the agent's: see PrefixedSettings."""

    prompts_dir: Path | None = Field(default=None, alias="PROMPTS_DIR")
    # The importable module that hands the framework its agents (twelvefactor.application).
    agents_module: str = Field(
        default="agents",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$",
        alias="TWELVEFACTOR_AGENTS",
    )


class StoreSettings(EnvironmentSettings):
    threads_table: str = Field(alias="THREADS_TABLE")
    payload_bucket: str = Field(alias="PAYLOAD_BUCKET")
    # Payloads above this many bytes go to S3 behind a pointer; DynamoDB items stay far below 400 KB.
    offload_threshold_bytes: int = Field(default=32_000, gt=0, le=350_000, alias="OFFLOAD_THRESHOLD_BYTES")
    finished_thread_ttl_days: int = Field(default=30, ge=0, alias="FINISHED_THREAD_TTL_DAYS")


class WorkflowSettings(EnvironmentSettings):
    state_machine_arn: str = Field(alias="STATE_MACHINE_ARN")


class WaitSettings(EnvironmentSettings):
    # The deadline recorded on a pending wait; the template passes the state machine's TimeoutSeconds.
    wait_timeout_seconds: int = Field(default=86_400, gt=0, alias="WAIT_TIMEOUT_SECONDS")


class IdempotencySettings(EnvironmentSettings):
    idempotency_table: str = Field(alias="IDEMPOTENCY_TABLE")


class SlackSettings(EnvironmentSettings):
    signing_secret: SecretStr | None = Field(default=None, alias="SLACK_SIGNING_SECRET")
    signing_secret_arn: str | None = Field(default=None, alias="SLACK_SIGNING_SECRET_ARN")
    bot_token: SecretStr | None = Field(default=None, alias="SLACK_BOT_TOKEN")
    bot_token_arn: str | None = Field(default=None, alias="SLACK_BOT_TOKEN_ARN")
    # Where the Web API lives; the local stack points this at its Slack stand-in.
    api_base_url: str = Field(default="https://slack.com/api/", alias="SLACK_API_BASE_URL")
    # Which agent is the application's choice (template.yaml's SlackDefaultAgent); none here, since the
    # framework names no agent. Empty: a new conversation is told that no agent answers there.
    default_agent: str = Field(default="", alias="SLACK_DEFAULT_AGENT")
    # Comma-separated Slack user ids allowed to approve; empty means nobody can approve from Slack.
    allowed_responders: str = Field(default="", alias="SLACK_ALLOWED_RESPONDERS")
    operations_channel: str | None = Field(default=None, alias="SLACK_OPERATIONS_CHANNEL")


class EmailSettings(EnvironmentSettings):
    # Comma-separated addresses or @domains allowed to talk to agents by email.
    allowed_senders: str = Field(default="", alias="EMAIL_ALLOWED_SENDERS")
    from_address: str = Field(default="agent@example.com", alias="EMAIL_FROM_ADDRESS")
    default_agent: str = Field(default="", alias="EMAIL_DEFAULT_AGENT")  # as SlackSettings.default_agent


class WebhookSettings(EnvironmentSettings):
    secret: SecretStr | None = Field(default=None, alias="WEBHOOK_SECRET")
    secret_arn: str | None = Field(default=None, alias="WEBHOOK_SECRET_ARN")
    # Callback URLs on loopback, over plain HTTP: only the local stack sets this, for its callers'
    # receivers on 127.0.0.1. Deployed, a callback goes to a public address over HTTPS only.
    allow_loopback: bool = Field(default=False, alias="WEBHOOK_ALLOW_LOOPBACK")


class EventBridgeSettings(EnvironmentSettings):
    # Comma-separated "detail-type=agent" pairs; a detail-type not listed is ignored.
    # The application's (template.yaml's EventBridgeLaunchRules); none by default.
    launch_rules: str = Field(default="", alias="EVENTBRIDGE_LAUNCH_RULES")


class TracingSettings(EnvironmentSettings):
    # Powertools' own switch, read here too: true keeps the X-Ray SDK's import out of the cold start.
    disabled: bool = Field(default=False, alias="POWERTOOLS_TRACE_DISABLED")


class CliSettings(EnvironmentSettings):
    # Where `twelvefactor threads` and `twelvefactor eval --from-thread` find the REST API.
    api_url: str | None = Field(default=None, alias="TWELVEFACTOR_API_URL")
