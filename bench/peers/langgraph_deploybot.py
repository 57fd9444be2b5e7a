"""deploybot written the LangGraph way: the peer that `make bench` measures twelvefactor against.

It does the same work as `agents.deploybot` (list_git_tags -> deploy_backend/deploy_frontend ->
a final answer, production deploys held for a person, a question to a person when unclear) with
the tools a LangGraph user reaches for: `ChatOpenAI.bind_tools`, the prebuilt `ToolNode` and
`tools_condition`, `interrupt()` for the human gates, and langgraph-checkpoint-aws's
`DynamoDBSaver` for persistence. It is shaped like a Lambda handler module (imports at the top, the
graph compiled at import, AWS clients built on first use), so `bench/cold_start.py` can time its
import the way it times `functions/*/app.py`.

Runs only in bench/.venv (see bench/requirements-peer.txt); nothing in the product imports it.
Configuration, as for the product: OPENAI_BASE_URL, OPENAI_API_KEY, LLM_MODEL, DEPLOY_SERVICE_URL,
CHECKPOINT_TABLE, AWS_ENDPOINT_URL (moto in the benchmark).
"""

from __future__ import annotations

import functools
import os
from typing import Annotated, Any, Literal

import httpx
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.tools import InjectedToolCallId, tool
from langchain_openai import ChatOpenAI
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import Command, interrupt
from langgraph_checkpoint_aws import DynamoDBSaver

# The same rules as prompts/deploybot.jinja; the tool schemas travel as OpenAI tool definitions.
SYSTEM_PROMPT = """\
You are deploybot, a deployment assistant that lists git tags and deploys the backend or the frontend.
Rules:
- Before any deploy, call list_git_tags, unless the tags are already in the conversation.
- Use a tag exactly as list_git_tags returned it. If no tag was named, use the newest tag (the first one).
- If it is not clear what to deploy (backend or frontend), use request_human_input and ask one
  short question.
- If no environment was named, choose production. A human approves every production deploy before
  it runs, so still choose the deploy step.
- If an approval was rejected, follow the comment in it. Do not repeat the rejected call unchanged.
- If a step ended in an error, read the error, then fix the call or ask a human.
- When the work is finished, answer with a one-sentence summary for the person."""

Environment = Literal["staging", "production"]


@functools.cache
def _service() -> httpx.Client:
    url = os.environ.get("DEPLOY_SERVICE_URL", "http://127.0.0.1:8765")
    return httpx.Client(base_url=url, timeout=float(os.environ.get("TOOL_TIMEOUT_SECONDS", "10")))


def _deploy(service: str, tag: str, environment: Environment, call_id: str, thread_id: str) -> Any:
    if environment == "production":
        # The approval gate: the graph stops here until a person resumes it with Command(resume=...).
        answer = interrupt({"approve": f"deploy {service} {tag} to production"})
        if not (isinstance(answer, dict) and answer.get("approved")):
            return {"rejected": True, "comment": (answer or {}).get("comment", "")}
    body = {"service": service, "tag": tag, "environment": environment}
    response = _service().post("/deploys", json=body, headers={"Idempotency-Key": f"{thread_id}:{call_id}"})
    response.raise_for_status()
    return response.json()


@tool
def list_git_tags() -> Any:
    """List the git tags that can be deployed, newest first."""
    response = _service().get("/tags")
    response.raise_for_status()
    return response.json()


@tool
def deploy_backend(
    tag: str, environment: Environment, tool_call_id: Annotated[str, InjectedToolCallId]
) -> Any:
    """Deploy one git tag of the backend to staging or production.

    Args:
        tag: The git tag to deploy, exactly as list_git_tags returned it, e.g. v1.2.3
        environment: Where to deploy: staging or production
    """
    return _deploy("backend", tag, environment, tool_call_id, _thread_id())


@tool
def deploy_frontend(
    tag: str, environment: Environment, tool_call_id: Annotated[str, InjectedToolCallId]
) -> Any:
    """Deploy one git tag of the frontend to staging or production.

    Args:
        tag: The git tag to deploy, exactly as list_git_tags returned it, e.g. v1.2.3
        environment: Where to deploy: staging or production
    """
    return _deploy("frontend", tag, environment, tool_call_id, _thread_id())


@tool
def request_human_input(question: str, context: str = "") -> Any:
    """Ask a person for information, clarification or a decision, then wait for the answer."""
    return interrupt({"question": question, "context": context})


TOOLS = [list_git_tags, deploy_backend, deploy_frontend, request_human_input]


def _thread_id() -> str:
    from langgraph.config import get_config

    return str(get_config()["configurable"]["thread_id"])


@functools.cache
def _model() -> Any:
    llm = ChatOpenAI(
        model=os.environ.get("LLM_MODEL", "gpt-4o-mini"),
        base_url=os.environ.get("OPENAI_BASE_URL"),
        api_key=os.environ.get("OPENAI_API_KEY", "no-key-configured"),  # type: ignore[arg-type]
        temperature=0,
        max_retries=3,
    )
    return llm.bind_tools(TOOLS, tool_choice="auto")


def agent(state: MessagesState) -> dict[str, Any]:
    return {"messages": [_model().invoke([SystemMessage(SYSTEM_PROMPT), *state["messages"]])]}


BUILDER = StateGraph(MessagesState)
BUILDER.add_node("agent", agent)
BUILDER.add_node("tools", ToolNode(TOOLS))
BUILDER.add_edge(START, "agent")
BUILDER.add_conditional_edges("agent", tools_condition)
BUILDER.add_edge("tools", "agent")


def compile_graph(checkpointer: BaseCheckpointSaver[Any]) -> CompiledStateGraph[Any]:
    return BUILDER.compile(checkpointer=checkpointer)


@functools.cache
def graph() -> CompiledStateGraph[Any]:
    saver = DynamoDBSaver(
        table_name=os.environ.get("CHECKPOINT_TABLE", "langgraph-checkpoints"),
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        endpoint_url=os.environ.get("AWS_ENDPOINT_URL"),
    )
    return compile_graph(saver)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry: {"thread_id", "message"} starts a turn, {"thread_id", "resume"} answers a gate."""
    config = {"configurable": {"thread_id": event["thread_id"]}, "recursion_limit": 25}
    if "resume" in event:
        result = graph().invoke(Command(resume=event["resume"]), config)
    else:
        result = graph().invoke({"messages": [HumanMessage(event["message"])]}, config)
    waiting = result.get("__interrupt__")
    last = result["messages"][-1]
    return {"thread_id": event["thread_id"], "status": "waiting" if waiting else "done", "text": last.text}
