"""The scripted model both sides talk to: `twelvefactor.local.fake_openai` on loopback, answering at once.

The answer depends only on the request, so any number of threads can share one server. Each side
gets the wire format its framework asks for:

- ours (``response_format`` json_schema): the wrapped intent, read off the last tag of the rendered
  thread in the prompt;
- the peer (``tools``): a function tool call, or a plain answer, read off the last messages.
"""

from __future__ import annotations

import json
import re
from typing import Any

from bench.scenario import DEPLOY_ARGUMENTS, DONE_MESSAGE
from twelvefactor.local.fake_openai import Answer, FakeOpenAI, Scripted, ToolCallAnswer

_CLOSING_TAG = re.compile(r"</([a-z_]+)>")


class UnexpectedRequest(AssertionError):
    """The conversation is not one the scenario produces: a harness bug, reported to the client."""


def next_intent(last_block: str) -> dict[str, Any]:
    """deploybot's next step, given the tag of the last block in its rendered thread."""
    match last_block:
        case "user_message":
            return {"intent": "list_git_tags"}
        case "list_git_tags_result":
            return {"intent": "deploy_backend", **DEPLOY_ARGUMENTS}
        case "deploy_backend_result":
            return {"intent": "done_for_now", "message": DONE_MESSAGE}
    raise UnexpectedRequest(f"no scripted step after <{last_block}>")


def respond(body: dict[str, Any]) -> Scripted:
    messages: list[dict[str, Any]] = body["messages"]
    if "tools" in body:
        return _respond_with_tools(messages)
    tags = _CLOSING_TAG.findall(str(messages[-1]["content"]))
    if not tags:
        raise UnexpectedRequest("the prompt holds no rendered thread")
    step = next_intent(tags[-1])
    # Strict structured outputs wrap the union (see twelvefactor.adapters.llm); guided JSON does not.
    strict = body.get("response_format", {}).get("type") == "json_schema"
    return Answer(json.dumps({"step": step} if strict else step))


def _respond_with_tools(messages: list[dict[str, Any]]) -> Scripted:
    last = messages[-1]
    if last["role"] == "user":
        return ToolCallAnswer("list_git_tags", {})
    if last["role"] != "tool":
        raise UnexpectedRequest(f"no scripted step after a {last['role']} message")
    calls = {
        call["id"]: call["function"]["name"]
        for message in messages
        for call in message.get("tool_calls") or ()
    }
    step = next_intent(f"{calls[last['tool_call_id']]}_result")
    if step["intent"] == "done_for_now":
        return Answer(step["message"])
    arguments = {key: value for key, value in step.items() if key != "intent"}
    return ToolCallAnswer(step["intent"], arguments)


def fake_llm() -> FakeOpenAI:
    return FakeOpenAI(responder=respond)
