"""Helpers for the e2e tests: per-conversation scripts for the fake model, and reading AWS state
the way an operator would (boto3 against the moto server)."""

from __future__ import annotations

import json
import threading
import uuid
from collections import deque
from typing import Any

import boto3
from boto3.dynamodb.conditions import Key

from twelvefactor.local.fake_openai import Answer, HttpError, Scripted
from twelvefactor.local.stack import REGION, LocalStack


class ConversationScripts:
    """The fake model's answers, per conversation: keyed by the text that opens the conversation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scripts: dict[str, deque[Scripted | str]] = {}

    def add(self, opening: str, *answers: Scripted | str) -> str:
        with self._lock:
            self._scripts.setdefault(opening, deque()).extend(answers)
        return opening

    def remaining(self, opening: str) -> int:
        with self._lock:
            return len(self._scripts.get(opening, ()))

    def __call__(self, request: dict[str, Any]) -> Scripted | str:
        shown = str(request["messages"][-1]["content"])
        with self._lock:
            for opening, answers in self._scripts.items():
                if opening in shown:
                    if answers:
                        return answers.popleft()
                    return HttpError(400, f"no scripted answer left for {opening!r}")
        return HttpError(400, "no script for this conversation")


def opening(text: str) -> str:
    """A message no other test sends, so each test's conversation has a script of its own."""
    return f"{text} (ticket {uuid.uuid4().hex[:8]})"


# --- looking at AWS the way an operator would: boto3 against the moto server -------------------------


def aws(stack: LocalStack, service: str) -> Any:
    return boto3.client(service, endpoint_url=stack.moto_url, region_name=REGION)


def thread_items(stack: LocalStack, thread_id: str) -> list[dict[str, Any]]:
    table = boto3.resource("dynamodb", endpoint_url=stack.moto_url, region_name=REGION).Table(
        stack.physical_name("ThreadsTable")
    )
    items: list[dict[str, Any]] = table.query(KeyConditionExpression=Key("pk").eq(f"THREAD#{thread_id}"))[
        "Items"
    ]
    return items


def stored_event_types(stack: LocalStack, thread_id: str) -> list[str]:
    """The event types stored in DynamoDB for the thread, in sequence order."""
    return [
        str(item["type"]) for item in thread_items(stack, thread_id) if str(item["sk"]).startswith("EVENT#")
    ]


def pending_wait(stack: LocalStack, thread_id: str) -> dict[str, Any] | None:
    return next((item for item in thread_items(stack, thread_id) if item["sk"] == "WAIT"), None)


def execution(stack: LocalStack, thread_id: str, launch_seq: int = 0) -> dict[str, Any]:
    """describe_execution of the thread's execution (named <thread_id>-<launch seq>)."""
    arn = stack.state_machine_arn.replace(":stateMachine:", ":execution:") + f":{thread_id}-{launch_seq}"
    described: dict[str, Any] = aws(stack, "stepfunctions").describe_execution(executionArn=arn)
    return described


def intent(name: str, **arguments: Any) -> Answer:
    return Answer(json.dumps({"intent": name, **arguments}))
