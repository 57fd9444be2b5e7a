"""Own your control flow (factor 8) with a stateless reducer (factor 12).

``step(agent, thread, ports)`` looks at where the thread stands and makes exactly one move: ask
the model once, or execute one tool call, or escalate. It returns the new events and performs no
storage I/O, so a caller can persist each move before making the next; a crash between moves
repeats at most the one move, and a repeated tool call carries the same idempotency key.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from . import control, pricing, state
from .agent import Agent
from .errors import LlmError
from .events import (
    ApprovalRequested,
    ApprovalRequestedData,
    Done,
    DoneData,
    Error,
    ErrorData,
    Escalation,
    EscalationData,
    Event,
    HumanRequest,
    HumanRequestData,
    Thread,
    ToolCall,
    ToolCallData,
    ToolDispatched,
    ToolDispatchedData,
    ToolResult,
    ToolResultData,
    UserMessage,
)
from .ports import ModelReply, Ports
from .state import ThreadStatus
from .tools import DoneForNow, Intent, RequestHumanInput, ToolContext

MAX_ERROR_CHARS = 600


class Move(StrEnum):
    """What the loop does next with a thread, in the order `next_move` checks for it."""

    RUN_TOOL = "run_tool"
    NONE = "none"  # waiting for someone, or finished
    COMPLETE = "complete"  # the last result ends the turn with a done message templated by code
    PREFETCH = "prefetch"
    ESCALATE_ERRORS = "escalate_errors"
    ESCALATE_STEPS = "escalate_steps"
    ASK_MODEL = "ask_model"


def next_move(agent: Agent, thread: Thread) -> Move:
    """The one place that decides the loop's order; `step` makes the move, evals ask where the
    model would be consulted. A prefetch hook only names calls, so asking it twice is harmless."""
    events = thread.events
    current = state.status(events)
    if current in (ThreadStatus.TOOL_PENDING, ThreadStatus.CANCELLING):
        return Move.RUN_TOOL
    if current is not ThreadStatus.READY:
        return Move.NONE
    if completing_call(agent, thread) is not None:
        return Move.COMPLETE
    # A prefetch hook may find nothing worth fetching; then the model is asked.
    if agent.prefetch is not None and _never_acted(thread) and agent.prefetch(thread):
        return Move.PREFETCH
    if state.consecutive_errors(events) >= agent.max_consecutive_errors:
        return Move.ESCALATE_ERRORS
    if state.steps_since_launch(events) >= agent.max_steps:
        return Move.ESCALATE_STEPS
    return Move.ASK_MODEL


def step(agent: Agent, thread: Thread, ports: Ports) -> list[Event]:
    """One move of the loop. Returns [] when the thread is waiting or finished."""
    match next_move(agent, thread):
        case Move.RUN_TOOL:
            call = state.pending_tool_call(thread.events)
            assert call is not None
            return [_execute(agent, thread, call, ports)]
        case Move.NONE:
            return []
        case Move.COMPLETE:
            return [_complete(agent, thread, ports)]
        case Move.PREFETCH:
            return _prefetch(agent, thread, ports)
        case Move.ESCALATE_ERRORS:
            return [_escalate(ports, "error_budget", f"{agent.max_consecutive_errors} errors in a row")]
        case Move.ESCALATE_STEPS:
            return [_escalate(ports, "step_budget", f"step budget of {agent.max_steps} spent")]
    # The cost budget: checked apart from `next_move`, since only the ports know the model's price.
    if spent := pricing.cost_budget_spent(list(thread.events), ports.price, agent.max_cost_usd):
        return [_escalate(ports, "cost_budget", spent)]
    return _decide(agent, thread, ports)


def run_until_paused(
    agent: Agent,
    thread: Thread,
    ports: Ports,
    persist: Callable[[Thread, list[Event]], None] | None = None,
) -> Thread:
    """Step until the thread waits or ends, persisting each move before the next one."""
    while True:
        new_events = step(agent, thread, ports)
        if not new_events:
            return thread
        if persist is not None:
            persist(thread, new_events)
        thread = thread.extended(new_events)


# --- the moves --------------------------------------------------------------------------------


def _decide(agent: Agent, thread: Thread, ports: Ports) -> list[Event]:
    now = ports.clock()
    # Code decides what the model may choose; the model decides among that, never more.
    offer = control.offer(agent, thread)
    try:
        reply = ports.llm.decide(ports.prompts.render(agent, thread, offer), offer.intents)
    except LlmError as error:
        return [Error(at=now, data=ErrorData(source="llm", message=_compact(error)))]
    try:
        intent = offer.check(reply.content)
    except control.InvalidAnswer as error:
        # Not offered, invalid, outside a grounded enum or a repeated lookup: nothing runs, and the
        # error counts toward the error budget like any other.
        return [Error(at=now, usage=reply.usage, data=ErrorData(source="llm", message=_compact(str(error))))]
    return _act_on(agent, thread, intent, reply, ports)


def completing_call(agent: Agent, thread: Thread) -> ToolCall | None:
    """The call whose successful result, the thread's last event, ends the turn (opt-in per tool)."""
    last = thread.events[-1] if thread.events else None
    if not isinstance(last, ToolResult):
        return None
    tool = agent.tool(last.data.intent)
    if tool is None or tool.completes is None:
        return None
    call = next(
        (
            event
            for event in reversed(thread.events)
            if isinstance(event, ToolCall) and event.data.call_id == last.data.call_id
        ),
        None,
    )
    # Only a call the model chose completes its turn: a prefetched one is context for the first decision.
    return call if call is not None and call.data.origin == "model" else None


def _complete(agent: Agent, thread: Thread, ports: Ports) -> Done:
    call = completing_call(agent, thread)
    result = thread.events[-1]
    assert call is not None and isinstance(result, ToolResult)
    tool = agent.tool(call.data.intent)
    assert tool is not None and tool.completes is not None
    validated = tool.model.model_validate({"intent": tool.name, **call.data.arguments})
    message = tool.completes(validated, result.data.result)
    return Done(at=ports.clock(), data=DoneData(message=message, origin="completion"))


def _act_on(agent: Agent, thread: Thread, intent: Intent, reply: ModelReply, ports: Ports) -> list[Event]:
    now = ports.clock()
    match intent:
        case DoneForNow(message=message):
            return [Done(at=now, usage=reply.usage, data=DoneData(message=message))]
        case RequestHumanInput():
            data = HumanRequestData.model_validate(intent.model_dump(exclude={"intent"}))
            return [HumanRequest(at=now, usage=reply.usage, data=data)]
    tool = agent.tool(intent.intent)
    assert tool is not None, "the union only admits the agent's own intents"
    # The call id is the event's position: a retried move gets the same id, hence the same
    # idempotency key for the executor.
    call_id = f"call-{len(thread.events)}"
    arguments = intent.model_dump(mode="json", exclude={"intent"})
    call = ToolCall(
        at=now, usage=reply.usage, data=ToolCallData(call_id=call_id, intent=tool.name, arguments=arguments)
    )
    # The approval gate: deterministic policy code, evaluated on the validated call.
    if tool.needs_approval(intent):
        request = ApprovalRequestedData(call_id=call_id, intent=tool.name, arguments=arguments)
        return [call, ApprovalRequested(at=now, data=request)]
    # The call is recorded before it runs (next move), so a crash can repeat it only with its key.
    return [call]


def _execute(
    agent: Agent, thread: Thread, call: ToolCall, ports: Ports
) -> ToolResult | ToolDispatched | Error:
    """Run a sync tool to its result, or dispatch an async one whose result comes by callback."""
    tool = agent.tool(call.data.intent)
    error_data: ErrorData
    if tool is None:
        error_data = ErrorData(
            source="tool", message=f"unknown tool {call.data.intent}", call_id=call.data.call_id
        )
        return Error(at=ports.clock(), data=error_data)
    try:
        validated = tool.model.model_validate({"intent": tool.name, **call.data.arguments})
        result = tool.execute(validated, ToolContext(thread_id=thread.id, call_id=call.data.call_id))
    except Exception as error:
        error_data = ErrorData(source="tool", message=_compact(error), call_id=call.data.call_id)
        return Error(at=ports.clock(), data=error_data)
    if tool.mode == "async":
        return ToolDispatched(
            at=ports.clock(), data=ToolDispatchedData(call_id=call.data.call_id, intent=tool.name)
        )
    return ToolResult(
        at=ports.clock(),
        data=ToolResultData(call_id=call.data.call_id, intent=tool.name, result=result),
    )


def _prefetch(agent: Agent, thread: Thread, ports: Ports) -> list[Event]:
    assert agent.prefetch is not None
    new_events: list[Event] = []
    for intent in agent.prefetch(thread):
        tool = agent.tool(intent.intent)
        if tool is None:
            raise ValueError(f"{agent.name}.prefetch returned {intent.intent!r}, which is not its tool")
        call_id = f"call-{len(thread.events) + len(new_events)}"
        arguments = intent.model_dump(mode="json", exclude={"intent"})
        call_data = ToolCallData(call_id=call_id, intent=tool.name, arguments=arguments, origin="prefetch")
        call = ToolCall(at=ports.clock(), data=call_data)
        new_events += [call, _execute(agent, thread.extended(new_events), call, ports)]
    return new_events


def _never_acted(thread: Thread) -> bool:
    return all(isinstance(event, UserMessage) for event in thread.events)


def _escalate(ports: Ports, reason: str, message: str) -> Escalation:
    return Escalation(
        at=ports.clock(), data=EscalationData.model_validate({"reason": reason, "message": message})
    )


def _compact(error: BaseException | str) -> str:
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + "…"
