"""The part of a runtime that drives runs: one task per run it holds, the heartbeat that
keeps their leases, and the claim loop that picks up runs that became ready.

A run is driven by at most one task in a process: its id is reserved before the first
await that could let another caller in, and a task only ever cleans up after itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

from autonomic.agent import Agent
from autonomic.approvals import ApprovalSigner
from autonomic.bus.base import READY_TOPIC, Bus, run_topic
from autonomic.cluster import ChildRunner
from autonomic.driver import Driver
from autonomic.errors import (
    AgentNotFound,
    AutonomicError,
    ConcurrencyConflict,
    ConfigError,
    LeaseLost,
    RunEnded,
    StoreCorrupt,
    StoreError,
)
from autonomic.events import CancelRequested, Event, RunDead, decode_event, encode_event
from autonomic.lifecycle import cancellation_events, ending_deliveries
from autonomic.loader import load_state
from autonomic.models.base import Model
from autonomic.registry import AgentRegistry
from autonomic.state import TERMINAL, RunState
from autonomic.store.base import (
    ANY_READY,
    CANCEL_KEY,
    Claim,
    ClaimFilter,
    Commit,
    Committed,
    Lease,
    Store,
)
from autonomic.tools.executor import CANCEL_GRACE_S
from autonomic.tools.secrets import SecretsProvider

__all__ = ["AgentChangePolicy", "Supervisor"]

log = logging.getLogger("autonomic.runtime")

AgentChangePolicy = Literal["warn", "refuse"]
ENDED = TERMINAL | {"dead"}


_CLAIM_RETRY_S = 0.05
"""The first pause before claiming again after a claim failed; it doubles up to poll_s."""


def _backoff(recoveries: int) -> float:
    """Seconds before a run that could not be started here is tried again: 1, 1, 2, 4... 60."""
    return float(min(60, 2 ** max(0, recoveries - 1)))


class Supervisor:
    """Drives runs in this process (it is each driver's ``DriverHost``)."""

    def __init__(
        self,
        store: Store,
        bus: Bus,
        registry: AgentRegistry,
        *,
        owner: str,
        lease_s: float,
        snapshot_every: int,
        max_recoveries: int,
        on_agent_change: AgentChangePolicy,
        secrets: SecretsProvider,
        signer: ApprovalSigner,
        claim: bool,
        orphans: bool,
        poll_s: float,
        capacity: int,
    ) -> None:
        self.store, self.bus, self.registry = store, bus, registry
        self.owner, self.lease_s = owner, lease_s
        self.snapshot_every, self.max_recoveries = snapshot_every, max_recoveries
        self.on_agent_change = on_agent_change
        self.secrets, self.signer = secrets, signer
        self.claim, self.orphans, self.poll_s, self.capacity = claim, orphans, poll_s, capacity
        self.drivers: dict[str, Driver] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._starting: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._timers: list[asyncio.TimerHandle] = []
        self._left_behind: set[asyncio.Task[None]] = set()  # drivers stuck past a cancel
        self._stopping = False
        self.limits: ClaimFilter = ANY_READY
        """The concurrency limits of this process's claims (``agent_limits``,
        ``tenant_limit``): every process's leases counted by the claim itself, in the
        whole store (others wait for room). Its agents and orphans are set per claim."""
        self.only_registered = False
        """Claim only runs of registered agents, orphans included (a worker's choice)."""
        self.observer: Callable[[str, str], None] | None = None
        """Told ``(run id, what happened)`` when a run is claimed, waits or ends here."""
        self.child_runner: ChildRunner | None = None
        """Drives the child runs spawned here elsewhere (Ray workers); None: here."""

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._loops.append(asyncio.create_task(self._heartbeat(), name="autonomic-heartbeat"))
        if self.claim:
            self._loops.append(asyncio.create_task(self._claim_loop(), name="autonomic-claims"))

    async def stop(self) -> None:
        """Stop driving: every run this process holds stays resumable by any process."""
        self._stopping = True
        for timer in self._timers:
            timer.cancel()
        for task in (*self._loops, *self._background):
            task.cancel()
        await asyncio.gather(*self._loops, *self._background, return_exceptions=True)
        drivers = list(self.drivers.values())
        tasks = list(self.tasks.values())
        for driver in drivers:
            driver.interrupt()
        if tasks:  # a driver stuck in a tool that ignores cancellation is not waited for
            await asyncio.wait(tasks, timeout=CANCEL_GRACE_S + 1)
        for driver in drivers:  # tasks cancelled before they ever ran hold their lease still
            with contextlib.suppress(StoreError):
                await self.store.release_lease(driver.state.run_id, driver.lease)

    def stop_claiming(self) -> None:
        """Claim no more runs (a worker draining); those held are driven on."""
        for task in self._loops:
            if task.get_name() == "autonomic-claims":
                task.cancel()

    def busy(self, run_id: str) -> bool:
        return run_id in self.tasks or run_id in self._starting

    @property
    def starting(self) -> int:
        """Runs claimed here whose driver is not running yet (their state is loading)."""
        return len(self._starting)

    # -- driving ----------------------------------------------------------------------------

    def reserve(self, run_id: str) -> None:
        """Claim the right to start a driver for ``run_id`` in this process; ConfigError if
        one runs or is starting already. Must be called before any await."""
        if self.busy(run_id):
            raise ConfigError(f"run {run_id} is already being driven by this runtime")
        self._starting.add(run_id)

    def unreserve(self, run_id: str) -> None:
        self._starting.discard(run_id)

    def drive(
        self,
        agent: Agent,
        model: Model,
        state: RunState,
        lease: Lease,
        resumed: str | None,
        *,
        mail: bool = True,
        stuck_actions: Mapping[str, str] | None = None,
    ) -> Driver:
        run_id = state.run_id
        driver = Driver(
            store=self.store,
            host=self,
            agent=agent,
            model=model,
            state=state,
            lease=lease,
            lease_s=self.lease_s,
            secrets=self.secrets,
            signer=self.signer,
            snapshot_every=self.snapshot_every,
            mail=mail,
            stuck_actions=stuck_actions,
            ancestors=self.registry.ancestors(state.lineage),
        )
        self._starting.discard(run_id)
        self.drivers[run_id] = driver
        task = asyncio.create_task(self._drive(driver, resumed), name=f"run-{run_id}")
        driver.task = task
        self.tasks[run_id] = task
        task.add_done_callback(lambda t: self._done(run_id, t))
        return driver

    async def _drive(self, driver: Driver, resumed: str | None) -> None:
        run_id = driver.state.run_id
        try:
            await driver.run(resumed)
        except LeaseLost as e:
            driver.failure = e
            if self._stopping or driver.abandoned is not None:
                log.warning("run %s: stopped driving it: %s", run_id, e)
                return
            # a stall (a long GC pause, a loaded machine) must not strand the run when no
            # other process took it: claim it back, the new epoch fencing this driver out
            log.warning("run %s: %s; taking it back unless another process has", run_id, e)
            self._starting.add(run_id)
            self._in_background(
                self._take_over(run_id, "taken back after this process stalled past its lease", {})
            )
        except (ConcurrencyConflict, RunEnded) as e:
            log.warning("run %s: stopped driving it: %s", run_id, e)
            driver.failure = e
        except StoreError as e:
            log.error("run %s: the store failed; the run stays resumable: %s", run_id, e)
            driver.failure = e

    def _done(self, run_id: str, task: asyncio.Task[None]) -> None:
        if self.tasks.get(run_id) is task:
            del self.tasks[run_id]
            self.drivers.pop(run_id, None)
        self.bus.publish(run_topic(run_id))

    async def adopt(
        self,
        claim: Claim,
        reason: str,
        *,
        agent: Agent | None = None,
        model: Model | str | None = None,
        stuck_actions: Mapping[str, str] | None = None,
    ) -> Driver | None:
        """Drive a run whose lease was just claimed (the id is reserved by the caller).

        A run that crashed its process too often is buried instead (None); one whose agent
        cannot be loaded here, or whose log cannot be read, is released, counted as a
        failed start (so that claiming it again backs off).
        """
        run_id = claim.info.run_id
        try:
            state = await load_state(self.store, run_id, info=claim.info)
            if claim.info.status != "dead" and claim.info.recoveries > self.max_recoveries:
                await self.bury(claim, state)
                return None
            agent = agent or await self.registry.load(state.agent, state.agent_path, run_id=run_id)
            if model is not None:
                agent = agent.with_model(model)
            self._check_spec(agent, state)
            resolved = agent.resolved_model()
        except BaseException as e:
            self.unreserve(run_id)
            retry = isinstance(e, AgentNotFound | ConfigError | StoreCorrupt)
            with contextlib.suppress(StoreError):
                await self.store.release_lease(
                    run_id,
                    claim.lease,
                    failed_start=retry,
                    retry_at=time.time() + _backoff(claim.info.recoveries),
                )
            raise
        return self.drive(
            agent,
            resolved,
            state,
            claim.lease,
            reason,
            mail=claim.info.inbox_last > 0,
            stuck_actions=stuck_actions,
        )

    def _check_spec(self, agent: Agent, state: RunState) -> None:
        if not state.agent_digest or agent.digest() == state.agent_digest:
            return
        message = (
            f"run {state.run_id}: agent {agent.name!r} changed since the run started "
            f"(spec {state.agent_digest} -> {agent.digest()})"
        )
        if self.on_agent_change == "refuse":
            raise ConfigError(message + "; refusing to resume (on_agent_change='refuse')")
        log.warning("%s; continuing", message)

    async def bury(self, claim: Claim, state: RunState) -> None:
        """Dead-letter a run that kept crashing the processes that drove it."""
        n = claim.info.recoveries
        reason = (
            f"the run crashed the process driving it {n} times; resume it by hand "
            "(autonomic runs resume) to try again"
        )
        log.error("run %s: %s", state.run_id, reason)
        await self.write_ending(claim.lease, state, [RunDead(reason, n)])

    async def write_ending(self, lease: Lease, state: RunState, events: Sequence[Event]) -> None:
        """End a run without its agent (buried, or cancelled while nobody drove it)."""
        ts = time.time()
        first = state.seq
        for event in events:
            state.apply(event, state.seq + 1, ts)
        inbox = await self.store.read_inbox(state.run_id)
        committed = await self.store.commit(
            Commit(
                run_id=state.run_id,
                expected_seq=first,
                events=[encode_event(e, ts) for e in events],
                lease=lease,
                status=state.status,
                consumed=max((item.id for item in inbox), default=0),
                deliveries=ending_deliveries(state),
                release=True,
            )
        )
        self.unreserve(state.run_id)
        self.committed(state.run_id, committed, state.status)

    async def cancel_unattended(self, claim: Claim, by: str) -> None:
        """Record the cancellation of a run that no process drives."""
        state = await load_state(self.store, claim.info.run_id)
        if state.terminal:
            self.unreserve(state.run_id)
            await self.store.release_lease(state.run_id, claim.lease)
            return
        await self.write_ending(claim.lease, state, cancellation_events(state, by))

    # -- DriverHost -------------------------------------------------------------------------

    def resolve_child(self, parent: Agent, name: str) -> Agent:
        return self.registry.resolve_child(parent, name)

    def children_created(self, runs: Sequence[tuple[str, Lease]]) -> None:
        for run_id, lease in runs:
            if self.busy(run_id):
                continue
            if self.child_runner is not None:
                try:
                    self.child_runner.start_child(self.store.url, run_id, lease, self.lease_s)
                    continue
                except Exception as e:
                    log.error("run %s: could not hand it over (%s); driving it here", run_id, e)
            self._starting.add(run_id)
            self._in_background(self._start_child(run_id, lease))

    async def _start_child(self, run_id: str, lease: Lease) -> None:
        info = await self.store.get_run(run_id)
        try:
            await self.adopt(Claim(lease, info, took_over=False), reason="")
        except (AutonomicError, AgentNotFound) as e:
            log.error("run %s: could not start the child run: %s", run_id, e)

    def committed(self, run_id: str, committed: Committed, status: str) -> None:
        self.bus.publish(run_topic(run_id), str(committed.last_seq))
        if committed.ready or status in ENDED:  # an ending may wake the parent
            self.bus.publish(READY_TOPIC, run_id)
        if self.observer is not None and (status in ENDED or status == "waiting"):
            self.observer(run_id, status)

    def abandon(self, driver: Driver, why: str, action_id: str | None) -> None:
        run_id = driver.state.run_id
        if self.drivers.get(run_id) is not driver or driver.abandoned is not None:
            return
        driver.abandoned = why
        del self.drivers[run_id]
        task = self.tasks.pop(run_id, None)
        if task is not None:
            self._left_behind.add(task)
            task.add_done_callback(self._left_behind.discard)
        if self._stopping or isinstance(driver.failure, LeaseLost):
            log.error("run %s: its driver is stuck (%s); it is left behind", run_id, why)
            return
        log.error("run %s: its driver is stuck (%s); a new one takes the run over", run_id, why)
        self._starting.add(run_id)
        failed = {action_id: why} if action_id is not None else {}
        reason = f"a driver stuck in place of it: {why}"
        self._in_background(self._take_over(run_id, reason, failed))

    async def _take_over(self, run_id: str, reason: str, failed: dict[str, str]) -> None:
        """Claim our own run again: the new lease epoch fences the stuck driver out."""
        try:
            claim = await self.store.claim_run(run_id, self.owner, self.lease_s, revive=True)
            if claim is None:  # another process took it meanwhile
                self.unreserve(run_id)
                log.warning("run %s: another process drives it now", run_id)
                return
            await self.adopt(claim, reason, stuck_actions=failed)
        except RunEnded:  # it ended meanwhile (cancelled from elsewhere): nothing to take
            self.unreserve(run_id)
        except AutonomicError as e:
            self.unreserve(run_id)
            log.error("run %s: could not take it over: %s", run_id, e)

    def timer(self, wake_at: float) -> None:
        delay = max(0.0, wake_at - time.time())
        loop = asyncio.get_running_loop()
        self._timers = [t for t in self._timers if not t.cancelled() and t.when() > loop.time()]
        self._timers.append(loop.call_later(delay + 0.01, self.bus.publish, READY_TOPIC, ""))

    # -- background loops -------------------------------------------------------------------

    def _in_background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _heartbeat(self) -> None:
        # renewing also tells a run about mail (a cancellation from another process),
        # so it happens at least every other poll
        interval = min(self.lease_s / 3, 2 * self.poll_s)
        while True:
            await asyncio.sleep(interval)
            leases = [(run_id, d.lease) for run_id, d in self.drivers.items() if not d.released]
            if not leases:
                continue
            at = time.monotonic()
            try:
                lost, mail = await self.store.renew_leases(leases, self.lease_s)
            except StoreError as e:
                log.warning("could not renew leases: %s", e)
                continue
            for run_id, lease in leases:
                driver, task = self.drivers.get(run_id), self.tasks.get(run_id)
                if driver is None or task is None or driver.lease != lease or driver.released:
                    continue  # it ended, or gave its lease up itself (it waits, or ended)
                if run_id in lost:
                    if driver.committing:  # maybe its own release; else that commit is fenced
                        continue
                    log.warning("run %s: lease lost, another process drives it now", run_id)
                    driver.failure = LeaseLost(f"run {run_id} is driven by another process now")
                    driver.interrupt()
                    continue
                driver.renewed(at)
                inbox_last = mail.get(run_id, 0)
                if inbox_last > driver.drained:
                    driver.notice_mail(inbox_last)
                    self._in_background(self._check_for_cancel(driver))

    async def _check_for_cancel(self, driver: Driver) -> None:
        """Mail for a run busy in a long step: a cancellation must not wait for it to end."""
        with contextlib.suppress(StoreError):
            for item in await self.store.read_inbox(driver.state.run_id, driver.drained):
                if item.key == CANCEL_KEY and driver.cancel_by is None:
                    event = decode_event(item.record)
                    driver.interrupt(event.by if isinstance(event, CancelRequested) else "?")
                    return

    async def _claim_loop(self) -> None:
        """Claim what is ready, then wait for a hint (or ``poll_s``); subscribed before
        the first claim, so that no run made ready meanwhile waits for the poll. The hints
        that piled up meanwhile are answered by one claim (a run that ends anywhere sends
        one: a claim for each would mostly find nothing)."""
        task = asyncio.current_task()
        retry_s = _CLAIM_RETRY_S
        async with self.bus.subscribe(READY_TOPIC) as ready:
            while True:
                claimed = await self._claim_ready()
                if task is not None and task.cancelling():  # a database client ate the cancel
                    raise asyncio.CancelledError
                # a claim that failed (the store away) answered no hint: try again soon
                retry_s = _CLAIM_RETRY_S if claimed else min(retry_s * 2, self.poll_s)
                await ready.next(self.poll_s if claimed else retry_s)
                while await ready.next(0) is not None:
                    pass

    async def _claim_ready(self) -> bool:
        """Claim ready runs up to the room left; False when the store could not be asked."""
        room = self.capacity - len(self.tasks) - len(self._starting)
        # adopting orphans means any agent importable here, unless told
        agents = None if self.orphans and not self.only_registered else self.registry.names()
        where = replace(self.limits, agents=agents, orphans=self.orphans)
        while room > 0:
            try:
                claims = await self.store.claim_runs(self.owner, self.lease_s, room, where)
            except StoreError as e:
                log.warning("could not claim runs: %s", e)
                return False
            for claim in claims:
                self._claimed(claim)
            # a claim under limits may stop short of the room with more ready: ask again
            if not where.limited or not claims:
                return True
            room -= len(claims)
        return True

    def _claimed(self, claim: Claim) -> None:
        run_id = claim.info.run_id
        old = self.tasks.get(run_id)
        if old is not None:  # our own lease lapsed (this process stalled): the old task is stale
            old.cancel()
            self.tasks.pop(run_id, None)
            self.drivers.pop(run_id, None)
        self._starting.add(run_id)
        reason = (
            "woken"
            if claim.info.status == "waiting"
            else ("recovered" if claim.took_over else "claimed")
        )
        if self.observer is not None:
            self.observer(run_id, reason)
        self._in_background(self._adopt_logged(claim, reason))

    async def _adopt_logged(self, claim: Claim, reason: str) -> None:
        try:
            await self.adopt(claim, reason)
        except AutonomicError as e:
            log.error("run %s: cannot drive it here: %s", claim.info.run_id, e)
