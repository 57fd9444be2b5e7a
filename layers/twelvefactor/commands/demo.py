"""``twelvefactor demo``: deploybot end to end on this machine (what ``make demo`` runs).

It starts the local stack (moto server with template.yaml's resources and the real state machine,
the handlers, the API gateway, a Slack stand-in, a fake deployment service) and a language model,
then does what a person in Slack would: mentions the app with "Can you deploy the backend?" in a
correctly signed ``app_mention``. Every event of the thread is printed as it lands; when the agent
asks for approval or for an answer, you give it here and it goes to ``POST /threads/{id}/responses``.
What Slack would have shown is printed too. A summary ends the run.

``--yes`` (or no terminal on stdin) approves automatically and answers a question or an escalation
once with a canned reply; if the agent asks again, the demo stops there and says so.

``--llm``: ``embedded`` (default: SmolLM2-135M, no key, no GPU; small enough that it may wander,
which the step and error budgets turn into an escalation), ``scripted`` (a scripted fake model over
the real OpenAI protocol: the happy path, in seconds), or an OpenAI-compatible base URL (with
OPENAI_API_KEY and LLM_MODEL, e.g. a hosted provider or a local Ollama).
"""

from __future__ import annotations

import argparse
import json
import queue
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import boto3
import httpx

from twelvefactor import runtime
from twelvefactor.commands.console import local_console
from twelvefactor.commands.local import render_slack
from twelvefactor.commands.threads import ApiError, SequencedEvent, ThreadsApi, event_line, format_arguments
from twelvefactor.core import pricing, state
from twelvefactor.core.events import (
    ApprovalRequested,
    Done,
    Error,
    Escalation,
    Event,
    HumanRequest,
    ToolResult,
)
from twelvefactor.core.state import ThreadStatus
from twelvefactor.local.embedded_llm import EmbeddedLlmError
from twelvefactor.local.fake_openai import Answer, FakeOpenAI
from twelvefactor.local.slack_standin import SlackCall
from twelvefactor.local.stack import LlmEndpoint, LocalStack, StackError, check_llm, open_llm
from twelvefactor.settings import PricingSettings

EXIT_FAILED = 1
AGENT = "deploybot"
DEFAULT_MESSAGE = "Can you deploy the backend?"
CANNED_ANSWER = "Deploy the backend to production with the newest tag, please."
_POLL_SECONDS = 0.3
# Notify and the final reply reach Slack just after the events that caused them are stored.
_SLACK_GRACE_SECONDS = 5.0
_QUIET_HINT_SECONDS = 15.0


class DemoFailed(RuntimeError):
    pass


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--yes", action="store_true", help="approve and answer automatically (for CI)")
    parser.add_argument(
        "--llm", default="embedded", help="embedded (default), scripted, or an OpenAI-compatible base URL"
    )
    parser.add_argument("--llm-port", type=int, default=0, help="the embedded model server's port (0: any)")
    parser.add_argument(
        "--message", default=DEFAULT_MESSAGE, help=f'what to ask (default: "{DEFAULT_MESSAGE}")'
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        help="give up when the agent makes no pause or end within this many seconds (default 900)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    out = Terminal()
    interactive = not args.yes and sys.stdin.isatty()
    out.say("twelvefactor demo: deploybot, end to end, on this machine")
    out.say("  no AWS account, no Docker, no API key: moto server, the real handlers, a local model")
    out.say("")
    try:
        with _language_model(args, out) as llm:
            automatic = "--yes" if args.yes else "no terminal"
            return Demo(llm, args.message, automatic if not interactive else None, args.timeout, out).run()
    except (StackError, EmbeddedLlmError, DemoFailed, ApiError) as error:
        out.say(f"\ntwelvefactor demo failed: {error}", err=True)
        return EXIT_FAILED
    except KeyboardInterrupt:
        out.say("\ninterrupted; the local stack is stopped", err=True)
        return EXIT_FAILED


@contextmanager
def _language_model(args: argparse.Namespace, out: Terminal) -> Iterator[LlmEndpoint]:
    if args.llm == "scripted":
        with FakeOpenAI(responder=scripted_deploybot) as fake:
            yield LlmEndpoint(
                fake.base_url,
                fake.model,
                output_mode="json_object",
                description="a scripted fake model speaking the OpenAI protocol on loopback",
                kind="scripted",
            )
        return
    with open_llm(args.llm, port=args.llm_port, say=out.say) as llm:
        if llm.kind == "provider":
            check_llm(llm)
        yield llm


def scripted_deploybot(request: dict[str, Any]) -> Answer:
    """deploybot's happy path, decided from the thread the model is shown (as a model would)."""
    thread = str(request["messages"][-1]["content"])
    if "<deploy_backend_result>" in thread:
        # The result leaves out what its call said: the tag is in the call's block.
        deployed = _first(r"<deploy_backend>\ntag: (\S+)", thread) or "the requested tag"
        return _intent({"intent": "done_for_now", "message": f"Deployed backend {deployed} to production."})
    if re.search(r"<approval>\s*approved: false", thread):
        return _intent({"intent": "done_for_now", "message": "Understood: I did not deploy anything."})
    # The tags are a table (a header of column names, a row per tag): the first cell of the first row.
    tag = _first(r"<list_git_tags_result>\ntags: name [^\n]*\n\s*([^\s|]+)", thread)
    if tag is not None:
        return _intent({"intent": "deploy_backend", "tag": tag, "environment": "production"})
    return _intent({"intent": "list_git_tags"})


def _first(pattern: str, text: str) -> str | None:
    found = re.search(pattern, text, re.DOTALL)
    return found.group(1) if found else None


def _intent(intent: dict[str, Any]) -> Answer:
    return Answer(json.dumps(intent))


class Terminal:
    def say(self, text: str = "", *, err: bool = False) -> None:
        print(text, file=sys.stderr if err else sys.stdout, flush=True)

    def ask(self, prompt: str) -> str | None:
        try:
            return input(prompt).strip()
        except EOFError:
            return None


@dataclass
class Outcome:
    ended: str = "running"
    detail: str = ""
    canned_replies: int = 0
    events: list[Event] = field(default_factory=list)


class Demo:
    def __init__(
        self, llm: LlmEndpoint, message: str, automatic: str | None, timeout: float, out: Terminal
    ) -> None:
        """``automatic`` says why answers are automatic (``--yes``, no terminal); None asks the person."""
        self.llm = llm
        self.message = message
        self.automatic = automatic
        self.interactive = automatic is None
        self.timeout = timeout
        self.out = out
        self.slack_calls: queue.Queue[SlackCall] = queue.Queue()
        self.slack_count = 0
        self.posted_since_answer = 0

    def run(self) -> int:
        self.out.say(
            "Starting the local stack: moto server + template.yaml's resources, the handlers, API gateway..."
        )
        started = time.monotonic()
        # The handlers' own logs stay quiet: everything they do shows up as events and messages here.
        with (
            LocalStack(self.llm, log_level="ERROR", on_slack=self.slack_calls.put) as stack,
            local_console(stack.api_url, self.llm.output_mode) as console_url,
        ):
            self.out.say(f"  ready in {time.monotonic() - started:.1f} s")
            self.out.say(f"  API gateway {stack.api_url}   moto server {stack.moto_url}")
            self.out.say(f"  console {console_url}  (watch the thread there while the demo runs)")
            self.out.say(f"  LLM: {self.llm.description}")
            self.out.say("")
            api = ThreadsApi(stack.api_url)
            try:
                return self._converse(stack, api)
            finally:
                api.close()

    def _converse(self, stack: LocalStack, api: ThreadsApi) -> int:
        user = stack.slack_user
        self.out.say(f"[slack] {user.user} in #{user.channel}: @{AGENT} {self.message}")
        launched_at = time.monotonic()
        response, _ts = user.mention(self.message)
        self.out.say(f"    (a signed app_mention -> POST /slack/events: {response.status_code})")
        if response.status_code != 200:
            raise DemoFailed(
                f"the Slack function refused the mention: {response.status_code} {response.text}"
            )
        thread_id = self._thread_of_the_mention(api)
        self.out.say(f"thread {thread_id}")
        self.out.say("")
        outcome = Outcome()
        after = -1
        deadline = launched_at + self.timeout
        while outcome.ended == "running":
            after, status = self._watch(api, thread_id, after, launched_at, deadline, outcome)
            self._show_slack(wait=True)
            self._decide(api, thread_id, status, outcome)
        self._show_slack(wait=False)
        self._summary(stack, thread_id, outcome, time.monotonic() - launched_at)
        return 0

    def _thread_of_the_mention(self, api: ThreadsApi) -> str:
        # The stack is new: the one Slack thread in it is the one the mention launched.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            slack_threads = [summary for summary in api.list_threads() if summary["channel"] == "slack"]
            if slack_threads:
                return str(slack_threads[0]["thread_id"])
            time.sleep(_POLL_SECONDS)
        raise DemoFailed("the mention was accepted but no thread appeared within 30 s")

    def _watch(
        self,
        api: ThreadsApi,
        thread_id: str,
        after: int,
        launched_at: float,
        deadline: float,
        outcome: Outcome,
    ) -> tuple[int, ThreadStatus]:
        """Print events as they land until the thread waits for someone or ends."""
        quiet_since, hinted = time.monotonic(), False
        while True:
            status = ThreadStatus(api.get(thread_id)["status"])
            for item in api.events(thread_id, after):
                self._print_event(item, launched_at)
                outcome.events.append(item.event)
                after = item.seq
                quiet_since = time.monotonic()
                _refuse_a_rejected_key(item.event)
            self._show_slack(wait=False)
            if not status.is_runnable:
                return after, status
            if not hinted and time.monotonic() - quiet_since > _QUIET_HINT_SECONDS:
                hinted = True
                self.out.say(
                    f"           (the model is thinking: {self.llm.description}; on a CPU that takes a while)"
                )
            if time.monotonic() > deadline:
                raise DemoFailed(
                    f"the agent neither paused nor finished within {self.timeout:.0f} s "
                    "(raise --timeout for a slow model)"
                )
            time.sleep(_POLL_SECONDS)

    def _print_event(self, item: SequencedEvent, launched_at: float) -> None:
        elapsed = f"+{time.monotonic() - launched_at:.1f}s"
        self.out.say(f"  {elapsed:>7} {event_line(item).strip()}")

    def _show_slack(self, *, wait: bool) -> None:
        """Print what Slack would have shown; with ``wait``, give the message this pause sends (the
        approval request, the question, the final reply) a moment to arrive if it has not yet."""
        deadline = time.monotonic() + (_SLACK_GRACE_SECONDS if wait else 0.0)
        while True:
            pending = wait and self.posted_since_answer == 0
            timeout = max(0.0, deadline - time.monotonic()) if pending else 0.0
            try:
                call = self.slack_calls.get(timeout=timeout) if timeout else self.slack_calls.get_nowait()
            except queue.Empty:
                return
            if call.method == "chat.postMessage":
                self.slack_count += 1
                self.posted_since_answer += 1
            self.out.say(render_slack(call))

    # --- answering the agent ---------------------------------------------------------------------

    def _decide(self, api: ThreadsApi, thread_id: str, status: ThreadStatus, outcome: Outcome) -> None:
        last = outcome.events[-1] if outcome.events else None
        match status, last:
            case ThreadStatus.DONE, Done(data=data):
                outcome.ended, outcome.detail = "done", data.message
            case ThreadStatus.CANCELLED, _:
                outcome.ended = "cancelled"
            case ThreadStatus.AWAITING_APPROVAL, ApprovalRequested(data=data):
                self._approve(api, thread_id, data.intent, data.arguments, outcome)
            case ThreadStatus.AWAITING_HUMAN, HumanRequest() | Escalation():
                self._answer(api, thread_id, last, outcome)
            case _:
                outcome.ended, outcome.detail = (
                    "waiting",
                    f"the thread waits ({status.value}); the demo stops here",
                )

    def _approve(
        self, api: ThreadsApi, thread_id: str, intent: str, arguments: dict[str, Any], outcome: Outcome
    ) -> None:
        call = f"{intent}({format_arguments(arguments)})"
        self.out.say("")
        self.out.say(f"{AGENT} asks for approval to run {call}")
        approved, comment = True, ""
        if self.interactive:
            answer = self._prompt("Approve? [y]es / [n]o: ", lambda text: text.lower()[:1] in ("y", "n"))
            if answer is None:
                outcome.ended, outcome.detail = "stopped", "no answer given"
                return
            approved = answer.lower().startswith("y")
            if not approved:
                comment = self.out.ask("Why not (optional, the agent reads it)? ") or ""
        else:
            self.out.say(f"  {self.automatic}: approving automatically")
        reply = {"kind": "approval", "approved": approved, "comment": comment}
        self._send(api, thread_id, reply)

    def _answer(self, api: ThreadsApi, thread_id: str, last: Event, outcome: Outcome) -> None:
        self.out.say("")
        if isinstance(last, Escalation):
            self.out.say(f"{AGENT} ESCALATED to a person ({last.data.reason}): {last.data.message}")
            self.out.say(
                "  (its step or error budget ran out, or a wait failed: it stopped instead of looping)"
            )
        elif isinstance(last, HumanRequest):
            self.out.say(f"{AGENT} asks: {last.data.question}")
            for number, choice in enumerate(last.data.choices, start=1):
                self.out.say(f"  {number}. {choice}")
        if self.interactive:
            text = self._prompt("Your answer (empty to stop the demo): ", lambda _text: True)
            if not text:
                outcome.ended = "escalated" if isinstance(last, Escalation) else "question"
                outcome.detail = "left unanswered"
                return
            if isinstance(last, HumanRequest) and text.isdigit() and 0 < int(text) <= len(last.data.choices):
                text = last.data.choices[int(text) - 1]
        elif outcome.canned_replies == 0:
            choices = last.data.choices if isinstance(last, HumanRequest) else []
            text = choices[0] if choices else CANNED_ANSWER
            outcome.canned_replies += 1
            self.out.say(f'  {self.automatic}: answering once with "{text}"')
        else:
            outcome.ended = "escalated" if isinstance(last, Escalation) else "question"
            outcome.detail = (
                "the agent needed a person again after the canned answer; a person takes over here"
            )
            return
        self._send(api, thread_id, {"kind": "response", "text": text})

    def _prompt(self, prompt: str, valid: Callable[[str], bool]) -> str | None:
        while True:
            answer = self.out.ask(prompt)
            if answer is None or valid(answer):
                return answer

    def _send(self, api: ThreadsApi, thread_id: str, reply: dict[str, Any]) -> None:
        self.posted_since_answer = 0
        status = api.respond(thread_id, reply)
        self.out.say(f"  -> POST /threads/{thread_id}/responses {json.dumps(reply)}: accepted ({status})")
        self.out.say("")

    # --- the end -----------------------------------------------------------------------------------

    def _summary(self, stack: LocalStack, thread_id: str, outcome: Outcome, elapsed: float) -> None:
        events = outcome.events
        agent = runtime.current().registry.get(AGENT)
        model_steps = sum(state.is_model_step(event) for event in events)
        tool_runs = sum(isinstance(event, ToolResult) for event in events)
        errors = [event for event in events if isinstance(event, Error)]
        self.out.say("")
        self.out.say("Summary")
        self.out.say(f"  how it ended   {_ending(outcome)}")
        self.out.say(
            f"  steps          {_count(model_steps, 'model decision')}, {_count(tool_runs, 'tool run')}, "
            f"{_count(len(errors), 'error')} "
            f"(budgets: {agent.max_steps} steps per turn, {agent.max_consecutive_errors} errors in a row)"
        )
        self.out.say(f"  tokens         {state.total_tokens(events):,}")
        self.out.say(f"  cost           {_cost_line(events)}")
        self.out.say(f"  elapsed        {elapsed:.1f} s")
        for name, status in _executions(stack):
            paused = " (paused on its task token, waiting for a person)" if status == "RUNNING" else ""
            self.out.say(f"  Step Functions execution {name}: {status}{paused}")
        for deploy in httpx.get(f"{stack.services_url}/deploys", timeout=10).json()["deploys"]:
            self.out.say(
                f"  deployment service: {deploy['deployment_id']} {deploy['service']} {deploy['tag']} "
                f"to {deploy['environment']} ({deploy['status']})"
            )
        self.out.say(
            f"  Slack          {_count(self.slack_count, 'message')} posted in the thread (shown above)"
        )
        if errors:
            self.out.say(f"  last error     {errors[-1].data.message}")
        if outcome.ended == "escalated":
            self.out.say("")
            self.out.say(
                "The budgets did their job: the run stopped and handed over to a person instead of wandering."
            )
            if self.llm.kind == "embedded":
                self.out.say("SmolLM2-135M is tiny; try --llm scripted, or a stronger model with --llm URL.")


def _refuse_a_rejected_key(event: Event) -> None:
    """A provider that refuses the key will refuse every call: say so now, not after the budgets."""
    if (
        isinstance(event, Error)
        and event.data.source == "llm"
        and "rejected the API key" in event.data.message
    ):
        raise DemoFailed(f"the language model cannot be used: {event.data.message}")


def _count(number: int, thing: str) -> str:
    return f"{number} {thing}{'' if number == 1 else 's'}"


def _ending(outcome: Outcome) -> str:
    match outcome.ended:
        case "done":
            return f'done: "{outcome.detail}"'
        case "escalated":
            return f"ESCALATED to a person ({outcome.detail})"
        case "question":
            return f"the agent asked a person ({outcome.detail})"
    return f"{outcome.ended}{': ' + outcome.detail if outcome.detail else ''}"


def _executions(stack: LocalStack) -> list[tuple[str, str]]:
    sfn = boto3.client("stepfunctions")
    found = sfn.list_executions(stateMachineArn=stack.state_machine_arn)["executions"]
    return [(execution["name"], execution["status"]) for execution in reversed(found)]


def _cost_line(events: Sequence[Event]) -> str:
    model = runtime.current().settings(PricingSettings).model
    price = pricing.price_for(model)
    if price is None:
        return f"unknown: {model!r} is not in the price table ({pricing.PRICES_SOURCE})"
    cost = pricing.format_usd(pricing.cost_of(events, price))
    return f"{cost} at {model}'s prices ({pricing.PRICES_SOURCE}, read {pricing.PRICES_READ_ON})"
