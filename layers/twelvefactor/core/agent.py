"""Agent definitions and the registry (factors 10 and 13)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from functools import cached_property

from .channels import ChannelRef
from .context import BodyRenderer, ContextPolicy, ContextRenderer
from .errors import UnknownAgent
from .events import Thread
from .tools import BUILTIN_INTENTS, Intent, IntentSet, Tool

# Deterministic calls to run before the model is first asked (factor 13: pre-fetch context).
Prefetch = Callable[[Thread], Sequence[Intent]]


@dataclass(frozen=True)
class Agent:
    """A small, focused agent: a prompt, its tools and its policy."""

    name: str
    tools: tuple[Tool, ...]
    description: str = ""
    max_steps: int = 20
    max_consecutive_errors: int = 3
    # Dollars the model may cost between two messages from a person, priced by `pricing`; then a
    # person is asked, as when the step budget is spent. None: no cost budget.
    max_cost_usd: Decimal | None = Decimal("1.00")
    prefetch: Prefetch | None = None
    # Where the agent contacts a person when its thread was launched with no one to reply to (an
    # EventBridge event): e.g. the on-call team's Slack channel.
    human_channel: ChannelRef | None = None
    # An agent may show its own events differently (escaping still applies); keyed by tag or type.
    renderers: Mapping[str, BodyRenderer] = field(default_factory=dict)
    # What older events the model still needs (applied first); then the budget, an upper bound on
    # the rendered thread beyond which older middle events are elided.
    context_policy: ContextPolicy = field(default_factory=ContextPolicy)
    context_budget_chars: int = 24_000
    max_value_chars: int = 2_000
    # A user's message or a person's answer shows up to this much (its beginning and end) in the context.
    max_message_chars: int = 8_000

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.max_consecutive_errors < 1:
            raise ValueError("max_steps and max_consecutive_errors must be at least 1")
        builtin = {model.model_fields["intent"].default for model in BUILTIN_INTENTS}
        clash = builtin & {tool.name for tool in self.tools}
        if clash:
            raise ValueError(f"tools may not reuse built-in intent names: {sorted(clash)}")
        for tool in self.tools:
            _check_policy(tool, {other.name for other in self.tools})

    @property
    def template_name(self) -> str:
        return f"{self.name}.jinja"

    @cached_property
    def intents(self) -> IntentSet:
        return IntentSet.of((*(tool.model for tool in self.tools), *BUILTIN_INTENTS))

    @cached_property
    def context(self) -> ContextRenderer:
        return ContextRenderer(
            renderers=self.renderers,
            max_value_chars=self.max_value_chars,
            max_message_chars=self.max_message_chars,
            budget_chars=self.context_budget_chars,
            policy=self.effective_context_policy,
        )

    @cached_property
    def effective_context_policy(self) -> ContextPolicy:
        """The agent's context policy; only its read-only tools' results are collapsible unless the
        policy names the intents itself."""
        if self.context_policy.collapsible_intents is not None:
            return self.context_policy
        lookups = frozenset(tool.name for tool in self.tools if tool.read_only)
        return replace(self.context_policy, collapsible_intents=lookups)

    def tool(self, name: str) -> Tool | None:
        return next((tool for tool in self.tools if tool.name == name), None)


def _check_policy(tool: Tool, names: set[str]) -> None:
    """A policy naming a tool the agent lacks, or a field its model lacks, fails at import, not at
    the first decision that needs it."""
    unknown = sorted({*tool.requires, *(g.source for g in tool.grounded.values())} - names)
    if unknown:
        raise ValueError(f"{tool.name}: requires or grounds on tools the agent lacks: {unknown}")
    missing = sorted(set(tool.grounded) - set(tool.model.model_fields) | ({"intent"} & set(tool.grounded)))
    if missing:
        raise ValueError(f"{tool.name}: grounded fields that are not fields of its model: {missing}")
    if tool.completes is not None and tool.mode != "sync":
        raise ValueError(f"{tool.name}: only a sync tool's result can complete the turn")


class AgentRegistry:
    def __init__(self, agents: Iterable[Agent]) -> None:
        self._agents: dict[str, Agent] = {}
        for agent in agents:
            if agent.name in self._agents:
                raise ValueError(f"two agents named {agent.name!r}")
            self._agents[agent.name] = agent

    def get(self, name: str) -> Agent:
        try:
            return self._agents[name]
        except KeyError:
            raise UnknownAgent(name) from None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._agents)

    def __contains__(self, name: object) -> bool:
        return name in self._agents
