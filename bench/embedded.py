"""Figure 7: what a decision of the embedded SmolLM2 costs on this machine (the demo's model), and
whether it finishes deploybot's tasks, before and after code carries the control flow.

The model runs in llama.cpp's server (`twelvefactor.local.embedded_llm`) and is asked through our
real adapter in ``json_object`` mode, with deploybot's real prompt, at the three points of a turn
where the model decides. Then whole tasks run through the real reducer against the fake deployment
service, once with deploybot as shipped ("after") and once with the control-flow policy taken off
its tools ("before": every intent offered at every decision, no enum, no loop guard, no
completion). Runs in a worker process: `python -m bench.embedded <spec>`.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import sys
import time
from contextlib import nullcontext
from datetime import UTC, datetime
from typing import Any

from bench.harness import Harness
from bench.report import Figure, Summary, Verdict
from bench.scenario import DEPLOY_ARGUMENTS, TAG, TURN_TEXT

DECISION_TIMEOUT_SECONDS = 600.0
# What a person asks, and the one deploy that must have run for the task to count as done.
TASKS: tuple[tuple[str, dict[str, str]], ...] = (
    ("Can you deploy the backend?", {"service": "backend", "tag": TAG, "environment": "production"}),
    (TURN_TEXT, {"service": "backend", "tag": TAG, "environment": "staging"}),
    (
        "Please deploy the latest frontend to production.",
        {"service": "frontend", "tag": TAG, "environment": "production"},
    ),
)
# Approvals given per task (a production deploy needs one); a question or an escalation ends it.
MAX_RESUMES = 3


def measure(h: Harness) -> Figure:
    repeats = 1 if h.smoke else 4
    figure = Figure(
        7,
        "Embedded model",
        f"""
SmolLM2-135M-Instruct (Q4_1 GGUF) in llama.cpp's OpenAI-compatible server on 127.0.0.1, asked
through `twelvefactor.adapters.llm.OpenAIModel` in `json_object` mode (llama.cpp turns the
intents' schema into a grammar) with deploybot's real prompt, at the three decisions of a turn
(after the request, after the tags, after the deploy), {repeats} times each, one at a time. *Tokens/s*
is completion tokens over the decision's wall time (prompt evaluation included); *valid* counts
answers the reducer would accept (`Offer.check`: offered, valid, within grounded enums).

Then whole deploybot tasks run through the real reducer (`run_until_paused`) against the fake
deployment service at temperature 0, approvals given automatically: *after* is deploybot as shipped
(the intents offered per decision by `twelvefactor.core.control`: deploys only once the tags are
listed, the tag an enum of the listed ones, no repeated lookup, the done message written by code);
*before* is the same agent and prompt with that policy taken off its tools (every intent offered at
every decision, free-text tag, no loop guard, the model writes the done message). A task is done
when the thread ends in `done`, exactly the expected deploy ran, and the message names its tag and
environment. *Request prefix kept* is, per decision after the first, the share of the previous
request's text (messages in order) that the next request starts with: what a provider's prompt
cache can reuse.
""",
    )
    spec: dict[str, Any] = {"repeats": repeats, "tasks": 1 if h.smoke else len(TASKS)}
    if h.smoke:
        # A decision of the real model takes tens of seconds here: too slow for `make test`. The
        # scripted fake LLM stands in, so the measurement itself is still exercised.
        spec["base_url"] = h.stack.llm.base_url
        figure.method += "\n**Smoke run: the scripted fake LLM stood in for SmolLM2.**\n"
    elif importlib.util.find_spec("llama_cpp") is None:
        reason = "llama-cpp-python is not installed (`pip install -e '.[local]'`, as `make demo` does)"
        figure.verdicts.append(Verdict("seconds per decision measured", None, reason))
        return figure
    result = h.run_json([h.ours_python, "-m", "bench.embedded", json.dumps(spec)])
    decisions = result["decisions"]
    figure.headers = ["decisions", "seconds / decision", "tokens/s", "prompt tokens", "valid answers"]
    for label, rows in (("first (cold prompt cache)", decisions[:1]), ("the others", decisions[1:])):
        if not rows:
            continue
        seconds = Summary.of([row["seconds"] for row in rows])
        rates = Summary.of([row["completion_tokens"] / row["seconds"] for row in rows])
        prompt = Summary.of([float(row["prompt_tokens"]) for row in rows])
        figure.rows.append(
            [
                f"{label}: {len(rows)}",
                f"{seconds.median:.2f} s ({seconds.low:.2f}–{seconds.high:.2f})",
                f"{rates.median:.1f} ({rates.low:.1f}–{rates.high:.1f})",
                f"{prompt.median:.0f}",
                f"{sum(row['valid'] for row in rows)}/{len(rows)}",
            ]
        )
    chosen = ", ".join(f"{name} {count}" for name, count in sorted(result["intents"].items()))
    figure.notes.append(f"The server started in {result['startup_seconds']:.1f} s. Intents chosen: {chosen}.")
    _task_table(figure, result["tasks"], judged=not h.smoke)
    return figure


def _task_table(figure: Figure, tasks: dict[str, list[dict[str, Any]]], *, judged: bool) -> None:
    """Task success and decisions per task, before and after, and how much of each request's text
    the next decision's request repeats from its start (what a provider's prompt cache can reuse)."""
    rows = []
    for config in ("before", "after"):
        runs = tasks[config]
        done = sum(run["succeeded"] for run in runs)
        decisions = Summary.of([float(run["decisions"]) for run in runs])
        kept = [share for run in runs for share in run["prefix_kept"]]
        rows.append(
            [
                config,
                f"{done}/{len(runs)}",
                f"{decisions.median:.0f} ({decisions.low:.0f}–{decisions.high:.0f})",
                f"{sum(run['errors'] for run in runs)}",
                f"{Summary.of(kept).median:.1%}" if kept else "n/a",
            ]
        )
    figure.extra_tables.append(
        (
            "Whole tasks through the real reducer (approvals given automatically; a question or an "
            "escalation ends the task):",
            ["deploybot", "tasks done", "model decisions / task", "error events", "request prefix kept"],
            rows,
        )
    )
    for config in ("before", "after"):
        for run in tasks[config]:
            ending = f"{run['ending']} ({run['decisions']} decisions)"
            figure.notes.append(f'{config}: "{run["task"]}" -> {ending}')
    after = tasks["after"]
    if not judged:  # the scripted stand-in's answers say nothing about the embedded model
        return
    figure.verdicts.append(
        Verdict(
            "deploybot finishes its tasks on the embedded model once code carries the control flow",
            all(run["succeeded"] for run in after),
            f"{sum(run['succeeded'] for run in after)}/{len(after)} tasks done after, "
            f"{sum(run['succeeded'] for run in tasks['before'])}/{len(tasks['before'])} before",
        )
    )


# --- the worker ----------------------------------------------------------------------------------


def _threads() -> list[Any]:
    """deploybot's thread at each decision of a turn, built with the core's own reply functions."""
    from twelvefactor.core import replies
    from twelvefactor.core.events import (
        Thread,
        ToolCall,
        ToolCallData,
        ToolResult,
        ToolResultData,
    )
    from twelvefactor.local.fake_services import TAGS

    now = datetime.now(UTC)
    start = replies.launch(TURN_TEXT, at=now, channel="api")
    tags = [
        ToolCall(at=now, data=ToolCallData(call_id="call-1", intent="list_git_tags", arguments={})),
        ToolResult(
            at=now, data=ToolResultData(call_id="call-1", intent="list_git_tags", result={"tags": list(TAGS)})
        ),
    ]
    deploy = [
        ToolCall(
            at=now, data=ToolCallData(call_id="call-3", intent="deploy_backend", arguments=DEPLOY_ARGUMENTS)
        ),
        ToolResult(
            at=now,
            data=ToolResultData(
                call_id="call-3",
                intent="deploy_backend",
                result={
                    "deployment_id": "dep-0001",
                    "service": "backend",
                    **DEPLOY_ARGUMENTS,
                    "status": "succeeded",
                },
            ),
        ),
    ]
    events = [start, [*start, *tags], [*start, *tags, *deploy]]
    return [Thread(id="bench-embedded", agent="deploybot", events=tuple(history)) for history in events]


def run(spec: dict[str, Any]) -> dict[str, Any]:
    from agents import build_registry, default_prompts_dir
    from twelvefactor.adapters.llm import OpenAIModel
    from twelvefactor.core import control
    from twelvefactor.core.prompts import JinjaPrompts
    from twelvefactor.local.embedded_llm import MODEL_ALIAS, embedded_llm

    agent = build_registry().get("deploybot")
    prompts = JinjaPrompts(default_prompts_dir(), output_mode="json_object")
    decisions: list[dict[str, Any]] = []
    intents: dict[str, int] = {}
    started = time.perf_counter()
    server = nullcontext(spec["base_url"]) if "base_url" in spec else embedded_llm()
    with server as base_url:
        startup = time.perf_counter() - started
        # Generous: on a busy 2-core machine one grammar-constrained answer can take minutes.
        model = OpenAIModel(
            model=MODEL_ALIAS,
            output_mode="json_object",
            base_url=base_url,
            max_retries=0,
            timeout_seconds=DECISION_TIMEOUT_SECONDS,
        )
        for _ in range(spec["repeats"]):
            for thread in _threads():
                # What the reducer would send and accept at this point of the thread.
                offer = control.offer(agent, thread)
                messages = prompts.render(agent, thread, offer)
                asked = time.perf_counter()
                reply = model.decide(messages, offer.intents)
                seconds = time.perf_counter() - asked
                try:
                    name = offer.check(reply.content).intent
                except control.InvalidAnswer:
                    name = "(invalid)"
                intents[name] = intents.get(name, 0) + 1
                usage = reply.usage
                decisions.append(
                    {
                        "seconds": seconds,
                        "prompt_tokens": usage.prompt_tokens if usage else 0,
                        "completion_tokens": usage.completion_tokens if usage else 0,
                        "valid": name != "(invalid)",
                    }
                )
        tasks = {
            config: [
                _run_task(model, prompts, text, expected, config) for text, expected in TASKS[: spec["tasks"]]
            ]
            for config in ("before", "after")
        }
        model.close()
    return {"decisions": decisions, "intents": intents, "startup_seconds": startup, "tasks": tasks}


class _Recording:
    """The adapter, with every request's messages kept (to measure how much of a prefix repeats)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.sent: list[str] = []

    def decide(self, messages: Any, intents: Any) -> Any:
        self.sent.append("\x00".join(f"{m['role']}\x00{m['content']}" for m in messages))
        return self.model.decide(messages, intents)


def without_control_flow(agent: Any) -> Any:
    """deploybot as it was before: its tools with no prerequisites, enums, loop guard or completion."""
    from dataclasses import replace

    tools = tuple(
        replace(tool, requires=(), grounded={}, freshness="off", completes=None) for tool in agent.tools
    )
    return replace(agent, tools=tools)


def _run_task(model: Any, prompts: Any, text: str, expected: dict[str, str], config: str) -> dict[str, Any]:
    import httpx

    from agents.deploybot import DeploybotSettings, build_deploybot
    from twelvefactor.core import replies, state
    from twelvefactor.core.events import Done, Error, Thread
    from twelvefactor.core.ports import Ports
    from twelvefactor.core.reducer import run_until_paused
    from twelvefactor.local.fake_services import run_fake_services

    with run_fake_services() as url:
        agent = build_deploybot(DeploybotSettings(service_url=url))
        agent = agent if config == "after" else without_control_flow(agent)
        recording = _Recording(model)
        ports = Ports(llm=recording, prompts=prompts)
        launch = replies.launch(text, at=datetime.now(UTC), channel="api")
        thread = Thread(id="bench-task", agent="deploybot", events=tuple(launch))
        thread = run_until_paused(agent, thread, ports)
        for _ in range(MAX_RESUMES):
            if state.status(thread.events) is not state.ThreadStatus.AWAITING_APPROVAL:
                break
            approval = replies.respond(thread, replies.ApprovalReply(approved=True), at=datetime.now(UTC))
            thread = run_until_paused(agent, thread.extended(approval), ports)
        deploys = httpx.get(f"{url}/deploys").json()["deploys"]
    last = thread.events[-1]
    ran = [{key: deploy[key] for key in expected} for deploy in deploys]
    succeeded = (
        isinstance(last, Done)
        and ran == [expected]
        and expected["tag"] in last.data.message
        and expected["environment"] in last.data.message
    )
    ending = f"done: {last.data.message!r}" if isinstance(last, Done) else state.status(thread.events).value
    return {
        "task": text,
        "succeeded": succeeded,
        "ending": f"{ending}; deploys run: {ran}",
        "decisions": sum(state.is_model_step(event) for event in thread.events),
        "errors": sum(isinstance(event, Error) for event in thread.events),
        "prefix_kept": _prefix_kept(recording.sent),
    }


def _prefix_kept(sent: list[str]) -> list[float]:
    """Per decision after the first: the share of the previous request that the next one starts with."""
    shares = []
    for previous, current in itertools.pairwise(sent):
        common = 0
        for a, b in zip(previous, current, strict=False):
            if a != b:
                break
            common += 1
        shares.append(common / len(previous))
    return shares


if __name__ == "__main__":
    print(json.dumps(run(json.loads(sys.argv[1]))))
