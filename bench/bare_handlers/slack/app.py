"""The Slack trigger's shape with none of our code: Logger, Metrics, slack_sdk's verifier."""

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError
from pydantic import BaseModel, Field
from slack_sdk.signature import SignatureVerifier

logger = Logger()
metrics = Metrics()
verifier = SignatureVerifier("not-a-secret")
ALREADY_RUNNING = IdempotencyAlreadyInProgressError


class SlackEvent(BaseModel):
    event_id: str = Field(min_length=1)
    team_id: str


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if not verifier.is_valid_request(event.get("body", ""), event.get("headers", {})):
        return {"statusCode": 401}
    SlackEvent.model_validate_json(event["body"])
    return {"statusCode": 200}
