"""The composition root: every handler's dependencies, and the few things every trigger does.

A function builds what it touches on first use and keeps it for the container's life (boto3
clients, the store, the agents); nothing is built at import, so a cold start pays only for its own
path. The LLM adapter is imported only when the reducer first asks the model: the trigger
functions never load it.

The application services (`launch`, `resume`, `callback`, `cancel`, `follow_up`, `notify`,
`reduce`) are the one place where a trigger's input becomes events plus a workflow call, so
Slack, email, the API and EventBridge behave the same way (factor 11).

Tests and ``twelvefactor invoke`` swap dependencies with `reset(llm=..., clock=...)`.
"""

# Imports inside the builders are the point: a function loads only the adapters it uses.
# ruff: noqa: PLC0415

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from aws_lambda_powertools import Logger
from pydantic import BaseModel, SecretStr, ValidationError

from .adapters import jitter
from .adapters.ports import (
    ConcurrentAppend,
    PendingWait,
    TaskTokenRefused,
    ThreadExists,
    ThreadMeta,
    ThreadStore,
    Workflow,
)
from .adapters.webhook import UnknownCallback
from .core import pricing, reducer, replies, state
from .core.agent import AgentRegistry
from .core.channels import ChannelRef, EmailRef, NoReplyRef, Notification, SlackRef, notification_for
from .core.errors import NotWaiting
from .core.events import Channel, Done, Escalation, EscalationData, Event, Thread, ToolCall
from .core.ports import LanguageModel, Ports, PromptRenderer, utc_now
from .core.pricing import ModelPrice
from .core.state import ThreadStatus
from .observability import TimedModel
from .settings import (
    AgentSettings,
    EmailSettings,
    IdempotencySettings,
    LlmSettings,
    PricingSettings,
    SlackSettings,
    StoreSettings,
    WaitSettings,
    WebhookSettings,
    WorkflowSettings,
)

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, IdempotencyConfig

    from .adapters.ports import HumanChannel
    from .adapters.slack_channel import SlackChannel
    from .application import Application

logger = Logger(child=True)

SettingsT = TypeVar("SettingsT", bound=BaseModel)
ReduceStatus = Literal["waiting", "done", "cancelled"]  # what the Choice state routes on
MAX_REDUCE_ATTEMPTS = 3
# A trigger's write that loses the race for its sequence number is decided again (see _append_decided).
MAX_APPEND_ATTEMPTS = 25
MAX_APPEND_BACKOFF_SECONDS = 0.1
MAX_CAUSE_CHARS = 300
# The task token of a wait whose execution has ended (after an escalation): answering starts a new one.
NO_EXECUTION = ""
# Step Functions' names for a wait that ran out of time (TimeoutSeconds / HeartbeatSeconds).
_TIMEOUT_ERRORS = frozenset({"States.Timeout", "States.HeartbeatTimeout"})


@dataclass(frozen=True)
class Launched:
    thread_id: str
    created: bool  # False when a repeated launch key found the thread already there


@dataclass(frozen=True)
class Resumed:
    thread_id: str
    status: ThreadStatus  # where the thread stands right after the answer was recorded


@dataclass(frozen=True)
class Reduced:
    thread_id: str
    status: ReduceStatus
    new_events: tuple[Event, ...]
    moves: int = 0  # how many times the reducer stepped (each move persisted on its own)
    # Whose thread, and the thread as it stands after the reduction: what its metrics are read from.
    agent: str = ""
    events: tuple[Event, ...] = ()
    llm_latencies_ms: tuple[float, ...] = ()  # each model call's, answered or not


class Runtime:
    """Lazily built, cached dependencies. Any of them can be passed in to replace the built one."""

    def __init__(
        self,
        *,
        store: ThreadStore | None = None,
        workflow: Workflow | None = None,
        registry: AgentRegistry | None = None,
        prompts: PromptRenderer | None = None,
        llm: LanguageModel | None = None,
        channels: dict[str, HumanChannel] | None = None,
        clock: Callable[[], datetime] = utc_now,
        session: Any = None,
    ) -> None:
        overrides: dict[str, Any] = {
            name: value
            for name, value in (
                ("store", store),
                ("workflow", workflow),
                ("registry", registry),
                ("prompts", prompts),
                ("llm", llm),
            )
            if value is not None
        }
        if session is not None:
            # A boto3 session with credentials of its own: the local stack runs each function as its role.
            overrides["_boto3"] = session
        self.__dict__.update(overrides)  # a value in __dict__ wins over the cached_property
        self._channels: dict[str, HumanChannel] = dict(channels or {})
        self.clock = clock
        self._settings: dict[type[BaseModel], BaseModel] = {}

    # --- settings and secrets ----------------------------------------------------------------

    def settings(self, kind: type[SettingsT]) -> SettingsT:
        """One settings class, read from the environment once and validated."""
        if kind not in self._settings:
            self._settings[kind] = kind()
        found = self._settings[kind]
        assert isinstance(found, kind)
        return found

    def require(self, *kinds: type[BaseModel]) -> None:
        """Validate at cold start: a missing or bad variable fails the init, not the first request."""
        for kind in kinds:
            self.settings(kind)

    def secret(self, plain: SecretStr | None, arn: str | None) -> str | None:
        """A secret from Secrets Manager when its ARN is configured (Lambda), else the plain value."""
        if arn:
            from aws_lambda_powertools.utilities.parameters import get_secret

            value = get_secret(arn, max_age=300)
            return value if isinstance(value, str) else bytes(value).decode()
        return plain.get_secret_value() if plain is not None else None

    # --- AWS clients and adapters ------------------------------------------------------------

    @cached_property
    def _boto3(self) -> Any:
        import boto3

        return boto3.session.Session()

    def client(self, service: str) -> Any:
        clients: dict[str, Any] = self.__dict__.setdefault("_clients", {})
        if service not in clients:
            config = None
            if service == "s3":
                # One S3 client per container: the store signs payload links with it (SigV4, the
                # bucket's own host), and the Email function reads raw mail with it.
                from .adapters.dynamodb_store import S3_CLIENT_CONFIG

                config = S3_CLIENT_CONFIG
            clients[service] = self._boto3.client(service, config=config)
        return clients[service]

    @cached_property
    def store(self) -> ThreadStore:
        from .adapters.dynamodb_store import DynamoThreadStore

        settings = self.settings(StoreSettings)
        table = self._boto3.resource("dynamodb").Table(settings.threads_table)
        return DynamoThreadStore(table, settings.payload_bucket, self.client("s3"), settings)

    @cached_property
    def workflow(self) -> Workflow:
        from .adapters.stepfunctions import StepFunctionsWorkflow

        return StepFunctionsWorkflow(self.client("stepfunctions"), self._state_machine_arn())

    def _state_machine_arn(self) -> str:
        """The ARN, or "" in the reducer, whose configuration does not carry it: the reducer never
        starts or cancels an execution (Notify, which may start one, is given the ARN by name, since
        a reference from a function the state machine invokes would be a CloudFormation cycle)."""
        try:
            return self.settings(WorkflowSettings).state_machine_arn
        except ValidationError:
            return ""

    @cached_property
    def idempotency_store(self) -> DynamoDBPersistenceLayer:
        from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

        return DynamoDBPersistenceLayer(
            table_name=self.settings(IdempotencySettings).idempotency_table,
            boto3_client=self.client("dynamodb"),
        )

    @cached_property
    def application(self) -> Application:
        # The application hands the framework its agents (twelvefactor.application); none is named here.
        from .application import load

        return load(self.settings(AgentSettings))

    @cached_property
    def registry(self) -> AgentRegistry:
        return self.application.build_registry()

    @cached_property
    def prompts(self) -> PromptRenderer:
        from .core.prompts import JinjaPrompts

        # The prompt words the answer for the output mode the adapter uses.
        return JinjaPrompts(self.application.prompts_dir, output_mode=self.settings(LlmSettings).output_mode)

    @cached_property
    def llm(self) -> LanguageModel:
        # Imported here so that only the reducer pays for the LLM adapter's imports (it calls
        # `preload_llm` at module init, so SnapStart's snapshot holds them).
        settings = self.settings(LlmSettings)
        if settings.provider == "bedrock":
            from .adapters.bedrock import model_from_client

            return model_from_client(self.bedrock_client, settings)
        from .adapters.llm import model_from_settings

        return model_from_settings(
            settings, api_key=self.secret(settings.api_key, settings.api_key_secret_arn)
        )

    @cached_property
    def bedrock_client(self) -> Any:
        """bedrock-runtime with botocore's retries and the LLM timeout; IAM, no key. The endpoint is
        boto3's own, or AWS_ENDPOINT_URL_BEDROCK_RUNTIME (the local stack's Converse stand-in)."""
        from .adapters.bedrock import client_config

        settings = self.settings(LlmSettings)
        config = client_config(timeout_seconds=settings.timeout_seconds, max_retries=settings.max_retries)
        return self._boto3.client("bedrock-runtime", region_name=settings.bedrock_region, config=config)

    def preload_llm(self) -> None:
        """Import the configured provider's adapter (and its SDK) and build its client now, at module
        init: SnapStart snapshots them, where a first-call import is paid again on every restore.
        Secrets are not resolved here (they stay out of the snapshot)."""
        if self.settings(LlmSettings).provider == "bedrock":
            self.bedrock_client  # noqa: B018 - building the client is the work to snapshot
        else:
            from .adapters import llm  # noqa: F401

    @property
    def ports(self) -> Ports:
        return Ports(llm=self.llm, prompts=self.prompts, clock=self.clock, price=self.price)

    @cached_property
    def price(self) -> ModelPrice | None:
        """The configured model's price (None when unknown: costs show as unknown, no cost budget)."""
        return pricing.price_for(self.settings(PricingSettings).model)

    def channel(self, kind: str) -> HumanChannel | None:
        """The channel that delivers to a ChannelRef of this kind; None for NoReplyRef."""
        if kind not in self._channels:
            built = self._build_channel(kind)
            if built is None:
                return None
            self._channels[kind] = built
        return self._channels[kind]

    def _build_channel(self, kind: str) -> HumanChannel | None:
        if kind == "slack":
            return self.slack
        if kind == "email":
            from .adapters.email_channel import EmailChannel

            return EmailChannel(self.client("sesv2"), from_address=self.settings(EmailSettings).from_address)
        if kind == "webhook":
            from .adapters.webhook_channel import WebhookChannel

            allow_loopback = self.settings(WebhookSettings).allow_loopback
            return WebhookChannel(self.webhook_secret, allow_loopback=allow_loopback)
        return None

    @cached_property
    def slack(self) -> SlackChannel | None:
        """None when no bot token is configured: such a deployment has no Slack to talk to."""
        from .adapters.slack_channel import SlackChannel

        settings = self.settings(SlackSettings)
        token = self.secret(settings.bot_token, settings.bot_token_arn)
        return SlackChannel.connect(settings, token) if token else None

    @property
    def webhook_secret(self) -> str | None:
        webhook = self.settings(WebhookSettings)
        return self.secret(webhook.secret, webhook.secret_arn)

    # --- idempotency -------------------------------------------------------------------------

    @cached_property
    def _idempotency_config(self) -> IdempotencyConfig:
        from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig

        return IdempotencyConfig(
            event_key_jmespath="key",
            payload_validation_jmespath="fingerprint",
            raise_on_no_idempotency_key=True,
        )

    def bind_invocation(self, context: Any) -> None:
        """Call at the start of each invocation that uses `once`: Powertools needs the Lambda context
        to give an in-progress record this invocation's remaining time, so a timed-out attempt's
        record expires and the source's redelivery is processed instead of refused forever."""
        self._idempotency_config.register_lambda_context(context)

    def once(self, scope: str, key: str, action: Callable[[], dict[str, Any]], fingerprint: str = "") -> Any:
        """Run ``action`` once per (scope, key); a repeat returns the first result (Powertools).

        ``fingerprint`` (e.g. a hash of the request body) turns "same key, different request" into
        an IdempotencyValidationError instead of silently answering with the first result.
        """
        from aws_lambda_powertools.utilities.idempotency import idempotent_function

        def run(request: dict[str, str]) -> dict[str, Any]:
            return action()

        guarded = idempotent_function(
            run,
            data_keyword_argument="request",
            persistence_store=self.idempotency_store,
            config=self._idempotency_config,
            key_prefix=scope,
        )
        return guarded(request={"key": key, "fingerprint": fingerprint})

    def processed(self, scope: str, key: str, fingerprint: str = "") -> bool:
        """Whether `once(scope, key, ...)` already completed: a retry can be answered without waiting."""
        from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyItemNotFoundError

        store = self.idempotency_store
        store.configure(self._idempotency_config, key_prefix=scope)
        try:
            record = store.get_record({"key": key, "fingerprint": fingerprint})
        except IdempotencyItemNotFoundError:
            return False
        return record is not None and record.status == "COMPLETED"

    # --- application services ----------------------------------------------------------------

    def launch(
        self,
        agent: str,
        text: str,
        *,
        channel: Channel,
        reply_to: ChannelRef | None = None,
        sender: str | None = None,
        launch_key: str | None = None,
    ) -> Launched:
        """Create a thread, link its channel, start its execution.

        With a ``launch_key`` (the source's own id) the thread id is derived from it, so a repeat
        finds the same thread and only re-issues the (deterministically named, idempotent) start.
        """
        launched_agent = self.registry.get(agent)  # UnknownAgent before anything is written
        reply_to = reply_to or launched_agent.human_channel or NoReplyRef()
        thread_id = _thread_id_for(launch_key)
        events = replies.launch(text, at=self.clock(), channel=channel, sender=sender)
        meta = ThreadMeta(thread_id=thread_id, agent=agent, created_at=self.clock(), channel=reply_to)
        try:
            self.store.create(meta, events)
        except ThreadExists:
            if launch_key is None:
                raise
            # A repeat of a launch that got this far before: finish it, start nothing twice.
            self.workflow.start(thread_id, 0)
            return Launched(thread_id, created=False)
        # A Slack conversation the agent opens itself has no thread yet to link.
        if isinstance(reply_to, EmailRef) or (isinstance(reply_to, SlackRef) and reply_to.thread_ts):
            self.store.link(reply_to.correlation_key, thread_id)
        self.workflow.start(thread_id, 0)
        logger.info("thread launched", extra={"thread_id": thread_id, "agent": agent, "channel": channel})
        return Launched(thread_id, created=True)

    def follow_up(self, thread_id: str, text: str, *, channel: Channel, sender: str | None) -> Resumed:
        """A new message in a known conversation: the answer to a question, or a new launch."""
        thread, events, seq = self._append_decided(
            thread_id,
            lambda thread: replies.follow_up(thread, text, at=self.clock(), channel=channel, sender=sender),
        )
        before = state.status(thread.events)
        if before.is_waiting or self.store.get_wait(thread_id) is not None:
            # (a runnable thread holding a wait: an earlier answer's hand-over failed; this one's does it)
            self._continue(thread_id, seq)
        elif before.is_final:
            # The last execution ended; a runnable thread's running execution picks the message up.
            self.workflow.start(thread_id, seq)
        elif (restart := _restart_seq(thread.events)) is not None:
            # The message that restarted an ended thread named its execution: starting that name
            # again is a no-op while it runs, and finishes a restart whose start had failed.
            self.workflow.start(thread_id, restart)
        return Resumed(thread_id, state.status(thread.extended(events).events))

    def resume(self, thread_id: str, reply: replies.ApprovalReply | replies.TextReply) -> Resumed:
        """A person's answer: NotWaiting (409) unless the thread waits for exactly that."""
        try:
            thread, events, seq = self._append_decided(
                thread_id, lambda thread: replies.respond(thread, reply, at=self.clock())
            )
        except NotWaiting:
            if (handed := self._hand_over_left(thread_id)) is None:
                raise
            return handed
        self._continue(thread_id, seq)
        return Resumed(thread_id, state.status(thread.extended(events).events))

    def callback(self, callback_id: str, payload: dict[str, Any]) -> Resumed:
        """Resolve a wait by its callback id: an async tool's result, or an answer from a webhook.

        A wait for a person takes ``{"approved", "comment"}`` or ``{"text"}``; an async tool's wait
        takes ``{"result": ...}`` (or the whole payload as the result).
        """
        wait = self.store.find_wait_by_callback(callback_id) or self._wait_for_tool_call(callback_id)
        if wait is None:
            raise UnknownCallback(f"no pending wait for callback {callback_id!r}")
        try:
            thread, events, seq = self._append_decided(
                wait.thread_id, lambda thread: self._answer(thread, wait, payload)
            )
        except NotWaiting:
            if (handed := self._hand_over_left(wait.thread_id)) is None:
                raise
            return handed
        self._continue(thread.id, seq)
        return Resumed(thread.id, state.status(thread.extended(events).events))

    def cancel(self, thread_id: str, *, by: str | None = None, reason: str = "") -> Resumed:
        """Cancel the thread. A call already cleared to run (approved, or needing no approval) is not
        abandoned halfway: its execution runs it (or finishes running it) and records its outcome,
        and only then is the thread `cancelled`; until then it is `cancelling`."""
        try:
            thread, events, seq = self._append_decided(
                thread_id, lambda thread: replies.cancel(thread, at=self.clock(), by=by, reason=reason)
            )
        except NotWaiting:
            # A repeated cancel whose first attempt failed to end the execution (the wait was put
            # back) finishes that; any other repeat is the 409 it always was.
            _meta, outline = self.store.load_outline(thread_id)
            ended = state.status(outline.events) is ThreadStatus.CANCELLED
            if not ended or self.store.get_wait(thread_id) is None:
                raise
            self._stop(thread_id)
            return Resumed(thread_id, ThreadStatus.CANCELLED)
        after = state.status(thread.extended(events).events)
        if after is ThreadStatus.CANCELLING:
            # The running execution settles the call; one that ended (a workflow failure left the
            # call unsettled) is started again for it.
            self._continue(thread_id, seq)
        else:
            self._stop(thread_id)
        logger.info("thread cancelled", extra={"thread_id": thread_id, "by": by, "status": after.value})
        return Resumed(thread_id, after)

    def _stop(self, thread_id: str) -> None:
        """Stop a cancelled thread's execution and end its wait, then delete the wait. The wait is
        deleted only once both are done, so that should Step Functions (or the store) fail, the
        caller's retry still finds it and finishes the job. (It was taken first and put back on a
        failure: a put-back that failed too lost the task token, and the execution stayed paused.)
        Ending a wait twice is harmless: a cancelled thread's reducer ends the execution, and a
        used token is refused and ignored."""
        wait = self.store.get_wait(thread_id)
        self.workflow.cancel(thread_id)
        if wait is not None:
            self._end_wait(thread_id, wait.task_token)
            self.store.clear_wait(thread_id)

    def _end_wait(self, thread_id: str, task_token: str) -> None:
        """End a cancelled thread's paused execution through its task token. On AWS StopExecution
        already did, and the token is refused; moto's StopExecution leaves an execution paused on a
        token running, and so would a stop that raced the pause. Resumed, the execution's reducer
        finds the thread cancelled and the state machine finishes (SendTaskFailure would take the
        Catch, a longer way to the same end)."""
        if task_token == NO_EXECUTION:
            return
        try:
            self.workflow.resume(task_token, {"thread_id": thread_id})
        except TaskTokenRefused as error:
            logger.info(
                "cancelled thread's wait already ended", extra={"thread_id": thread_id, "error": str(error)}
            )

    def reduce(self, thread_id: str, *, execution: str | None = None) -> Reduced:
        """The reducer Lambda: step until the thread waits or ends, persisting every move.

        A move that loses the race for its sequence number (a follow-up or a cancel arrived
        meanwhile) is dropped and the loop goes on from the thread as it now stands.
        ``execution`` is the calling execution's name: one whose turn already ended with a done
        (a retried Reduce that outlived it, after a new message started the next execution) stops
        there, so that two executions never run one thread, each saving a wait for its own token.
        """
        moves: list[list[Event]] = []
        model = TimedModel(self.llm)  # each call's latency, for the handler's metrics
        for _attempt in range(MAX_REDUCE_ATTEMPTS - 1):
            try:
                return self._reduce_once(thread_id, moves, model, execution)
            except ConcurrentAppend:
                logger.info("thread moved on during a move; reloading", extra={"thread_id": thread_id})
        return self._reduce_once(thread_id, moves, model, execution)

    def _reduce_once(
        self, thread_id: str, moves: list[list[Event]], model: TimedModel, execution: str | None = None
    ) -> Reduced:
        meta, thread = self.store.load(thread_id)
        if _run_ended(thread.events, execution):
            logger.info("this execution's turn has ended; stopping", extra={"thread_id": thread_id})
            new = tuple(event for move in moves for event in move)
            return Reduced(thread_id, "done", new, moves=len(moves), agent=meta.agent, events=thread.events)
        agent = self.registry.get(meta.agent)
        last_seq = thread.last_seq

        def persist(_thread: Thread, events: list[Event]) -> None:
            nonlocal last_seq
            try:
                last_seq = self.store.append(thread_id, events, expected_last_seq=last_seq)
            except ConcurrentAppend:
                # The move lost its sequence number, but an executor call in it has run: its outcome
                # is recorded after whatever landed meanwhile (a cancel, a message), never dropped.
                recorded = self._record_calls_that_ran(thread_id, events)
                if recorded:
                    moves.append(recorded)
                raise
            moves.append(events)

        ports = Ports(llm=model, prompts=self.prompts, clock=self.clock, price=self.price)
        finished = reducer.run_until_paused(agent, thread, ports, persist)
        status = _reduce_status(state.status(finished.events))
        new_events = tuple(event for move in moves for event in move)
        if status == "done" and any(isinstance(event, Done) for event in new_events):
            self._tell_done(meta, finished)
        return Reduced(
            thread_id,
            status,
            new_events,
            moves=len(moves),
            agent=meta.agent,
            events=finished.events,
            llm_latencies_ms=tuple(model.latencies_ms),
        )

    def _record_calls_that_ran(self, thread_id: str, move: list[Event]) -> list[Event]:
        """Append, at the thread's current end, the calls and outcomes of a move whose executors ran
        and which the thread does not hold yet (a concurrent execution may have recorded the same
        call under the same id). A move with no executor outcome (a model decision) is not kept:
        it had no side effect, and it is decided again on the thread as it now stands."""
        if not any(state.outcome_call_id(event) for event in move):
            return []
        for attempt in range(MAX_APPEND_ATTEMPTS):
            _meta, thread = self.store.load_outline(thread_id)
            calls = {event.data.call_id for event in thread.events if isinstance(event, ToolCall)}
            outcomes = {state.outcome_call_id(event) for event in thread.events} - {None}
            missing = [
                event
                for event in move
                if (isinstance(event, ToolCall) and event.data.call_id not in calls)
                or ((call_id := state.outcome_call_id(event)) is not None and call_id not in outcomes)
            ]
            if not missing:
                return []
            try:
                self.store.append(thread_id, missing, expected_last_seq=thread.last_seq)
            except ConcurrentAppend:
                if attempt == MAX_APPEND_ATTEMPTS - 1:
                    raise
                time.sleep(jitter.full_jitter(min(MAX_APPEND_BACKOFF_SECONDS, 0.005 * 2**attempt)))
                continue
            logger.info("recorded a call's outcome after a concurrent write", extra={"thread_id": thread_id})
            return missing
        raise AssertionError("unreachable")  # the loop returns or raises

    def _tell_done(self, meta: ThreadMeta, thread: Thread) -> None:
        """Factor 11: the final message goes back on the channel the thread came from."""
        notification = notification_for(thread.id, thread.events)
        if notification is not None:
            self._deliver_quietly(meta, notification)

    def _deliver_quietly(self, meta: ThreadMeta, notification: Notification) -> None:
        """For messages sent after the thread is saved: a failed send must not re-run the work."""
        try:
            self.deliver(meta.channel or NoReplyRef(), notification)
        except Exception:
            logger.exception(
                "could not deliver", extra={"thread_id": meta.thread_id, "kind": notification.kind}
            )

    def record_failure(
        self, thread_id: str, error: dict[str, Any], *, execution: str | None = None
    ) -> Reduced:
        """A task failed or a wait timed out (the state machine's Catch): escalate, never fail silently.

        The state machine ends the execution after this, so the person is told here, and the wait
        saved for them has no task token: whoever answers it starts a new execution.
        """
        meta, thread = self.store.load(thread_id)
        current = state.status(thread.events)
        if current.is_final:
            return Reduced(thread_id, _reduce_status(current), (), agent=meta.agent, events=thread.events)
        if _run_ended(thread.events, execution):
            # This execution's turn ended with its done; a later message's execution runs the
            # thread now, and this failure (of a retry that outlived its turn) is not the thread's.
            return Reduced(thread_id, "done", (), agent=meta.agent, events=thread.events)
        error_name = str(error.get("Error") or "unknown")
        cause = " ".join(str(error.get("Cause") or "").split())[:MAX_CAUSE_CHARS]
        data = EscalationData(
            reason="wait_timeout" if error_name in _TIMEOUT_ERRORS else "workflow_failure",
            message=f"{error_name}: {cause}" if cause else error_name,
        )
        last = thread.events[-1] if thread.events else None
        new_events: tuple[Event, ...] = ()
        if not (isinstance(last, Escalation) and last.data == data):  # a retried Catch adds nothing
            new_events = (Escalation(at=self.clock(), data=data),)
            self.store.append(thread_id, list(new_events), expected_last_seq=thread.last_seq)
            thread = thread.extended(new_events)
        after = state.status(thread.events)
        if after.is_final:  # a cancel waited for a call the failure made the thread give up on
            return Reduced(thread_id, _reduce_status(after), new_events)
        wait = self._new_wait(thread_id, task_token=NO_EXECUTION, kind="escalation")
        self.store.save_wait(wait)
        logger.warning(
            "escalated", extra={"thread_id": thread_id, "reason": data.reason, "error": error_name}
        )
        notification = notification_for(thread_id, thread.events)
        if notification is not None:
            self._deliver_quietly(meta, notification.model_copy(update={"callback_id": wait.callback_id}))
        return Reduced(thread_id, "waiting", new_events, agent=meta.agent, events=thread.events)

    def notify(self, thread_id: str, task_token: str) -> Notification | None:
        """The waitForTaskToken task: save the wait, tell the person, return at once."""
        meta, thread = self.store.load(thread_id)
        current = state.status(thread.events)
        if current is ThreadStatus.CANCELLED:
            # There is nobody to ask. Cancel stopped the execution; should this pause have raced the
            # stop (or the stop not taken, as in moto), the failed wait ends it.
            self._end_wait(thread_id, task_token)
            return None
        if not current.is_waiting:
            # The answer landed between the reducer's pause and this task: carry straight on.
            self.workflow.resume(task_token, {"thread_id": thread_id})
            return None
        wait = self._new_wait(thread_id, task_token=task_token, kind=_wait_kind(current, thread.events))
        self.store.save_wait(wait)
        arrived = self.store.events_after(thread_id, thread.last_seq)
        if arrived:
            # A reply was appended before the wait was saved, so it found no token to resume with;
            # unless a trigger took the wait meanwhile, and resumed with it.
            if self.store.clear_wait(thread_id) is not None:
                self._resume_execution(thread_id, wait, arrived[0][0])
            return None
        notification = notification_for(thread_id, thread.events)
        if notification is None:
            return None
        notification = notification.model_copy(update={"callback_id": wait.callback_id})
        self.deliver(meta.channel or NoReplyRef(), notification)
        return notification

    def deliver(self, ref: ChannelRef, notification: Notification) -> None:
        """Send on the thread's own channel; escalations also reach the operations channel."""
        channel = self.channel(ref.kind)
        if channel is not None:
            channel.send(ref, notification)
        # A Slack thread's channel copies its escalations itself; the others need the copy made here.
        if notification.kind == "escalation" and not isinstance(ref, SlackRef) and self.slack is not None:
            self.slack.notify_operations(notification)

    # --- helpers -----------------------------------------------------------------------------

    def _append_decided(
        self, thread_id: str, decide: Callable[[Thread], list[Event]]
    ) -> tuple[Thread, list[Event], int]:
        """Decide what an input adds from the thread as it stands, and append it at exactly that point.

        A writer that lost the race decides again on the thread as it now is, so a message that
        arrives while the reducer or another trigger writes is never dropped, and an answer that is
        no longer wanted becomes NotWaiting instead of landing on a thread that moved on.
        Returns the thread the events were decided on, the events and their last sequence number.
        Decisions read the thread's outline: status, ids and sequence numbers are exact there, and a
        trigger answering a person reads none of the payloads big tool results keep in S3.
        """
        for attempt in range(MAX_APPEND_ATTEMPTS):
            _meta, thread = self.store.load_outline(thread_id)
            events = decide(thread)
            try:
                return thread, events, self.store.append(thread_id, events, expected_last_seq=thread.last_seq)
            except ConcurrentAppend:
                if attempt == MAX_APPEND_ATTEMPTS - 1:
                    raise
            # Full jitter: writers that collided once should not collide again in lockstep.
            time.sleep(jitter.full_jitter(min(MAX_APPEND_BACKOFF_SECONDS, 0.005 * 2**attempt)))
        raise AssertionError("unreachable")  # the loop returns or raises

    def _new_wait(
        self,
        thread_id: str,
        *,
        task_token: str,
        kind: Literal["approval", "question", "escalation", "callback"],
    ) -> PendingWait:
        timeout = timedelta(seconds=self.settings(WaitSettings).wait_timeout_seconds)
        return PendingWait(
            thread_id=thread_id,
            task_token=task_token,
            callback_id=secrets.token_urlsafe(24),  # unguessable: it names the wait in a public URL
            kind=kind,
            deadline=self.clock() + timeout,
        )

    def _wait_for_tool_call(self, key: str) -> PendingWait | None:
        """An async tool's executor knows only its ToolContext: it hands ``<thread_id>:<call_id>``
        (its idempotency key) to the system that calls back, since the random callback id is made
        later, by Notify."""
        thread_id, _, call_id = key.partition(":")
        if not call_id:
            return None
        wait = self.store.get_wait(thread_id)
        if wait is None or wait.kind != "callback":
            return None
        pending = state.awaiting_callback(self.store.load_outline(thread_id)[1].events)
        return wait if pending is not None and pending.data.call_id == call_id else None

    def _answer(self, thread: Thread, wait: PendingWait, payload: dict[str, Any]) -> list[Event]:
        at = self.clock()
        if wait.kind == "callback":
            pending = state.awaiting_callback(thread.events)
            call_id = pending.data.call_id if pending is not None else ""
            result = payload.get("result", payload)
            return replies.callback(thread, call_id, result, at=at)
        if wait.kind == "approval":
            return replies.respond(thread, replies.ApprovalReply.model_validate(payload), at=at)
        return replies.respond(thread, replies.TextReply.model_validate(payload), at=at)

    def _continue(self, thread_id: str, seq: int) -> None:
        """Hand the thread back to its paused execution, or start one if that execution is gone."""
        # Taken (read and deleted at once) before resuming: once resumed, the next pause may save a
        # new wait at any moment; and of two triggers here at once, only one hands the answer over.
        wait = self.store.clear_wait(thread_id)
        if wait is None:
            if self.workflow.running(thread_id):
                # The execution is between its reducer and Notify; Notify sees the reply and resumes.
                logger.info("no wait saved yet; Notify will resume", extra={"thread_id": thread_id})
            else:
                # No execution and no wait: the one that paused died before saving its wait (its
                # failure could not be recorded). The answer starts a new one.
                logger.warning("no wait and no execution; starting one", extra={"thread_id": thread_id})
                self.workflow.start(thread_id, seq)
            return
        try:
            self._resume_execution(thread_id, wait, seq)
        except Exception:
            # The answer is recorded but its execution was not given it (Step Functions throttled or
            # failed): the wait is put back, so the caller's retry hands it over (`_hand_over_left`).
            self.store.save_wait(wait)
            raise

    def _hand_over_left(self, thread_id: str) -> Resumed | None:
        """A repeated request finds its answer recorded: if the thread runs on it but still holds
        the wait (the first attempt failed to resume the execution), finish that hand-over."""
        _meta, thread = self.store.load_outline(thread_id)
        current = state.status(thread.events)
        if not current.is_runnable or self.store.get_wait(thread_id) is None:
            return None
        logger.info("handing a recorded answer to its execution", extra={"thread_id": thread_id})
        self._continue(thread_id, thread.last_seq)
        return Resumed(thread_id, current)

    def _resume_execution(self, thread_id: str, wait: PendingWait, seq: int) -> None:
        if wait.task_token == NO_EXECUTION:
            self.workflow.start(thread_id, seq)
            return
        try:
            self.workflow.resume(wait.task_token, {"thread_id": thread_id})
        except TaskTokenRefused as error:
            # The token died with its execution (timed out and escalated, or failed): start anew.
            # (Any other failure is raised: that execution still waits, and a second must not start.)
            logger.warning("task token rejected; starting a new execution", extra={"error": str(error)})
            self.workflow.start(thread_id, seq)


def reason(error: Exception) -> str:
    """Why an input was refused, for the log: a validation error's places and kinds, never the
    input itself (it may be large, or hold a task token)."""
    if isinstance(error, ValidationError):
        return "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or 'input'}: {item['type']}"
            for item in error.errors()
        )
    return str(error)


def _thread_id_for(launch_key: str | None) -> str:
    if launch_key is None:
        return uuid.uuid4().hex
    return hashlib.sha256(launch_key.encode()).hexdigest()[:32]


def _restart_seq(events: tuple[Event, ...]) -> int | None:
    """The sequence number of the first event after the thread's last `done`, if any came after it."""
    for seq in range(len(events) - 1, -1, -1):
        if isinstance(events[seq], Done):
            return seq + 1 if seq + 1 < len(events) else None
    return None


def _run_ended(events: tuple[Event, ...], execution: str | None) -> bool:
    """Whether the execution named ``<thread_id>-<seq>`` (it serves the turn begun at ``seq``) has
    seen its turn end: a done at or after ``seq``. Events after that done belong to the execution
    their message started (named after that message's sequence number), not to this one."""
    if not execution:
        return False
    _owner, _, launch = execution.rpartition("-")
    if not launch.isdigit():
        return False
    return any(isinstance(event, Done) for event in events[int(launch) :])


def _reduce_status(current: ThreadStatus) -> ReduceStatus:
    if current is ThreadStatus.DONE:
        return "done"
    if current is ThreadStatus.CANCELLED:
        return "cancelled"
    return "waiting"


def _wait_kind(
    current: ThreadStatus, events: tuple[Event, ...]
) -> Literal["approval", "question", "escalation", "callback"]:
    if current is ThreadStatus.AWAITING_APPROVAL:
        return "approval"
    if current is ThreadStatus.AWAITING_CALLBACK:
        return "callback"
    return "escalation" if isinstance(events[-1], Escalation) else "question"


__all__ = [
    "ConcurrentAppend",
    "Launched",
    "Reduced",
    "Resumed",
    "Runtime",
    "UnknownCallback",
    "current",
    "reason",
    "reset",
    "scoped",
]

_current: Runtime | None = None
# The local stack runs every function in one process; each invocation sees its own function's runtime.
_scoped: ContextVar[Runtime | None] = ContextVar("twelvefactor_runtime", default=None)


def current() -> Runtime:
    """The container's runtime, built on first use (or the one `scoped` put in place)."""
    global _current  # noqa: PLW0603 - one per container is the point
    scoped_runtime = _scoped.get()
    if scoped_runtime is not None:
        return scoped_runtime
    if _current is None:
        _current = Runtime()
    return _current


def reset(**overrides: Any) -> Runtime:
    """Forget everything built; the next use reads the environment again. For tests and `invoke`."""
    global _current  # noqa: PLW0603
    _current = Runtime(**overrides)
    return _current


@contextmanager
def scoped(rt: Runtime) -> Iterator[Runtime]:
    """Make ``rt`` what `current` returns in this context (the local stack: one runtime per function)."""
    token = _scoped.set(rt)
    try:
        yield rt
    finally:
        _scoped.reset(token)
