"""The loop that drives one run: strategy → guards → effect → events, until it ends or waits.

Every event is folded into the in-memory state as it is recorded and reaches the store
in the next commit. A commit happens before every effect (a model call, a tool, a wait),
so a crash at any point leaves a log that says exactly which effects may have happened;
each commit carries the run's lease epoch, so a process that lost the run writes nothing.

Nothing a model, tool, strategy or guard does can kill the driver: whatever it raises
ends the run with a recorded reason. Only the store failing, the lease being lost, or
the process leaving stops a driver without an ending, and then the run stays resumable.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeGuard, TypeVar, assert_never

from autonomic._text import clean_text, safe_str
from autonomic.agent import Agent
from autonomic.approvals import ApprovalSigner, approval_digest
from autonomic.checks import checked_call, checked_response
from autonomic.digest import RequestDigester
from autonomic.errors import (
    AgentNotFound,
    ConfigError,
    LeaseLost,
    ModelUnavailable,
    StoreCorrupt,
    StoreError,
)
from autonomic.events import (
    TERMINAL_EVENTS,
    ActionCompleted,
    ActionDeferred,
    ActionFailed,
    ActionRequested,
    ApprovalDenied,
    ApprovalGranted,
    ApprovalRequested,
    CancelRequested,
    ChildCompleted,
    ChildSpawned,
    CircuitChanged,
    Event,
    GuardTripped,
    InboxRefused,
    ModelCalled,
    ModelResponded,
    NewEvent,
    Resumed,
    RunCompleted,
    RunDead,
    RunFailed,
    SignalReceived,
    Suspended,
    TimerFired,
    blob_refs,
    decode_event,
    encode_event,
    event_types,
)
from autonomic.guards.base import (
    GUARD_PURPOSE,
    Allow,
    Consult,
    Deny,
    Guard,
    RequireApproval,
    Rewrite,
    crossing_guards,
    hooked,
    store_scope,
)
from autonomic.guards.budget import budget_of, with_inherited_budget
from autonomic.guards.inherit import with_ancestor_guards
from autonomic.lifecycle import (
    SpawnRefused,
    approval_key,
    cancellation_events,
    child_key,
    describe_wait,
    ending_deliveries,
    open_wait,
    plan_children,
    signal_key,
    wait_for,
)
from autonomic.messages import ModelRequest, ToolCall
from autonomic.models.base import Model
from autonomic.snapshot import SnapshotWriter
from autonomic.state import RunState
from autonomic.steps import (
    Await,
    ChildSpec,
    Fail,
    Finish,
    ModelCall,
    Record,
    Spawn,
    Step,
    ToolCalls,
)
from autonomic.store.base import (
    Commit,
    Committed,
    Delivery,
    InboxItem,
    Lease,
    NewRun,
    Store,
    Wait,
)
from autonomic.strategies.base import AgentView
from autonomic.tools.approval import approval_check
from autonomic.tools.awaiting import AwaitingTool
from autonomic.tools.executor import CANCEL_GRACE_S, Outcome, execute_action, refusal
from autonomic.tools.secrets import SecretsProvider

__all__ = ["Driver", "DriverHost"]

log = logging.getLogger("autonomic.runtime")

T = TypeVar("T")

_CONTROL_EVENTS: tuple[type[Event], ...] = (
    *TERMINAL_EVENTS,
    RunDead,
    Suspended,
    Resumed,
    ModelCalled,
    ModelResponded,
    ActionRequested,
    ActionCompleted,
    ActionFailed,
    ActionDeferred,
    ApprovalRequested,
    ApprovalGranted,
    ApprovalDenied,
    ChildSpawned,
    ChildCompleted,
    SignalReceived,
    TimerFired,
)
"""Events only the driver records; a strategy's ``Record`` step may not forge them."""


class DriverHost(Protocol):
    """What a driver needs from the process that runs it."""

    def resolve_child(self, parent: Agent, name: str) -> Agent:
        """The agent a child run of ``parent`` named ``name`` runs; raises AgentNotFound."""
        ...

    def children_created(self, runs: Sequence[tuple[str, Lease]]) -> None:
        """Child runs now exist, leased to this process: drive them."""
        ...

    def committed(self, run_id: str, committed: Committed, status: str) -> None:
        """A commit landed (publish it; a wait already over means the run is ready)."""
        ...

    def timer(self, wake_at: float) -> None:
        """Something this process drove will be ready at ``wake_at``."""
        ...

    def abandon(self, driver: Driver, why: str, action_id: str | None) -> None:
        """``driver``'s task ignored a cancellation (a stuck tool, say): leave it behind,
        and go on with the run in a new driver (``action_id`` failed with ``why``)."""
        ...


def unknown_outcome(tool: str, available: bool) -> str:
    why = "the tool is not idempotent" if available else "this agent no longer has that tool"
    return (
        f"outcome unknown: the process running {tool!r} stopped before it reported back, "
        f"and {why}, so it was not run again; check whether it took effect before retrying"
    )


async def _verdict(result: T | Awaitable[T]) -> T:
    return await result if inspect.isawaitable(result) else result


class _Broken(Exception):
    """A guard raised or answered nonsense: the run cannot go on safely, and fails with
    this message."""


_STEPS = (ModelCall, ToolCalls, Spawn, Await, Record, Finish, Fail)
_MAX_BATCH = 256
"""Events recorded without an effect (a strategy's own notes) are committed this often."""


async def _to_the_end(coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` (a run's last commit) to its end even if this task is cancelled
    meanwhile, then let the cancellation go on: a driver's task must not be seen done
    while its last commit is still on its way to the store."""
    inner = asyncio.ensure_future(coro)
    try:
        await asyncio.shield(inner)
    except asyncio.CancelledError:
        await asyncio.wait([inner])
        if not inner.cancelled():
            inner.exception()  # it is the store's failure to report, not this task's
        raise


def _reraise_cancellation(error: BaseException) -> None:
    """Re-raise ``error`` if it is this task being cancelled; a CancelledError that user
    code raised while nobody cancels is just another failure."""
    if isinstance(error, asyncio.CancelledError) and _cancelling():
        raise error


async def _ask(guard: Guard, hook: Callable[[], object]) -> object:
    """A guard's verdict; _Broken when the guard raises."""
    try:
        return await _verdict(hook())
    except BaseException as e:
        _reraise_cancellation(e)
        raise _Broken(f"guard {_name(guard)!r} raised {_describe(e)}") from None


def _name(guard: Guard) -> str:
    name = getattr(guard, "name", None)
    return clean_text(name) if isinstance(name, str) and name else type(guard).__name__


def _text(value: object) -> str:
    """Text from user code (a reason, a rationale) that the log can hold."""
    return clean_text(value) if isinstance(value, str) else safe_str(value)


def _recordable(event: object) -> bool:
    """May a strategy or guard record ``event``: a registered type that is not one only
    the driver records."""
    kind = type(event)
    return event_types().get(kind.__name__) is kind and not isinstance(event, _CONTROL_EVENTS)


def _checked_calls(step: ToolCalls, answered: tuple[ToolCall, ...]) -> list[ToolCall]:
    """A strategy's tool calls, checked as a model's are (a call that cannot run carries
    its error); empty when ``calls`` is not a sequence. The calls of the model's last
    answer (``answered``, checked when it was recorded) are taken as they are."""
    calls = step.calls
    if calls is answered:
        return list(calls)
    if not isinstance(calls, tuple | list):
        return []
    seen: set[str] = set()
    return [checked_call(raw, index, seen)[0] for index, raw in enumerate(calls, 1)]


class Driver:
    """Drives one run in this process while it holds the run's lease."""

    def __init__(
        self,
        *,
        store: Store,
        host: DriverHost,
        agent: Agent,
        model: Model,
        state: RunState,
        lease: Lease,
        lease_s: float,
        secrets: SecretsProvider,
        signer: ApprovalSigner,
        snapshot_every: int,
        mail: bool = True,
        stuck_actions: Mapping[str, str] | None = None,
        ancestors: Sequence[Agent | None] = (),
    ) -> None:
        """``mail``: the run's inbox may hold something to read before the first step.
        ``stuck_actions``: actions a driver left behind was stuck in, and why.
        ``ancestors``: the agents of the run's lineage, whose guards it keeps."""
        self.store, self.host, self.agent, self.model, self.state = store, host, agent, model, state
        self.lease, self.lease_s = lease, lease_s
        self.secrets, self.signer = secrets, signer
        self.snapshot_every = snapshot_every
        self.view = agent.view()
        self.guards = with_inherited_budget(with_ancestor_guards(agent.guards, ancestors), state)
        self.tools = agent.tool_map
        self._awaiting = {n: t for n, t in self.tools.items() if _awaits(t)}
        self._checking = hooked(self.guards, "check")
        self._calling = hooked(self.guards, "check_call")
        self._observing = hooked(self.guards, "observe")
        self._tool_input = crossing_guards(self.guards, "tool_input")
        self._tool_output = crossing_guards(self.guards, "tool_output")
        self.committed_seq = state.seq
        self.snapshot_seq = state.seq
        self.lease_deadline = time.monotonic() + lease_s
        self.cancel_by: str | None = None
        """Set when a cancellation arrived: the run records it and ends."""
        self.failure: BaseException | None = None
        """Why the driver stopped without ending the run (store failure, lease lost)."""
        self.task: asyncio.Task[None] | None = None
        self._committing = False
        self._interrupted = False
        self._timed_out = False
        self._stuck_actions = dict(stuck_actions or {})
        self._answered: tuple[ToolCall, ...] = ()
        self._watchdog: asyncio.TimerHandle | None = None
        self.abandoned: str | None = None
        """Why this driver was left behind (its task ignored a cancellation)."""
        self._deadline = 0.0
        self.drained = 0
        """The newest inbox item read into the log."""
        self._consumed = 0
        self._mail = mail
        self._released = False
        self._batch: list[NewEvent] = []
        self._new_children: list[tuple[NewRun, Sequence[NewEvent]]] = []
        self._snapshots = SnapshotWriter()
        self._digester = RequestDigester()
        self._store_failed: StoreError | None = None
        """Set when a commit failed: the log may not hold what the state does, so this
        driver must write nothing more (resuming folds the run again from the store)."""

    # -- recording and committing ---------------------------------------------------------

    def record(self, event: Event, *, observe: bool = True) -> None:
        """Fold ``event`` into the state and queue it for the next commit."""
        ts = time.time()
        encoded = encode_event(event, ts)  # first: an unencodable event changes nothing
        state = self.state
        state.apply(event, state.seq + 1, ts)
        self._batch.append(encoded)
        if observe:
            for guard in self._observing:
                for extra in self._observed(guard, event):
                    self.record(extra, observe=False)

    def _observed(self, guard: Guard, event: Event) -> Sequence[Event]:
        """The events ``guard`` adds after ``event``; _Broken when it raises or answers
        anything but events of its own. Nothing is added after the run has ended."""
        try:
            extras = guard.observe(self.state, event)
        except BaseException as e:
            _reraise_cancellation(e)
            raise _Broken(
                f"guard {_name(guard)!r} raised {_describe(e)} observing {type(event).__name__}"
            ) from None
        if not isinstance(extras, list | tuple):
            raise _Broken(
                f"guard {_name(guard)!r} observed {type(event).__name__} and returned a "
                f"{type(extras).__name__}, not a list of events"
            )
        for extra in extras:
            if not _recordable(extra):
                raise _Broken(
                    f"guard {_name(guard)!r} tried to record a {type(extra).__name__}: only "
                    "registered event types of its own may be recorded"
                )
        if extras and self.state.terminal:
            log.warning(
                "run %s: guard %r asked to record events after the run ended; dropped",
                self.state.run_id,
                _name(guard),
            )
            return ()
        return extras

    async def commit(
        self,
        *,
        wait: Wait | None = None,
        release: bool = False,
        deliveries: Sequence[Delivery] = (),
    ) -> Committed | None:
        """Write what was recorded since the last commit, in one transaction."""
        if self._released or not (
            self._batch or release or deliveries or self.drained > self._consumed
        ):
            return None
        children, self._new_children = self._new_children, []
        commit = Commit(
            run_id=self.state.run_id,
            expected_seq=self.committed_seq,
            events=self._batch,
            lease=self.lease,
            status=self.state.status,
            wait=wait,
            consumed=self.drained,
            deliveries=deliveries,
            children=children,
            children_lease_s=self.lease_s if children else None,
            release=release,
        )
        self._batch = []
        if self._store_failed is not None:
            raise self._store_failed
        if self.abandoned is not None:
            raise self._left_behind()
        self._committing = True
        try:
            committed = await self.store.commit(commit)
        except asyncio.CancelledError:
            raise
        except BaseException as e:
            self._store_failed = self._store_error(e)
            raise self._store_failed from e
        finally:
            self._committing = False
        self.committed_seq = committed.last_seq
        self._consumed = self.drained
        self._released = release
        if committed.inbox_last > self.drained:
            self._mail = True
        self.host.committed(self.state.run_id, committed, self.state.status)
        if children:
            self.host.children_created(
                [(run.run_id, Lease(self.lease.owner, 1)) for run, _ in children]
            )
        if self._interrupted and self.task is not None:
            self._interrupted = False
            self._cancel_task()  # what waited for the commit to land
            await asyncio.sleep(0)
        # a waiting run is snapshotted too, so that waking it reads little
        due = self.snapshot_every if wait is None else min(self.snapshot_every, 16)
        if self.state.seq - self.snapshot_seq >= due and (wait is not None or not release):
            body, blobs = self._snapshots.encode(self.state)
            try:
                await self.store.put_snapshot(self.state.run_id, self.state.seq, body, blobs)
            except Exception as e:  # a snapshot is a cache: the events are committed
                log.warning("run %s: could not store a snapshot: %s", self.state.run_id, e)
            self.snapshot_seq = self.state.seq
        return committed

    def _store_error(self, error: BaseException) -> StoreError:
        """What the store raised, as a StoreError (a store's bug or an OSError included)."""
        if isinstance(error, StoreError):
            return error
        return StoreError(f"run {self.state.run_id}: the store failed: {_describe(error)}")

    def interrupt(self, cancel_by: str | None = None) -> None:
        """Stop what the run is doing now: to cancel it (``cancel_by``), or because this
        process lost it. A commit in flight is never cut: the interruption waits for it,
        so the log and the driver never disagree about what was written."""
        if cancel_by is not None and self.cancel_by is None:
            self.cancel_by = cancel_by
        if self._committing:
            self._interrupted = True
        else:
            self._cancel_task()

    def _cancel_task(self) -> None:
        """Cancel the driver's task, and watch that it stops: one that ignores the
        cancellation (a stuck tool or model) is left behind, and the run goes on elsewhere."""
        if self.task is None or self.task.done():
            return
        self.task.cancel()
        if self._watchdog is None:
            loop = asyncio.get_running_loop()
            self._watchdog = loop.call_later(CANCEL_GRACE_S, self._still_running)

    def _still_running(self) -> None:
        self._watchdog = None
        if self.task is not None and not self.task.done():
            self.host.abandon(self, "it ignored a cancellation for a while", None)

    def _stuck(self, action_id: str, why: str) -> None:
        self.host.abandon(self, why, action_id)

    def _left_behind(self) -> LeaseLost:
        return LeaseLost(
            f"run {self.state.run_id}: this driver was left behind ({self.abandoned}); "
            "another one goes on with the run"
        )

    @property
    def committing(self) -> bool:
        """A commit is in flight (it may be the one that releases the lease)."""
        return self._committing

    @property
    def released(self) -> bool:
        """This driver gave the run's lease up (the run ended, waits, or went elsewhere)."""
        return self._released

    def notice_mail(self, inbox_last: int) -> None:
        """Something arrived in the run's inbox: read it at the next step boundary."""
        if inbox_last > self.drained:
            self._mail = True

    def renewed(self, at: float) -> None:
        """The lease was renewed at monotonic time ``at``."""
        self.lease_deadline = at + self.lease_s

    def _check_lease(self) -> None:
        """Before any effect: a cancellation already asked for lands now, before the effect
        starts; and a process that stalled past its lease must not act."""
        if self.abandoned is not None:
            raise self._left_behind()
        if self.task is not None and self.task.cancelling():
            raise asyncio.CancelledError
        if time.monotonic() > self.lease_deadline:
            raise LeaseLost(
                f"run {self.state.run_id}: this process's lease ran out before it could renew "
                "it (it stalled); another process may be driving the run"
            )

    # -- the run --------------------------------------------------------------------------

    async def run(self, resumed: str | None = None) -> None:
        """Drive the run until it ends, waits, or this process must stop driving it."""
        loop = asyncio.get_running_loop()
        left = self.agent.max_wall_s - self.state.active_seconds(time.time())
        self._deadline = loop.time() + left
        timer = loop.call_at(self._deadline, self._time_up)
        try:
            with store_scope(self.store, self.tools):
                await self._run(resumed)
        except asyncio.CancelledError:
            if self.cancel_by is not None:
                # interrupted to cancel the run: record that, whatever it was doing
                await _to_the_end(self._cancel(self.cancel_by))
                return
            if self._timed_out:
                await _to_the_end(self._out_of_time())
                return
            # the process is leaving: keep what is known, and let another process go on
            with contextlib.suppress(StoreError):
                await _to_the_end(self._release())
            raise
        finally:
            timer.cancel()
            if self._watchdog is not None:
                self._watchdog.cancel()

    async def _release(self) -> None:
        await self.commit(release=True)

    def _time_up(self) -> None:
        """The wall-time limit passed: stop whatever runs now (a commit ends first)."""
        self._timed_out = True
        self.interrupt()

    async def _out_of_time(self) -> None:
        limit = f"wall-time limit of {self.agent.max_wall_s:g}s reached"
        self._end(RunFailed(limit), f"interrupted: {limit}")
        await self._finish()

    async def _run(self, resumed: str | None) -> None:
        state = self.state
        waited = state.waiting
        try:
            if resumed is not None:
                self.record(Resumed(by=self.lease.owner, reason=resumed))
            if waited is not None and waited.wake_at and waited.wake_at <= time.time():
                self.record(TimerFired(waited.wake_at))
            if self._mail:  # (a fresh run's inbox is empty: mail that comes later shows
                await self._drain()  # in its commits and in the heartbeat)
            if self.cancel_by is not None:
                await self._cancel(self.cancel_by)
                return
            if state.pending:
                await self._recover_pending()
            await self._loop()
        except StoreError:
            raise
        except BaseException as e:
            _reraise_cancellation(e)
            if (self.cancel_by is not None or self._timed_out) and isinstance(
                e, asyncio.CancelledError
            ):
                raise
            # a strategy's, guard's or model's bug: SystemExit and a stray CancelledError
            # (one that nobody asked for) included
            why = str(e) if isinstance(e, _Broken) else f"internal error: {_describe(e)}"
            if state.terminal:
                log.error("run %s, after it ended: %s", state.run_id, why)
            self._end(RunFailed(why), "interrupted by an internal error")
        if state.status != "waiting":
            await self._finish()

    def _end(self, ending: Event, why: str) -> None:
        """End the run now (the guards are not asked: one of them may be why it ends)."""
        if self.state.terminal:
            return
        for action_id in list(self.state.pending):
            self.record(ActionFailed(action_id, why), observe=False)
        self.record(ending, observe=False)

    async def _finish(self) -> None:
        """The final commit of this driver: the run ended (or stays running for another
        process); tell the parent and children, and give the lease up."""
        ended = self.state.terminal or self.state.status == "dead"
        await self.commit(release=True, deliveries=ending_deliveries(self.state) if ended else ())

    async def _cancel(self, by: str) -> None:
        if not self.state.terminal:
            for event in cancellation_events(self.state, by):
                self.record(event)
        await self._finish()

    async def _loop(self) -> None:
        state, loop = self.state, asyncio.get_running_loop()
        while state.status == "running":
            if loop.time() >= self._deadline:  # steps that never wait: the timer cannot fire
                self._time_up()
                await asyncio.sleep(0)
            if len(self._batch) >= _MAX_BATCH:  # nor may they pile up uncommitted events
                await self.commit()
            if self._mail:
                await self._drain()
                if self.cancel_by is not None:
                    await self._cancel(self.cancel_by)
                    return
                continue
            if state.granted or state.approvals or state.deferred:
                if not await self._settle_waits():
                    return
                continue
            before = state.seq
            step = await self._decide()
            if step is not None:
                try:
                    await self._perform(step)
                except (StoreError, _Broken):
                    raise
                except Exception as e:
                    self._end(
                        RunFailed(
                            f"the {type(step).__name__} step of strategy "
                            f"{self.agent.strategy.name!r} failed: {_describe(e)}"
                        ),
                        "interrupted: its step failed",
                    )
                    return
                if state.seq == before and state.status == "running":
                    self.record(
                        RunFailed(
                            f"strategy {self.agent.strategy.name!r} asked for "
                            f"{type(step).__name__}, which changed nothing (an Await for "
                            "something that already happened?): the run would loop forever"
                        )
                    )

    # -- deciding -------------------------------------------------------------------------

    async def _decide(self) -> Step | None:
        """The strategy's next step after the limits and the guards; None when refused."""
        state, agent = self.state, self.agent
        try:
            step: object = agent.strategy.next_step(state, self.view)
        except BaseException as e:
            _reraise_cancellation(e)
            self.record(RunFailed(f"strategy {agent.strategy.name!r} raised {_describe(e)}"))
            return None
        return await self._vetted(step)

    async def _vetted(self, step: object) -> Step | None:
        """``step`` after the limits and the guards; None when refused."""
        state, agent = self.state, self.agent
        if not isinstance(step, _STEPS):
            self.record(
                RunFailed(
                    f"strategy {agent.strategy.name!r} returned a {type(step).__name__}, "
                    "which is not a step"
                )
            )
            return None
        if isinstance(step, ModelCall) and state.model_calls >= agent.max_steps:
            self.record(
                RunFailed(
                    f"step limit reached: {agent.max_steps} model calls without a final answer"
                )
            )
            return None
        for guard in self._checking:
            verdict = await _ask(guard, functools.partial(guard.check, state, step))
            if isinstance(verdict, Rewrite):
                if not isinstance(verdict.step, _STEPS):
                    raise _Broken(
                        f"guard {_name(guard)!r} rewrote the step into a "
                        f"{type(verdict.step).__name__}, which is not a step"
                    )
                step = verdict.step
                if verdict.reason:
                    self.record(GuardTripped(_name(guard), _text(verdict.reason)))
            elif isinstance(verdict, Deny):
                reason = _text(verdict.reason)
                self.record(GuardTripped(_name(guard), reason))
                if isinstance(step, ToolCalls):
                    for call in _checked_calls(step, self._answered):
                        request = self._request(call, _text(step.rationale))
                        self.record(ActionFailed(request.action_id, f"denied: {reason}"))
                else:
                    self.record(RunFailed(f"{_name(guard)}: {reason}"))
                return None
            elif not isinstance(verdict, Allow):
                raise _Broken(
                    f"guard {_name(guard)!r} returned a {type(verdict).__name__}, not a "
                    "verdict (Allow, Deny or Rewrite)"
                )
        return step

    async def _perform(self, step: Step) -> None:
        match step:
            case ModelCall():
                await self._model_call(step)
            case ToolCalls():
                await self._tool_calls(step)
            case Spawn():
                await self._spawn(step)
            case Await():
                await self._await(step)
            case Record():
                self._record_own(step)
            case Finish(answer):
                if isinstance(answer, str):
                    self.record(RunCompleted(clean_text(answer)))
                else:
                    self.record(
                        RunFailed(f"the final answer is a {type(answer).__name__}, not text")
                    )
            case Fail(reason):
                self.record(RunFailed(safe_str(reason)))
            case _:
                assert_never(step)

    def _record_own(self, step: Record) -> None:
        for event in step.events:
            kind = type(event)
            if not _recordable(event):
                self.record(
                    RunFailed(
                        f"strategy {self.agent.strategy.name!r} tried to record a "
                        f"{kind.__name__}: only registered event types of its own may be recorded"
                    )
                )
                return
        for event in step.events:
            self.record(event)

    # -- the brain ------------------------------------------------------------------------

    async def _model_call(self, step: ModelCall) -> None:
        request, model = step.request, self.model
        self._check_lease()
        self.record(ModelCalled(request.purpose, self._digester.digest(request), model.name))
        await self.commit()
        started = time.perf_counter()
        try:
            raw = await model.complete(request)
        except ModelUnavailable as e:
            if e.retry_after is not None and e.retry_after >= self.agent.suspend_after_s:
                wake_at = time.time() + e.retry_after
                why = f"model {model.name!r} is unavailable ({safe_str(e)}); trying again later"
                await self._suspend(Wait(wake_at=wake_at, reason=why))
                return
            self.record(RunFailed(f"model {model.name!r} failed: {safe_str(e)}"))
            return
        except asyncio.CancelledError:
            if _cancelling():
                raise
            self.record(RunFailed(f"model {model.name!r} failed: it raised CancelledError"))
            return
        except BaseException as e:
            self.record(RunFailed(f"model {model.name!r} failed: {_describe(e)}"))
            return
        latency = round((time.perf_counter() - started) * 1000, 3)
        response = checked_response(raw)
        meta = dict(response.meta)
        changes = meta.pop("breaker", ())
        for change in changes if isinstance(changes, list) else ():
            if isinstance(change, dict):
                self.record(
                    CircuitChanged(
                        target=f"model {change.get('endpoint', model.name)}",
                        from_state=str(change.get("from", "")),
                        to_state=str(change.get("to", "")),
                        reason=str(change.get("reason", "")),
                    )
                )
        self._answered = response.tool_calls
        self.record(
            ModelResponded(
                text=response.text,
                tool_calls=response.tool_calls,
                usage=response.usage,
                model=response.model or model.name,
                cost=response.cost,
                latency_ms=latency,
                meta=meta,
                purpose=request.purpose,
            )
        )

    # -- the body -------------------------------------------------------------------------

    def _next_action_id(self) -> str:
        return f"{self.state.run_id}-{self.state.actions_requested + 1}"

    def _request(
        self,
        call: ToolCall,
        rationale: str,
        *,
        action_id: str | None = None,
        approval: str | None = None,
    ) -> ActionRequested:
        tool = self.tools.get(call.name)
        request = ActionRequested(
            action_id=action_id or self._next_action_id(),
            call_id=call.id,
            tool=call.name,
            args=dict(call.arguments),
            rationale=rationale,
            idempotent=bool(tool and tool.idempotent),
            approval=approval,
        )
        self.record(request)
        return request

    async def _approval_reason(self, call: ToolCall) -> tuple[str | None, str | None]:
        """(why the call needs approval, why it is denied); both None to run it now."""
        for guard in self._calling:
            verdict = await _ask(guard, functools.partial(guard.check_call, self.state, call))
            if isinstance(verdict, Consult):
                verdict = await self._consult(guard, verdict)
            if isinstance(verdict, Deny):
                reason = _text(verdict.reason)
                self.record(GuardTripped(_name(guard), reason))
                return None, f"denied by {_name(guard)}: {reason}"
            if isinstance(verdict, RequireApproval):
                reason = _text(verdict.reason) or f"{_name(guard)} requires approval"
                self.record(GuardTripped(_name(guard), f"approval required: {reason}"))
                return reason, None
            if not isinstance(verdict, Allow):
                raise _Broken(
                    f"guard {_name(guard)!r} returned a {type(verdict).__name__} for a tool "
                    "call, not a verdict (Allow, Deny, RequireApproval or Consult)"
                )
        check = approval_check(self.tools[call.name], dict(call.arguments))
        return (check.reason if check.required else None), None

    async def _consult(self, guard: Guard, consult: Consult) -> object:
        """Make the model call a guard asked for (a critic), recorded under its own
        purpose; the guard's verdict on its answer. A model that fails denies."""
        model, request = consult.model, consult.request
        if not isinstance(request, ModelRequest) or not request.purpose.startswith(GUARD_PURPOSE):
            raise _Broken(
                f"guard {_name(guard)!r} asked to consult a model without a ModelRequest "
                f"whose purpose starts with {GUARD_PURPOSE!r}"
            )
        budget = budget_of(self.guards)
        short = budget.admit(self.state, request, model.name) if budget is not None else None
        if short is not None:
            return Deny(f"could not consult {model.name!r}: budget: {short}")
        self._check_lease()
        self.record(ModelCalled(request.purpose, self._digester.digest(request), model.name))
        await self.commit()
        started = time.perf_counter()
        try:
            response = checked_response(await model.complete(request))
        except BaseException as e:
            _reraise_cancellation(e)
            return Deny(f"could not consult {model.name!r}: {_describe(e)}")
        self.record(
            ModelResponded(
                text=response.text,
                tool_calls=response.tool_calls,
                usage=response.usage,
                model=response.model or model.name,
                cost=response.cost,
                latency_ms=round((time.perf_counter() - started) * 1000, 3),
                meta=dict(response.meta),
                purpose=request.purpose,
            )
        )
        return await _ask(guard, functools.partial(consult.decide, response))

    async def _tool_calls(self, step: ToolCalls) -> None:
        calls = _checked_calls(step, self._answered)
        if not calls:
            self.record(RunFailed(f"strategy {self.agent.strategy.name!r} asked to call no tools"))
            return
        await self._start(await self._plan(calls, _text(step.rationale)), eager=True)

    async def _plan(
        self, calls: list[ToolCall], rationale: str
    ) -> list[tuple[ActionRequested, str | None]]:
        """Request each call, with why it may not run (None when it may); a call that
        needs approval is asked for instead, and runs once granted."""
        planned: list[tuple[ActionRequested, str | None]] = []
        for call in calls:
            if call.error or call.name not in self.tools:
                request = self._request(call, rationale)
                planned.append((request, refusal(request, self.tools, call.error) or "refused"))
                continue
            needs, denied = await self._approval_reason(call)
            if needs is not None and denied is None:
                args = dict(call.arguments)
                digest = approval_digest(self.state.run_id, call.id, call.name, args)
                self.record(
                    ApprovalRequested(
                        action_id=self._next_action_id(),
                        call_id=call.id,
                        tool=call.name,
                        digest=digest,
                        args=dict(call.arguments),
                        rationale=rationale,
                        reason=needs,
                    )
                )
            else:
                planned.append((self._request(call, rationale), denied))
        return planned

    def _runnable(self, planned: list[tuple[ActionRequested, str | None]]) -> list[ActionRequested]:
        """The planned actions to execute now: durable waits are deferred instead."""
        runnable: list[ActionRequested] = []
        for request, refused in planned:
            if refused is not None:
                continue
            awaiting = self._awaiting.get(request.tool)
            if awaiting is not None:
                self._defer(awaiting, request)
            else:
                runnable.append(request)
        return runnable

    async def _start(
        self, planned: list[tuple[ActionRequested, str | None]], *, eager: bool = False
    ) -> None:
        """Run requested actions (those without a refusal): durable waits are deferred, the
        rest executed now; outcomes are recorded in the order the calls were made, or as
        they come for a strategy that schedules eagerly."""
        runnable = self._runnable(planned)
        more = getattr(self.agent.strategy, "more_calls", None) if eager else None
        if runnable and callable(more):
            for request, refused in planned:
                if refused is not None:
                    self.record(ActionFailed(request.action_id, refused))
            await self._eagerly(runnable, more)
            return
        outcomes: dict[str, Outcome] = {}
        if runnable:
            await self.commit()
            self._check_lease()
            executed = await self._execute(runnable, attempt=1)
            outcomes = {o.action_id: o for o in executed}
        for request, refused in planned:
            if refused is not None:
                self.record(ActionFailed(request.action_id, refused))
            elif request.action_id in outcomes:
                self.record(outcomes[request.action_id])

    async def _eagerly(
        self, first: list[ActionRequested], more: Callable[[RunState, AgentView], object]
    ) -> None:
        """Run actions for a strategy that schedules eagerly (it has ``more_calls``): each
        outcome is recorded as it comes, then the strategy may start more calls at once
        while the others still run. Requests are committed before they start, and
        outcomes with them, so a crash re-runs no action whose outcome was committed."""
        finished: asyncio.Queue[Outcome] = asyncio.Queue()
        running = 0

        async def one(request: ActionRequested) -> None:
            (outcome,) = await self._execute([request], attempt=1)
            finished.put_nowait(outcome)

        async with asyncio.TaskGroup() as group:
            batch = first
            while True:
                if batch:
                    await self.commit()
                    self._check_lease()
                    for request in batch:
                        group.create_task(one(request))
                    running += len(batch)
                if not running:
                    return
                self.record(await finished.get())
                running -= 1
                batch = await self._more(more) if self.state.status == "running" else []

    async def _more(self, more: Callable[[RunState, AgentView], object]) -> list[ActionRequested]:
        """The actions to start now that the strategy's ``more_calls`` asked for, after
        the guards; none when it asks for nothing, raises, or a guard turns its calls into
        another step (the loop decides again once the running actions end)."""
        try:
            step = more(self.state, self.view)
        except Exception:
            return []  # next_step, asked once nothing runs, fails the run saying why
        if not isinstance(step, ToolCalls) or not step.calls:
            return []
        vetted = await self._vetted(step)
        if not isinstance(vetted, ToolCalls):
            return []
        calls = _checked_calls(vetted, self._answered)
        planned = await self._plan(calls, _text(vetted.rationale))
        for request, refused in planned:
            if refused is not None:
                self.record(ActionFailed(request.action_id, refused))
        return self._runnable(planned)

    def _defer(self, tool: AwaitingTool, request: ActionRequested) -> None:
        try:
            deferral = tool.defer(dict(request.args))
            children = self._spawn_children(deferral.children)
        except (Exception, SpawnRefused) as e:
            self.record(ActionFailed(request.action_id, safe_str(e)))
            return
        wake_at = None if deferral.after_s is None else time.time() + deferral.after_s
        self.record(ActionDeferred(request.action_id, tuple(children), wake_at))
        if wake_at is not None:
            self.host.timer(wake_at)

    async def _execute(self, requests: list[ActionRequested], attempt: int) -> list[Outcome]:
        def run(request: ActionRequested) -> Coroutine[Any, Any, Outcome]:
            if self._tool_input or self._tool_output:
                return self._guarded_action(request, attempt)
            return execute_action(
                self.tools[request.tool],
                request,
                self.state.run_id,
                first_attempt=attempt,
                secrets=self.secrets,
                record=self.record,
                stuck=self._stuck,
            )

        if len(requests) == 1:
            return [await run(requests[0])]
        return await self._all(map(run, requests))

    async def _guarded_action(self, request: ActionRequested, attempt: int) -> Outcome:
        """An action between the guards that see what a tool receives and gives back (its
        outcome, and the events its attempts recorded). A guard that fails fails the
        action: nothing it should have screened is recorded."""
        given, guard = request, None
        held: list[Event] = []  # what the attempts recorded, screened with the outcome
        try:
            for guard in self._tool_input:
                given = await _verdict(guard.tool_input(self.state, given))
            guard = None
            outcome = await execute_action(
                self.tools[request.tool],
                given,
                self.state.run_id,
                first_attempt=attempt,
                secrets=self.secrets,
                record=held.append if self._tool_output else self.record,
                stuck=self._stuck,
            )
            for guard in self._tool_output:
                if held:
                    held = list(await _verdict(guard.tool_events(self.state, request, held)))
                outcome = await _verdict(guard.tool_output(self.state, request, outcome))
            for event in held:
                self.record(event)
        except BaseException as e:
            _reraise_cancellation(e)
            if guard is None:
                raise
            return ActionFailed(
                request.action_id, f"guard {_name(guard)!r} failed: {type(e).__name__}"
            )
        if not isinstance(outcome, ActionCompleted | ActionFailed):
            return ActionFailed(request.action_id, "a guard returned something not an outcome")
        return outcome

    @staticmethod
    async def _all(calls: Iterable[Coroutine[Any, Any, Outcome]]) -> list[Outcome]:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(call) for call in calls]
        return [t.result() for t in tasks]

    async def _recover_pending(self) -> None:
        """Settle actions whose outcome the log does not know (their process died)."""
        rerun: list[ActionRequested] = []
        for request in list(self.state.pending.values()):
            if request.action_id in self.state.deferred:
                continue  # a durable wait: its outcome arrives by the inbox
            stuck = self._stuck_actions.pop(request.action_id, None)
            if stuck is not None:
                self.record(ActionFailed(request.action_id, stuck))
                continue
            tool = self.tools.get(request.tool)
            if tool is not None and (tool.idempotent or self.agent.on_unknown_outcome == "rerun"):
                rerun.append(request)
            else:
                reason = unknown_outcome(request.tool, tool is not None)
                log.warning("run %s: %s", self.state.run_id, reason)
                self.record(ActionFailed(request.action_id, reason))
        if rerun:
            await self.commit()
            self._check_lease()
            for outcome in await self._execute(rerun, attempt=2):
                self.record(outcome)

    # -- waiting --------------------------------------------------------------------------

    async def _settle_waits(self) -> bool:
        """Run approved calls, record the outcome of finished durable waits; suspend on
        what is still open. False when the run suspended."""
        state = self.state
        progressed = False
        if state.granted:
            approved: list[tuple[ActionRequested, str | None]] = []
            for digest, (request, grant) in list(state.granted.items()):
                args = grant.args if grant.args is not None else request.args
                action = self._approved_request(request, args, digest)
                if action is not None:
                    approved.append((action, None))
            await self._start(approved)
            progressed = True
        now = time.time()
        for action_id, deferred in list(state.deferred.items()):
            children = [state.children[c] for c in deferred.children if c in state.children]
            if any(c.status == "running" for c in children) or (deferred.wake_at or 0) > now:
                continue
            action = state.pending[action_id]
            tool = self.tools.get(action.tool)
            try:
                if not isinstance(tool, AwaitingTool):
                    raise ValueError(f"this agent no longer has the tool {action.tool!r}")
                self.record(ActionCompleted(action_id, tool.outcome(dict(action.args), children)))
            except Exception as e:
                self.record(ActionFailed(action_id, safe_str(e)))
            progressed = True
        if progressed or not (state.approvals or state.deferred):
            return True
        await self._suspend(open_wait(self.state))
        return False

    def _approved_request(
        self, request: ApprovalRequested, args: dict[str, Any], digest: str
    ) -> ActionRequested | None:
        """Request the approved call (with the approver's arguments); None if it cannot run."""
        call = ToolCall(request.call_id, request.tool, dict(args))
        action = self._request(
            call, request.rationale, action_id=request.action_id, approval=digest
        )
        if request.tool not in self.tools:
            self.record(
                ActionFailed(
                    action.action_id, f"this agent no longer has the tool {request.tool!r}"
                )
            )
            return None
        return action

    async def _await(self, step: Await) -> None:
        try:
            wait = wait_for(step.conditions, self.state, time.time(), step.reason)
        except ValueError as e:
            self.record(RunFailed(f"strategy {self.agent.strategy.name!r} cannot wait: {e}"))
            return
        if wait is not None:
            reason = step.reason or describe_wait(wait)
            await self._suspend(Wait(wait.groups, wait.wake_at, reason))

    async def _suspend(self, wait: Wait) -> None:
        keys = tuple(key for group in wait.groups for key in group)
        self.record(Suspended(wait.reason, keys, wait.wake_at))
        committed = await self.commit(wait=wait, release=True)
        if wait.wake_at is not None:
            self.host.timer(wait.wake_at)
        log.debug(
            "run %s waits for %s (ready at once: %s)", self.state.run_id, wait.reason, committed
        )

    async def _drain(self) -> None:
        """Read the inbox into the log: decisions, signals, children's ends, cancellation."""
        self._mail = False
        try:
            items = await self.store.read_inbox(self.state.run_id, self.drained)
            refs = [d for item in items for d in _inbox_blob_refs(item)]
            blobs = await self.store.get_blobs(refs) if refs else None
        except Exception as e:
            raise self._store_error(e) from e
        for item in items:
            self.drained = max(self.drained, item.id)
            try:
                event = decode_event(item.record, blobs)
            except StoreCorrupt as e:
                self.record(InboxRefused(item.key, f"unreadable: {e}"))
                continue
            why = self._accept(item.key, event)
            if why is not None:
                log.warning(
                    "run %s: refused %s from its inbox: %s", self.state.run_id, item.key, why
                )
                self.record(InboxRefused(item.key, why))

    def _accept(self, key: str, event: Event) -> str | None:
        """Record one inbox item; returns why it was refused instead."""
        state = self.state
        match event:
            case CancelRequested(by):
                self.cancel_by = self.cancel_by or by
            case ApprovalGranted() | ApprovalDenied():
                request = state.approvals.get(event.digest)
                if request is None:
                    decided = state.decisions.get(event.digest)
                    return (
                        f"this call was already {decided}"
                        if decided
                        else "no call waits for this approval"
                    )
                if key != approval_key(event.digest):
                    return "it was delivered under another key"
                try:
                    why = self.signer.refusal(state.run_id, request, event)
                except ConfigError as e:
                    return f"it cannot be verified here: {e}"
                if why is not None:
                    return why
                self.record(event)
            case SignalReceived(name):
                if key != signal_key(name):
                    return "it was delivered under another key"
                self.record(event)
            case ChildCompleted(child_id):
                child = state.children.get(child_id)
                if child is None or child.status != "running" or key != child_key(child_id):
                    return f"{child_id} is not a running child of this run"
                self.record(event)
            case _:
                return f"a {type(event).__name__} cannot be delivered to a run"
        return None

    # -- children -------------------------------------------------------------------------

    async def _spawn(self, step: Spawn) -> None:
        try:
            self._spawn_children(step.children)
        except SpawnRefused as e:
            self.record(RunFailed(str(e)))

    def _spawn_children(self, specs: Sequence[ChildSpec]) -> list[str]:
        """Record child runs to create with the next commit; raises SpawnRefused."""
        agents = [self._child_agent(spec.agent) for spec in specs]
        children = plan_children(self.state, self.agent, agents, specs, guards=self.guards)
        for spawned, run, started in children:
            self.record(spawned)
            self._new_children.append((run, [started]))
        return [run.run_id for _, run, _ in children]

    def _child_agent(self, name: str) -> Agent:
        try:
            return self.host.resolve_child(self.agent, name)
        except AgentNotFound as e:
            raise SpawnRefused(f"cannot start a child run of agent {name!r}: {e}") from None


def _inbox_blob_refs(item: InboxItem) -> list[str]:
    """The blobs an inbox item refers to; none when it is unreadable (it is refused)."""
    try:
        return blob_refs(item.record)
    except StoreCorrupt:
        return []


_AWAITING: dict[type, bool] = {}


def _awaits(tool: object) -> TypeGuard[AwaitingTool]:
    """Is ``tool`` performed as a durable wait? (A protocol check is slow: once per type.)"""
    kind = type(tool)
    known = _AWAITING.get(kind)
    if known is None:
        known = _AWAITING[kind] = isinstance(tool, AwaitingTool)
    return known


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {safe_str(error)}"
