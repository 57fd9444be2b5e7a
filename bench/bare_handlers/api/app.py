"""The Api trigger's shape with none of our code: Logger, Metrics, the validating REST resolver."""

from typing import Annotated, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError
from pydantic import BaseModel, Field

logger = Logger()
metrics = Metrics()
app = APIGatewayRestResolver(enable_validation=True)
ALREADY_RUNNING = IdempotencyAlreadyInProgressError


class LaunchRequest(BaseModel):
    agent: str = Field(min_length=1, max_length=64)
    message: str


class Accepted(BaseModel):
    thread_id: str
    status: str


@app.post("/threads")
def launch(request: Annotated[LaunchRequest, Body()]) -> Accepted:
    return Accepted(thread_id=request.agent, status="accepted")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return app.resolve(event, context)
