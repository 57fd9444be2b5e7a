"""The Email trigger's shape with none of our code: Logger, Metrics, the stdlib MIME parser."""

from email import policy
from email.parser import BytesParser
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError
from pydantic import BaseModel, Field

logger = Logger()
metrics = Metrics()
parser = BytesParser(policy=policy.default)
ALREADY_RUNNING = IdempotencyAlreadyInProgressError


class SesVerdict(BaseModel):
    status: str = Field(min_length=1)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    SesVerdict.model_validate(event["verdict"])
    message = parser.parsebytes(event["raw"])
    return {"subject": str(message["subject"])}
