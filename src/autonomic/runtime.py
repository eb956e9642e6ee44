"""The Runtime: start, submit, resume, fork, cancel, approve, signal and follow runs.

A thin facade over the parts that do the work: the store (what is true), the agent
registry (what this process can run), the supervisor (which runs this process drives,
their leases, and the claim loop that picks up runs that became ready) and the bus
(hints that something changed). Leaving the runtime stops driving without ending any
run: they stay resumable, by this process later or by any other.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import threading
import time
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

import msgspec

from autonomic._text import clean_text
from autonomic.agent import Agent
from autonomic.approvals import ApprovalSigner, PendingApproval, load_approval_key
from autonomic.bus import Bus, LocalBus, open_bus
from autonomic.bus.base import READY_TOPIC, run_topic
from autonomic.checks import json_safe
from autonomic.cluster import ChildRunner
from autonomic.errors import (
    AgentNotFound,
    ApprovalRefused,
    ConfigError,
    LeaseLost,
    RunEnded,
    RunFailedError,
    StoreError,
)
from autonomic.events import (
    TERMINAL_EVENTS,
    ApprovalRequested,
    CancelRequested,
    Event,
    RunForked,
    SignalReceived,
    encode_event,
)
from autonomic.guards.base import screen_goal, screen_inbound
from autonomic.guards.budget import TOPUP_SIGNAL, topup_data
from autonomic.guards.detectors import RegexDetector
from autonomic.lifecycle import approval_key, run_started, signal_key
from autonomic.loader import StoredEvent, load_state, read_events
from autonomic.messages import Usage
from autonomic.models.base import Model
from autonomic.owner import new_owner_id, owner_is_dead_here
from autonomic.registry import AgentRegistry
from autonomic.replay import replay_events
from autonomic.state import TERMINAL, RunState
from autonomic.store import DEFAULT_STORE_URL, open_store
from autonomic.store.base import (
    CANCEL_KEY,
    Claim,
    ClaimFilter,
    Delivery,
    Lease,
    NewRun,
    RunInfo,
    Store,
    TenantBudget,
    checked_priority,
)
from autonomic.supervisor import AgentChangePolicy, Supervisor
from autonomic.tenants import (
    checked_limits,
    grant_for_run,
    grant_waiting_runs,
    settled_budget,
    tenant_store,
)
from autonomic.tools.executor import CANCEL_GRACE_S
from autonomic.tools.secrets import EnvSecrets, SecretsProvider

__all__ = ["RunHandle", "RunResult", "Runtime", "run_sync"]

log = logging.getLogger("autonomic.runtime")

T = TypeVar("T")
ENDED = TERMINAL | {"dead"}
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_SUSPECT = RegexDetector()
"""Finds what may be personal data in a signal's name, so that the run's guards judge it."""


class RunResult(msgspec.Struct, frozen=True):
    run_id: str
    status: str
    answer: str | None
    error: str | None
    usage: Usage
    cost: float
    model_calls: int
    events: int
    waiting_for: str | None = None

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
            state.waiting.reason if state.waiting else None,
        )


class RunHandle:
    """A run, whether this process drives it or not."""

    def __init__(self, runtime: Runtime, run_id: str) -> None:
        self.runtime = runtime
        self.run_id = run_id

    def __repr__(self) -> str:
        return f"<RunHandle {self.run_id}>"

    async def wait(self, *, check: bool = True) -> RunResult:
        """Wait until the run ends (wrap in ``asyncio.timeout`` to bound it). Raises
        RunFailedError if it did not complete, unless ``check=False``."""
        result = await self.runtime._follow_until(self.run_id, ENDED)
        if check and result.status != "completed":
            raise RunFailedError(self.run_id, result.status, result.error or result.status)
        return result

    async def wait_until_waiting(self) -> RunResult:
        """Wait until the run suspends (for an approval, a signal, children, a timer) or
        ends; ``result.waiting_for`` says what it waits for."""
        return await self.runtime._follow_until(self.run_id, ENDED | {"waiting"})

    async def cancel(self, by: str = "user") -> RunResult | None:
        return await self.runtime.cancel(self.run_id, by=by)

    async def state(self) -> RunState:
        return await self.runtime.state(self.run_id)

    async def pending_approvals(self) -> list[PendingApproval]:
        return await self.runtime.pending_approvals(self.run_id)

    def events(self, after_seq: int = 0, *, follow: bool = True) -> AsyncIterator[StoredEvent]:
        """The run's events from ``after_seq`` on; with ``follow``, new ones as they come."""
        return self.runtime.events(self.run_id, after_seq, follow=follow)


def new_run_id() -> str:
    return secrets.token_hex(8)


class Runtime:
    """Drives agent runs durably over a store chosen by URL (``sqlite:///runs.db``).

    ``wake`` (default on): claim and drive this runtime's agents' runs that become ready
    (a wait that ended, a submitted run). ``resume_incomplete``: also adopt runs, of any
    agent importable here, whose process died. ``max_recoveries``: a run that crashed
    its process more often than that is dead-lettered. ``bus``: a Bus, or its URL
    (``redis://...``, ``nats://...``; default: the store's own bus if it has one, as
    PostgreSQL's LISTEN/NOTIFY, else in-process), opened and closed with the runtime,
    that carries wake-ups and live following between processes. ``children``: a
    ``ChildRunner`` (``autonomic.cluster.ray.RayChildren``) that drives the child runs
    spawned here elsewhere; by default they are driven here.
    """

    def __init__(
        self,
        store: str | Store = DEFAULT_STORE_URL,
        *,
        agents: Sequence[Agent] = (),
        wake: bool = True,
        resume_incomplete: bool = False,
        lease_s: float = 30.0,
        snapshot_every: int = 100,
        max_recoveries: int = 5,
        on_agent_change: AgentChangePolicy = "warn",
        secrets: SecretsProvider | None = None,
        bus: Bus | str | None = None,
        children: ChildRunner | None = None,
        poll_s: float = 1.0,
        max_concurrent_runs: int = 10_000,
    ) -> None:
        if lease_s <= 0 or snapshot_every < 1 or max_recoveries < 1:
            raise ConfigError("lease_s, snapshot_every and max_recoveries must be positive")
        if poll_s <= 0 or max_concurrent_runs < 1:
            raise ConfigError("poll_s and max_concurrent_runs must be positive")
        if on_agent_change not in ("warn", "refuse"):
            raise ConfigError("on_agent_change must be 'warn' or 'refuse'")
        self.store: Store = open_store(store) if isinstance(store, str) else store
        self.bus: Bus = (
            open_bus(bus)
            if isinstance(bus, str)
            else (bus or getattr(self.store, "bus", None) or LocalBus())
        )
        self.registry = AgentRegistry(agents)
        self.owner = new_owner_id()
        self.lease_s = lease_s
        self.secrets: SecretsProvider = secrets or EnvSecrets()
        self._options = {
            "snapshot_every": snapshot_every,
            "max_recoveries": max_recoveries,
            "on_agent_change": on_agent_change,
            "claim": wake or resume_incomplete,
            "orphans": resume_incomplete,
            "poll_s": poll_s,
            "capacity": max_concurrent_runs,
        }
        self.children = children
        self._supervisor: Supervisor | None = None
        self._signer: ApprovalSigner | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.store.open()
        try:
            await self.bus.open()
        except BaseException:
            await self.store.close()
            raise
        try:
            self._signer = ApprovalSigner(lambda: load_approval_key(self.secrets))
            self._supervisor = Supervisor(
                self.store,
                self.bus,
                self.registry,
                owner=self.owner,
                lease_s=self.lease_s,
                secrets=self.secrets,
                signer=self._signer,
                **self._options,  # type: ignore[arg-type]
            )
            self._supervisor.child_runner = self.children
            self._supervisor.start()
        except BaseException:
            await self.bus.close()
            await self.store.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._supervisor is not None:
                await self._supervisor.stop()
        finally:
            self._supervisor = None
            try:
                await self.bus.close()
            finally:
                await self.store.close()

    @property
    def supervisor(self) -> Supervisor:
        if self._supervisor is None:
            raise ConfigError("the runtime is not open: use 'async with Runtime(...) as runtime:'")
        return self._supervisor

    @property
    def signer(self) -> ApprovalSigner:
        if self._signer is None:
            raise ConfigError("the runtime is not open: use 'async with Runtime(...) as runtime:'")
        return self._signer

    def register(self, agent: Agent) -> None:
        """Serve runs of ``agent`` (matched by name) in this process."""
        self.registry.register(agent)

    # -- starting and resuming ------------------------------------------------------------

    async def start(
        self,
        agent: Agent,
        goal: str,
        *,
        run_id: str | None = None,
        tenant: str | None = None,
        priority: int = 0,
    ) -> RunHandle:
        """Start a run of ``agent`` towards ``goal`` and drive it in this process
        (``priority`` orders it among ready runs if it is ever claimed again)."""
        supervisor = self.supervisor
        goal, run_id = _checked_goal(agent, goal), _checked_run_id(run_id)
        model = agent.resolved_model()
        self.registry.register(agent)
        goal = await screen_goal(agent.guards, self.store, run_id, goal)
        budget = await grant_for_run(self.store, tenant, run_id)
        state, new_run, events = _new_run(
            agent, goal, model.name, run_id, tenant, budget, checked_priority(priority)
        )
        supervisor.reserve(run_id)
        try:
            info = await self.store.create_run(
                new_run, events, owner=self.owner, lease_s=self.lease_s
            )
        except BaseException:
            supervisor.unreserve(run_id)
            await self._release_grant(tenant, run_id, budget)
            raise
        lease = Lease(self.owner, info.lease_epoch)
        supervisor.drive(agent, model, state, lease, None, mail=info.inbox_last > 0)
        return RunHandle(self, run_id)

    async def submit(
        self,
        agent: Agent | str,
        goal: str,
        *,
        run_id: str | None = None,
        tenant: str | None = None,
        priority: int = 0,
    ) -> RunHandle:
        """Create a run without driving it here: any runtime serving its agent (this one
        included, unless ``wake=False``) claims and drives it; ready runs of a higher
        ``priority`` are claimed first."""
        if isinstance(agent, str):
            known = self.registry.get(agent)
            if known is None:
                raise ConfigError(f"no agent named {agent!r} is registered with this runtime")
            agent = known
        goal, run_id = _checked_goal(agent, goal), _checked_run_id(run_id)
        self.registry.register(agent)
        goal = await screen_goal(agent.guards, self.store, run_id, goal)
        budget = await grant_for_run(self.store, tenant, run_id)
        _, new_run, events = _new_run(
            agent, goal, agent.model_name, run_id, tenant, budget, checked_priority(priority)
        )
        try:
            await self.store.create_run(new_run, events, owner=None, lease_s=self.lease_s)
        except BaseException:
            await self._release_grant(tenant, run_id, budget)
            raise
        self.bus.publish(READY_TOPIC, run_id)
        return RunHandle(self, run_id)

    async def _release_grant(
        self, tenant: str | None, run_id: str, budget: dict[str, float] | None
    ) -> None:
        """A run that could not be created gives its tenant's share back."""
        if tenant is not None and budget is not None:
            await tenant_store(self.store).settle_tenant_budget(tenant, run_id, {})

    # -- tenants ----------------------------------------------------------------------------

    async def set_tenant_budget(
        self,
        tenant: str,
        *,
        cost_usd: float | None = None,
        tokens: int | None = None,
        run_share: float = 0.5,
    ) -> TenantBudget:
        """Limit what ``tenant``'s runs may spend together. Each new root run of the
        tenant is given ``run_share`` of what the tenant has left; what it does not spend
        comes back when it ends."""
        if not isinstance(tenant, str) or not tenant.strip():
            raise ConfigError("a tenant budget needs a tenant id")
        if isinstance(run_share, bool) or not isinstance(run_share, int | float):
            raise ConfigError("run_share must be a fraction in (0, 1]")
        if not 0 < run_share <= 1:
            raise ConfigError("run_share must be a fraction in (0, 1]")
        limits = checked_limits(cost_usd, tokens)
        return await tenant_store(self.store).set_tenant_budget(tenant, limits, float(run_share))

    async def topup_tenant(
        self, tenant: str, *, cost_usd: float | None = None, tokens: int | None = None
    ) -> TenantBudget:
        """Raise ``tenant``'s limits by these amounts: its runs waiting for budget are
        given shares of them and go on, and its new runs get shares of what is left."""
        amounts = checked_limits(cost_usd, tokens)
        await tenant_store(self.store).topup_tenant(tenant, amounts)
        for run_id, grant in await grant_waiting_runs(self.store, tenant):
            await self.topup(run_id, **grant)  # type: ignore[arg-type]
        budget = await settled_budget(self.store, tenant)
        assert budget is not None
        return budget

    async def tenant_budget(self, tenant: str) -> TenantBudget | None:
        """``tenant``'s budget (limits, spent, held by unfinished runs), with every ended
        run settled; None when it has none."""
        return await settled_budget(self.store, tenant)

    async def resume(
        self, run_id: str, *, agent: Agent | None = None, model: Model | str | None = None
    ) -> RunHandle:
        """Continue a run that is not finished: after its process crashed, or a dead run.

        ``agent`` replaces the one the run recorded; ``model`` swaps only its model.
        """
        supervisor = self.supervisor
        if supervisor.busy(run_id):
            return RunHandle(self, run_id)
        supervisor.reserve(run_id)
        try:
            claim = await self._claim(run_id)
            if claim is None:
                holder = (await self.store.get_run(run_id)).lease_owner
                raise LeaseLost(
                    f"run {run_id} is being driven by {holder}; wait for its lease to expire "
                    f"(up to {self.lease_s:g}s after that process stops)"
                )
        except BaseException:
            supervisor.unreserve(run_id)
            raise
        if agent is not None:
            self.registry.register(agent)
        await supervisor.adopt(claim, "resumed", agent=agent, model=model)
        return RunHandle(self, run_id)

    async def _claim(self, run_id: str) -> Claim | None:
        """Take the run's lease by hand: free, expired, or held by a process here that died."""
        claim = await self.store.claim_run(run_id, self.owner, self.lease_s, revive=True)
        if claim is not None:
            return claim
        holder = (await self.store.get_run(run_id)).lease_owner
        if holder is None or not owner_is_dead_here(holder):
            return None
        return await self.store.claim_run(
            run_id, self.owner, self.lease_s, steal_from=holder, revive=True
        )

    async def resume_incomplete(self, limit: int = 1000) -> list[RunHandle]:
        """Claim and drive, now, every run ready to be driven whose agent can be loaded
        here (its process died, or it waits no more)."""
        supervisor = self.supervisor
        claims = await self.store.claim_runs(
            self.owner, self.lease_s, limit, ClaimFilter(orphans=True)
        )
        handles = []
        for claim in claims:
            run_id = claim.info.run_id
            if supervisor.busy(run_id):
                continue
            supervisor.reserve(run_id)
            try:
                await supervisor.adopt(claim, "recovered")
            except Exception as e:
                log.error("cannot resume run %s: %s", run_id, e)
                continue
            handles.append(RunHandle(self, run_id))
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
        supervisor = self.supervisor
        source = await self.store.get_run(run_id)
        if not isinstance(at_seq, int) or not 1 <= at_seq <= source.last_seq:
            raise ConfigError(
                f"run {run_id} has events 1..{source.last_seq}; cannot fork at {at_seq}"
            )
        last = await read_events(self.store, run_id, at_seq - 1, limit=1)
        if last and isinstance(last[0].event, TERMINAL_EVENTS):
            raise ConfigError(
                f"event {at_seq} of run {run_id} ends it ({type(last[0].event).__name__}); "
                f"fork at {at_seq - 1} or earlier to take another path"
            )
        fork_id = _checked_run_id(fork_id)
        forked = RunForked(from_run_id=run_id, at_seq=at_seq)
        new_run = NewRun(
            fork_id,
            source.agent,
            source.goal,
            parent_run_id=source.parent_run_id,
            tenant=source.tenant,
            priority=source.priority,
        )
        supervisor.reserve(fork_id)
        try:
            info = await self.store.fork_run(
                run_id,
                new_run,
                at_seq,
                [encode_event(forked, time.time())],
                owner=self.owner,
                lease_s=self.lease_s,
            )
        except BaseException:
            supervisor.unreserve(fork_id)
            raise
        if agent is not None:
            self.registry.register(agent)
        await supervisor.adopt(
            Claim(Lease(self.owner, info.lease_epoch), info, False), "", agent=agent, model=model
        )
        return RunHandle(self, fork_id)

    # -- talking to runs ------------------------------------------------------------------

    async def cancel(
        self, run_id: str, *, by: str = "user", wait_s: float = 10.0
    ) -> RunResult | None:
        """Cancel a run, wherever it is driven (or waiting). Returns its final result, or
        None when the process driving it has not recorded the cancellation within
        ``wait_s`` (it will, at its next step)."""
        supervisor = self.supervisor
        info = await self.store.get_run(run_id)
        if info.status in TERMINAL:
            raise ConfigError(f"run {run_id} is already {info.status}")
        try:
            await self.store.deliver(
                Delivery(run_id, CANCEL_KEY, encode_event(CancelRequested(by=by), time.time()))
            )
        except RunEnded as e:
            raise ConfigError(str(e)) from None
        driver, task = supervisor.drivers.get(run_id), supervisor.tasks.get(run_id)
        if driver is not None and task is not None:
            driver.interrupt(by)  # a driver that ignores it is soon left behind and replaced
            await asyncio.wait([task], timeout=CANCEL_GRACE_S + 1)
        if not supervisor.busy(run_id):
            await self._cancel_unattended(run_id, by)
        try:
            async with asyncio.timeout(wait_s):
                return await self._follow_until(run_id, ENDED)
        except TimeoutError:
            return None

    async def _cancel_unattended(self, run_id: str, by: str) -> None:
        supervisor = self.supervisor
        supervisor.reserve(run_id)
        try:
            claim = await self._claim(run_id)
        except RunEnded:
            supervisor.unreserve(run_id)
            return
        except BaseException:
            supervisor.unreserve(run_id)
            raise
        if claim is None:  # another process drives it: it reads the cancellation soon
            supervisor.unreserve(run_id)
            return
        try:
            await supervisor.cancel_unattended(claim, by)
        except BaseException:
            supervisor.unreserve(run_id)
            raise

    async def pending_approvals(self, run_id: str) -> list[PendingApproval]:
        """The tool calls of ``run_id`` waiting for a person, with their digests."""
        state = await self.state(run_id)
        if state.terminal:
            return []
        return [PendingApproval.of(run_id, request) for request in state.approvals.values()]

    async def approve(
        self,
        run_id: str,
        digest: str,
        *,
        approver: str,
        args: dict[str, Any] | None = None,
    ) -> PendingApproval:
        """Approve the pending call with this digest (or action id, call id, or a unique
        digest prefix), optionally with edited arguments; the run then goes on."""
        request = await self._pending(run_id, digest, approver)
        if args is not None:
            try:
                args = json_safe(args)
            except ValueError as e:
                raise ConfigError(f"the edited arguments are not JSON data: {e}") from None
            if not isinstance(args, dict):
                raise ConfigError("the edited arguments must be a JSON object")
            args = await self._screened(run_id, "approval", args)
            if not isinstance(args, dict):
                raise ConfigError("a guard screened the edited arguments into something else")
        await self._decide(run_id, request, self.signer.grant(run_id, request, approver, args))
        return PendingApproval.of(run_id, request)

    async def deny(
        self, run_id: str, digest: str, *, approver: str, reason: str = ""
    ) -> PendingApproval:
        """Deny the pending call; the model sees the denial (and ``reason``) as its result."""
        request = await self._pending(run_id, digest, approver)
        denial = self.signer.deny(run_id, request, approver, clean_text(reason))
        await self._decide(run_id, request, denial)
        return PendingApproval.of(run_id, request)

    async def _pending(self, run_id: str, ref: str, approver: str) -> ApprovalRequested:
        if not isinstance(approver, str) or not approver.strip():
            raise ConfigError("say who decides: approver='name'")
        state = await self.state(run_id)
        if state.terminal:
            raise ApprovalRefused(f"run {run_id} is {state.status}; nothing waits for approval")
        matches = [
            r
            for r in state.approvals.values()
            if ref in (r.digest, r.action_id, r.call_id)
            or (len(ref) >= 8 and r.digest.startswith(ref))
        ]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise ApprovalRefused(
                f"{ref!r} matches {len(matches)} pending approvals: give the digest"
            )
        decided = state.decisions.get(ref)
        if decided:
            raise ApprovalRefused(f"that call of run {run_id} was already {decided}")
        pending = ", ".join(f"{r.tool} ({r.digest[:12]})" for r in state.approvals.values())
        raise ApprovalRefused(
            f"no pending approval of run {run_id} matches {ref!r}"
            + (f"; pending: {pending}" if pending else "; none is pending")
        )

    async def _decide(self, run_id: str, request: ApprovalRequested, decision: Event) -> None:
        delivery = Delivery(
            run_id, approval_key(request.digest), encode_event(decision, time.time())
        )
        item = await self.store.deliver(delivery, unique=True)
        if item is None:
            raise ApprovalRefused(
                f"a decision on {request.tool} of run {run_id} is already on its way"
            )
        self._delivered(run_id, item)

    async def signal(self, run_id: str, name: str, data: Any = None) -> None:
        """Send a named signal, with JSON data, to a run (it reads it at its next step)."""
        if not isinstance(name, str) or not name.strip():
            raise ConfigError("a signal needs a non-empty name")
        try:
            data = json_safe(data)
        except ValueError as e:
            raise ConfigError(f"the signal's data is not JSON data: {e}") from None
        if _SUSPECT.analyze(name):  # rare: a name is recorded as it is, so it is screened too
            screened = await self._screened(run_id, "signal", {"name": name, "data": data})
            if screened["name"] != name:
                raise ConfigError(
                    f"the signal's name holds personal data ({screened['name']}): names are "
                    "recorded as they are; send it in the signal's data, which is masked"
                )
            data = screened["data"]
        elif data is not None:
            data = await self._screened(run_id, "signal", data)
        await self._send_signal(run_id, name, data)

    async def _send_signal(self, run_id: str, name: str, data: Any) -> None:
        """Deliver a signal whose data needs no screening (the runtime's own, or screened)."""
        event = SignalReceived(clean_text(name), data)
        delivery = Delivery(run_id, signal_key(event.name), encode_event(event, time.time()))
        try:
            item = await self.store.deliver(delivery)
        except RunEnded as e:
            raise ConfigError(str(e)) from None
        assert item is not None
        self._delivered(run_id, item)

    async def topup(
        self,
        run_id: str,
        *,
        cost_usd: float | None = None,
        tokens: int | None = None,
        wall_s: float | None = None,
        model_calls: int | None = None,
        tool_calls: int | None = None,
    ) -> None:
        """Raise a run's budget by these amounts; a run waiting for budget goes on."""
        data = topup_data(
            cost_usd=cost_usd,
            tokens=tokens,
            wall_s=wall_s,
            model_calls=model_calls,
            tool_calls=tool_calls,
        )
        await self._send_signal(run_id, TOPUP_SIGNAL, data)  # amounts: nothing to screen

    async def _screened(self, run_id: str, kind: str, data: Any) -> Any:
        """``data`` sent to ``run_id`` as its agent's guards let it be recorded (masked).
        A run whose agent is unknown here cannot be screened, so it is refused."""
        state = await self.state(run_id)
        driver = self._supervisor.drivers.get(run_id) if self._supervisor else None
        try:
            agent = (
                driver.agent
                if driver is not None
                else await self.registry.load(state.agent, state.agent_path, run_id=run_id)
            )
        except AgentNotFound as e:
            raise ConfigError(f"cannot screen the {kind} data sent to run {run_id}: {e}") from None
        return await screen_inbound(agent.guards, self.store, state, kind, data)

    def _delivered(self, run_id: str, item: int) -> None:
        driver = self.supervisor.drivers.get(run_id)
        if driver is not None:
            driver.notice_mail(item)
        self.bus.publish(READY_TOPIC, run_id)

    # -- inspection -----------------------------------------------------------------------

    async def state(self, run_id: str) -> RunState:
        """The run's folded state (live from memory when this process drives it)."""
        driver = self._supervisor.drivers.get(run_id) if self._supervisor else None
        if driver is not None:
            return msgspec.structs.replace(driver.state)
        return await load_state(self.store, run_id)

    async def get_run(self, run_id: str) -> RunInfo:
        return await self.store.get_run(run_id)

    async def list_runs(
        self,
        *,
        status: str | None = None,
        waiting: bool = False,
        parent_run_id: str | None = None,
        limit: int = 50,
    ) -> list[RunInfo]:
        if waiting:
            status = "waiting"
        return await self.store.list_runs(status=status, parent_run_id=parent_run_id, limit=limit)

    async def replay(self, run_id: str, *, agent: Agent | None = None) -> RunState:
        """Re-decide every step of a run from its log without calling any model or tool."""
        events = await read_events(self.store, run_id)
        if not events:
            raise StoreError(f"run {run_id} has no events")
        state = RunState(run_id=run_id)
        state.apply(events[0].event, events[0].seq, events[0].ts)
        if agent is None:
            agent = await self.registry.load(state.agent, state.agent_path, run_id=run_id)
        return replay_events(run_id, events, agent, self.registry.ancestors(state.lineage))

    def handle(self, run_id: str) -> RunHandle:
        return RunHandle(self, run_id)

    async def events(
        self, run_id: str, after_seq: int = 0, *, follow: bool = True
    ) -> AsyncIterator[StoredEvent]:
        """The run's events after ``after_seq``; with ``follow``, until the run ends."""
        seq = after_seq
        async with self.bus.subscribe(run_topic(run_id)) as changes:
            while True:
                batch = await read_events(self.store, run_id, seq, limit=1000)
                for stored in batch:
                    seq = stored.seq
                    yield stored
                if len(batch) == 1000:
                    continue
                if not follow:
                    return
                info = await self.store.get_run(run_id)
                if info.status in TERMINAL and info.last_seq <= seq:
                    return
                await changes.next(0.5)

    async def _follow_until(self, run_id: str, statuses: frozenset[str]) -> RunResult:
        async with self.bus.subscribe(run_topic(run_id)) as changes:
            while True:
                supervisor = self._supervisor
                task = supervisor.tasks.get(run_id) if supervisor else None
                driver = supervisor.drivers.get(run_id) if supervisor else None
                if task is not None and driver is not None:
                    await asyncio.wait([task], timeout=1.0)  # or until it is replaced
                    if not task.done():
                        continue
                    if isinstance(driver.failure, StoreError) and not isinstance(
                        driver.failure, LeaseLost
                    ):
                        raise driver.failure
                    if driver.state.status in statuses:
                        return RunResult.of(driver.state)
                    continue
                info = await self.store.get_run(run_id)
                if info.status in statuses:
                    return RunResult.of(await load_state(self.store, run_id))
                await changes.next(0.5)


def _checked_goal(agent: Agent, goal: str) -> str:
    if not isinstance(agent, Agent):
        raise ConfigError(f"start() needs an autonomic.Agent, got {type(agent).__name__}")
    if not isinstance(goal, str) or not goal.strip():
        raise ConfigError("the goal is empty: say what the agent should do")
    if clean_text(goal) != goal:
        raise ConfigError("the goal is not valid UTF-8 text (it has a lone surrogate)")
    return goal


def _checked_run_id(run_id: str | None) -> str:
    if run_id is None:
        return new_run_id()
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise ConfigError(f"run id {run_id!r} must be 1-128 letters, digits, '.', '_', ':' or '-'")
    return run_id


def _new_run(
    agent: Agent,
    goal: str,
    model: str,
    run_id: str,
    tenant: str | None,
    budget: dict[str, float] | None = None,
    priority: int = 0,
) -> tuple[RunState, NewRun, list[Any]]:
    started = run_started(agent, goal, model, tenant=tenant, budget=budget, priority=priority)
    ts = time.time()
    state = RunState(run_id=run_id)
    state.apply(started, 1, ts)
    run = NewRun(run_id, agent.name, goal[:500], tenant=tenant, priority=priority)
    return state, run, [encode_event(started, ts)]


def run_sync(agent: Agent, goal: str, *, store: str | Store = DEFAULT_STORE_URL) -> RunResult:
    """Run ``agent`` to the end from synchronous code; returns the result.

    Inside a running event loop (a notebook), the run gets a loop of its own in a
    worker thread, and this call blocks until it ends; use ``await runtime.start(...)``
    there to stay asynchronous.
    """

    async def main() -> RunResult:
        async with Runtime(store) as runtime:
            run = await runtime.start(agent, goal)
            return await run.wait()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    outcome: list[RunResult | BaseException] = []

    def in_thread() -> None:
        try:
            outcome.append(asyncio.run(main()))
        except BaseException as e:
            outcome.append(e)

    thread = threading.Thread(target=in_thread, name="autonomic-run-sync")
    thread.start()
    thread.join()
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]
