"""Figure 7: what a decision of the embedded SmolLM2 costs on this machine (the demo's model).

The model runs in llama.cpp's server (`twelvefactor.local.embedded_llm`) and is asked through our
real adapter in ``json_object`` mode, with deploybot's real prompt, at the three points of a turn
where the model decides. Runs in a worker process: `python -m bench.embedded <spec>`.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from contextlib import nullcontext
from datetime import UTC, datetime
from typing import Any

from bench.harness import Harness
from bench.report import Figure, Summary, Verdict
from bench.scenario import DEPLOY_ARGUMENTS, TURN_TEXT

DECISION_TIMEOUT_SECONDS = 600.0


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
answers our intents' models accept.
""",
    )
    spec: dict[str, Any] = {"repeats": repeats}
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
    return figure


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
    from pydantic import ValidationError

    from agents import build_registry, default_prompts_dir
    from twelvefactor.adapters.llm import OpenAIModel
    from twelvefactor.core.prompts import JinjaPrompts
    from twelvefactor.local.embedded_llm import MODEL_ALIAS, embedded_llm

    agent = build_registry().get("deploybot")
    prompts = JinjaPrompts(default_prompts_dir())
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
                messages = prompts.render(agent, thread)
                asked = time.perf_counter()
                reply = model.decide(messages, agent.intents)
                seconds = time.perf_counter() - asked
                try:
                    name = agent.intents.validate_json(reply.content).intent
                except ValidationError:
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
        model.close()
    return {"decisions": decisions, "intents": intents, "startup_seconds": startup}


if __name__ == "__main__":
    print(json.dumps(run(json.loads(sys.argv[1]))))
