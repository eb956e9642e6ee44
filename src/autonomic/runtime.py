"""The Runtime: starts, resumes, forks, cancels and follows runs over one store.

Many runs are driven concurrently on one asyncio loop, each by a ``Driver`` task that
holds the run's lease. Leaving the runtime stops driving without ending the runs: they
stay resumable, by this process later or by any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Literal, Self

import msgspec

from autonomic.agent import Agent, load_agent
from autonomic.driver import Driver
from autonomic.errors import (
    AgentNotFound,
    ConcurrencyConflict,
    ConfigError,
    LeaseLost,
    RunFailedError,
    StoreError,
)
from autonomic.events import (
    TERMINAL_EVENTS,
    RunCancelled,
    RunForked,
    RunStarted,
    encode_event,
)
from autonomic.loader import StoredEvent, load_state, read_events
from autonomic.messages import Usage
from autonomic.models.base import Model
from autonomic.owner import new_owner_id, owner_is_dead_here
from autonomic.replay import replay_events
from autonomic.state import TERMINAL, RunState
from autonomic.store import DEFAULT_STORE_URL, open_store
from autonomic.store.base import NewRun, RunInfo, Store
from autonomic.tools.secrets import EnvSecrets, SecretsProvider

__all__ = ["RunHandle", "RunResult", "Runtime", "run_sync"]

log = logging.getLogger("autonomic.runtime")

AgentChangePolicy = Literal["warn", "refuse"]


class RunResult(msgspec.Struct, frozen=True):
    run_id: str
    status: str
    answer: str | None
    error: str | None
    usage: Usage
    cost: float
    model_calls: int
    events: int

    @classmethod
    def of(cls, state: RunState) -> RunResult:
        return cls(
            state.run_id,
            state.status,
            state.answer,
            state.error,
            state.usage,
            state.cost,
            state.model_calls,
            state.seq,
        )


class RunHandle:
    """A run, whether this process drives it or not."""

    def __init__(self, runtime: Runtime, run_id: str, driver: Driver | None = None) -> None:
        self.runtime = runtime
        self.run_id = run_id
        self._driver = driver

    def __repr__(self) -> str:
        return f"<RunHandle {self.run_id}>"

    async def wait(self, *, check: bool = True, poll_s: float = 0.2) -> RunResult:
        """Wait until the run ends. Raises RunFailedError if it did not complete (unless
        ``check=False``)."""
        task = self.runtime._tasks.get(self.run_id)
        if task is not None:
            await asyncio.shield(task)
        if self._driver is not None and self._driver.state.terminal:
            return self._result(RunResult.of(self._driver.state), check)
        while True:
            info = await self.runtime.store.get_run(self.run_id)
            if info.status in TERMINAL or info.status in ("dead", "suspended"):
                break
            if self.run_id not in self.runtime._tasks:
                await self.runtime._wait_for_change(self.run_id, poll_s)
        return self._result(RunResult.of(await self.runtime.state(self.run_id)), check)

    def _result(self, result: RunResult, check: bool) -> RunResult:
        if check and result.status != "completed":
            raise RunFailedError(self.run_id, result.status, result.error or result.status)
        return result

    async def cancel(self, by: str = "user") -> None:
        await self.runtime.cancel(self.run_id, by=by)

    async def state(self) -> RunState:
        return await self.runtime.state(self.run_id)

    def events(self, after_seq: int = 0, *, follow: bool = True) -> AsyncIterator[StoredEvent]:
        """The run's events from ``after_seq`` on; with ``follow``, new ones as they come."""
        return self.runtime.events(self.run_id, after_seq, follow=follow)


def new_run_id() -> str:
    return uuid.uuid4().hex[:16]


class Runtime:
    """Drives agent runs durably over a store chosen by URL (``sqlite:///runs.db``)."""

    def __init__(
        self,
        store: str | Store = DEFAULT_STORE_URL,
        *,
        agents: Sequence[Agent] = (),
        resume_incomplete: bool = False,
        lease_s: float = 30.0,
        snapshot_every: int = 100,
        max_recoveries: int = 5,
        on_agent_change: AgentChangePolicy = "warn",
        secrets: SecretsProvider | None = None,
    ) -> None:
        if lease_s <= 0 or snapshot_every < 1 or max_recoveries < 1:
            raise ConfigError("lease_s, snapshot_every and max_recoveries must be positive")
        self.store: Store = open_store(store) if isinstance(store, str) else store
        self.owner = new_owner_id()
        self.lease_s = lease_s
        self.snapshot_every = snapshot_every
        self.max_recoveries = max_recoveries
        self.on_agent_change = on_agent_change
        self.secrets: SecretsProvider = secrets or EnvSecrets()
        self._resume_incomplete = resume_incomplete
        self._agents = {a.name: a for a in agents}
        self._drivers: dict[str, Driver] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._heartbeat: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.store.open()
        self._heartbeat = asyncio.create_task(self._renew_leases())
        if self._resume_incomplete:
            await self.resume_incomplete()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.store.close()

    def register(self, agent: Agent) -> None:
        """Serve runs of ``agent`` (matched by name) when resuming them in this process."""
        self._agents[agent.name] = agent

    # -- starting and resuming ------------------------------------------------------------

    async def start(self, agent: Agent, goal: str, *, run_id: str | None = None) -> RunHandle:
        """Start a run of ``agent`` towards ``goal`` and drive it in the background."""
        if not isinstance(agent, Agent):
            raise ConfigError(f"start() needs an autonomic.Agent, got {type(agent).__name__}")
        if not isinstance(goal, str) or not goal.strip():
            raise ConfigError("the goal is empty: say what the agent should do")
        model = agent.resolved_model()
        self._agents.setdefault(agent.name, agent)
        run_id = run_id or new_run_id()
        started = RunStarted(
            goal=goal,
            agent=agent.name,
            agent_path=agent.import_path(),
            agent_digest=agent.digest(),
            model=model.name,
            limits=agent.limits(),
        )
        ts = time.time()
        state = RunState(run_id=run_id)
        state.apply(started, 1, ts)
        await self.store.create_run(
            NewRun(run_id, agent.name, goal[:500]),
            [encode_event(started, ts)],
            owner=self.owner,
            lease_s=self.lease_s,
        )
        return RunHandle(self, run_id, self._drive(agent, model, state))

    async def resume(
        self, run_id: str, *, agent: Agent | None = None, model: Model | str | None = None
    ) -> RunHandle:
        """Continue a run that is not finished, e.g. after its process crashed.

        ``agent`` replaces the one the run recorded; ``model`` swaps only its model.
        """
        info = await self.store.get_run(run_id)
        if info.status in TERMINAL:
            raise ConfigError(f"run {run_id} is {info.status}; fork it to continue from an event")
        if run_id in self._tasks:
            return RunHandle(self, run_id, self._drivers.get(run_id))
        holder = info.lease_owner
        dead = holder if holder and owner_is_dead_here(holder) else None
        taken = await self.store.acquire_lease(run_id, self.owner, self.lease_s, steal_from=dead)
        if taken is None:
            raise LeaseLost(
                f"run {run_id} is being driven by {info.lease_owner}; wait for its lease to "
                f"expire (up to {self.lease_s:g}s after that process stops)"
            )
        if info.status == "dead":
            await self.store.set_status(run_id, "running")
        driver = await self._drive_loaded(run_id, agent, reason="resumed", model=model)
        return RunHandle(self, run_id, driver)

    async def resume_incomplete(self, limit: int = 1000) -> list[RunHandle]:
        """Claim and drive every running run that no live process holds."""
        claimed = await self.store.claim_runs(
            self.owner, self.lease_s, limit, max_recoveries=self.max_recoveries
        )
        handles = []
        for info in claimed:
            try:
                driver = await self._drive_loaded(info.run_id, None, reason="recovered")
            except AgentNotFound as e:
                log.error("cannot resume run %s: %s", info.run_id, e)
                await self.store.release_lease(info.run_id, self.owner)
                continue
            handles.append(RunHandle(self, info.run_id, driver))
        return handles

    async def fork(
        self,
        run_id: str,
        at_seq: int,
        *,
        agent: Agent | None = None,
        model: Model | str | None = None,
        fork_id: str | None = None,
    ) -> RunHandle:
        """A new run sharing ``run_id``'s events 1..``at_seq``, then going its own way."""
        source = await self.store.get_run(run_id)
        if not 1 <= at_seq <= source.last_seq:
            raise ConfigError(
                f"run {run_id} has events 1..{source.last_seq}; cannot fork at {at_seq}"
            )
        fork_id = fork_id or new_run_id()
        forked = RunForked(from_run_id=run_id, at_seq=at_seq)
        await self.store.fork_run(
            run_id,
            NewRun(fork_id, source.agent, source.goal, parent_run_id=source.parent_run_id),
            at_seq,
            [encode_event(forked, time.time())],
            owner=self.owner,
            lease_s=self.lease_s,
        )
        driver = await self._drive_loaded(fork_id, agent, reason=None, model=model)
        return RunHandle(self, fork_id, driver)

    async def _drive_loaded(
        self,
        run_id: str,
        agent: Agent | None,
        reason: str | None,
        model: Model | str | None = None,
    ) -> Driver:
        state = await load_state(self.store, run_id)
        agent = agent or self._agent_for(state)
        if model is not None:
            agent = dataclasses.replace(agent, model=model)
        if agent.digest() != state.agent_digest and state.agent_digest:
            message = (
                f"run {run_id}: agent {agent.name!r} changed since the run started "
                f"(spec {state.agent_digest} -> {agent.digest()})"
            )
            if self.on_agent_change == "refuse":
                await self.store.release_lease(run_id, self.owner)
                raise ConfigError(message + "; refusing to resume (on_agent_change='refuse')")
            log.warning("%s; continuing", message)
        return self._drive(agent, agent.resolved_model(), state, resumed_by=reason)

    def _agent_for(self, state: RunState) -> Agent:
        if state.agent in self._agents:
            return self._agents[state.agent]
        if state.agent_path and not state.agent_path.startswith("__main__:"):
            agent = load_agent(state.agent_path)
            self._agents[agent.name] = agent
            return agent
        raise AgentNotFound(
            f"agent {state.agent!r} of run {state.run_id} is not registered and has no "
            "importable path: pass agent=..., or Runtime(agents=[...]), or define it in an "
            "importable module"
        )

    def _drive(
        self, agent: Agent, model: Model, state: RunState, resumed_by: str | None = None
    ) -> Driver:
        driver = Driver(
            store=self.store,
            agent=agent,
            model=model,
            state=state,
            owner=self.owner,
            snapshot_every=self.snapshot_every,
            on_commit=self._notify,
            secrets=self.secrets,
        )
        run_id = state.run_id
        self._drivers[run_id] = driver
        task = asyncio.create_task(self._run_driver(driver, resumed_by), name=f"run-{run_id}")
        self._tasks[run_id] = task
        return driver

    async def _run_driver(self, driver: Driver, resumed_by: str | None) -> None:
        run_id = driver.state.run_id
        try:
            await driver.run(resumed_by)
        except (ConcurrencyConflict, LeaseLost) as e:
            log.warning("run %s: stopped driving: %s", run_id, e)
        except StoreError as e:
            log.error("run %s: store failure, run left resumable: %s", run_id, e)
        finally:
            self._drivers.pop(run_id, None)
            self._tasks.pop(run_id, None)
            self._notify(run_id)
            with contextlib.suppress(StoreError, asyncio.CancelledError):
                await asyncio.shield(self.store.release_lease(run_id, self.owner))

    async def _renew_leases(self) -> None:
        interval = self.lease_s / 3
        while True:
            await asyncio.sleep(interval)
            try:
                lost = await self.store.renew_leases(self.owner, list(self._tasks), self.lease_s)
            except StoreError as e:
                log.warning("could not renew leases: %s", e)
                continue
            for run_id in lost:
                task = self._tasks.get(run_id)
                if task is not None:
                    log.warning("run %s: lease lost, another process drives it now", run_id)
                    task.cancel()

    # -- control and inspection -----------------------------------------------------------

    async def cancel(self, run_id: str, *, by: str = "user") -> None:
        """Cancel a run, whether this process drives it or another one does."""
        driver = self._drivers.get(run_id)
        task = self._tasks.get(run_id)
        if driver is not None and task is not None:
            driver.cancel_requested = by
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return
        for _ in range(20):
            info = await self.store.get_run(run_id)
            if info.status in TERMINAL:
                raise ConfigError(f"run {run_id} is already {info.status}")
            event = encode_event(RunCancelled(by=by), time.time())
            try:
                await self.store.append(run_id, info.last_seq, [event], status="cancelled")
            except ConcurrencyConflict:
                await asyncio.sleep(0.05)
                continue
            self._notify(run_id)
            return
        raise StoreError(f"run {run_id} kept changing; could not record the cancellation")

    async def state(self, run_id: str) -> RunState:
        """The run's folded state (live from memory when this process drives it)."""
        driver = self._drivers.get(run_id)
        if driver is not None:
            return msgspec.structs.replace(driver.state)
        return await load_state(self.store, run_id)

    async def get_run(self, run_id: str) -> RunInfo:
        return await self.store.get_run(run_id)

    async def list_runs(self, *, status: str | None = None, limit: int = 50) -> list[RunInfo]:
        return await self.store.list_runs(status=status, limit=limit)

    async def replay(self, run_id: str, *, agent: Agent | None = None) -> RunState:
        """Re-decide every step of a run from its log without calling any model or tool."""
        events = await read_events(self.store, run_id)
        if not events:
            raise StoreError(f"run {run_id} has no events")
        state = RunState(run_id=run_id)
        state.apply(events[0].event, events[0].seq, events[0].ts)
        return replay_events(run_id, events, agent or self._agent_for(state))

    def handle(self, run_id: str) -> RunHandle:
        return RunHandle(self, run_id)

    async def events(
        self, run_id: str, after_seq: int = 0, *, follow: bool = True, poll_s: float = 0.25
    ) -> AsyncIterator[StoredEvent]:
        seq = after_seq
        while True:
            for stored in await read_events(self.store, run_id, seq):
                seq = stored.seq
                yield stored
                if isinstance(stored.event, TERMINAL_EVENTS):
                    return
            if not follow:
                return
            info = await self.store.get_run(run_id)
            if info.status in TERMINAL and info.last_seq <= seq:
                return
            await self._wait_for_change(run_id, poll_s)

    def _notify(self, run_id: str) -> None:
        for event in self._watchers.get(run_id, ()):
            event.set()

    async def _wait_for_change(self, run_id: str, seconds: float) -> None:
        changed = asyncio.Event()
        self._watchers.setdefault(run_id, set()).add(changed)
        try:
            await asyncio.wait_for(changed.wait(), seconds)
        except TimeoutError:
            pass
        finally:
            watchers = self._watchers.get(run_id)
            if watchers is not None:
                watchers.discard(changed)
                if not watchers:
                    del self._watchers[run_id]


def run_sync(agent: Agent, goal: str, *, store: str | Store = DEFAULT_STORE_URL) -> RunResult:
    """Run ``agent`` to the end from synchronous code; returns the result."""

    async def main() -> RunResult:
        async with Runtime(store) as runtime:
            run = await runtime.start(agent, goal)
            return await run.wait()

    return asyncio.run(main())
