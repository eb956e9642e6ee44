"""The store protocols: where runs, their events, inboxes and leases live.

The store knows nothing of models or strategies. It is split by role:

- ``EventLog``: a run's events, appended in order by whoever holds its lease (a commit
  is refused unless the log ends where the caller expects and its lease is current),
  plus blobs and snapshots; a fork shares its parent's events instead of copying them;
- ``RunIndex``: one row per run, for listing and finding runs without reading events;
- ``Leases``: who drives a run. Taking a lease over bumps its epoch, and a commit that
  carries a stale epoch is refused, so a stalled process can never write after another
  took its run (fencing);
- ``Inbox``: what arrives from outside (approvals, signals, child results, cancellation).
  A delivery that a waiting run is waiting for makes it ready; any runtime serving the
  run's agent then claims it.

One class may play every role; ``Store`` is all four together. Integers (sequence
numbers, ids, epochs, limits) are 64-bit: a backend may refuse larger ones with ConfigError.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Protocol, Self, runtime_checkable

import msgspec

from autonomic.errors import ConfigError, RunEnded
from autonomic.events import EventRecord, NewEvent

__all__ = [
    "ANY_READY",
    "TERMINAL_STATUSES",
    "BoardEntry",
    "Boards",
    "Claim",
    "ClaimFilter",
    "Commit",
    "Committed",
    "Delivery",
    "EventLog",
    "Inbox",
    "InboxItem",
    "Lease",
    "Leases",
    "Lineage",
    "NewRun",
    "RunIndex",
    "RunInfo",
    "Store",
    "TenantBudget",
    "TenantBudgets",
    "Vaults",
    "Wait",
    "check_claimable",
    "check_limit",
    "check_wait",
    "checked_priority",
    "claim_order",
    "full_under_limits",
    "lease_is_free",
    "lineage_segments",
    "new_run_info",
    "wait_is_over",
    "within_limits",
]

TERMINAL_STATUSES = ("completed", "failed", "cancelled")
CANCEL_KEY = "cancel"
"""The inbox key of a cancellation; it wakes a waiting run whatever it waits for."""


class NewRun(msgspec.Struct, frozen=True, gc=False):
    run_id: str
    agent: str
    goal: str
    parent_run_id: str | None = None
    root_run_id: str | None = None
    depth: int = 0
    tenant: str | None = None
    priority: int = 0
    """Ready runs of higher priority are claimed first (then the oldest first)."""


class Wait(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """What a waiting run waits for: any one group of inbox keys all arriving, or ``wake_at``.

    ``reason`` says it for people (``runs list --waiting``).
    """

    groups: tuple[tuple[str, ...], ...] = ()
    wake_at: float | None = None
    reason: str = ""


class RunInfo(msgspec.Struct, frozen=True, gc=False):
    """A run's row: what listing and claiming need without reading its events.

    ``wake_at`` is when the run may be claimed next: the time a waiting run's timer
    fires (or its wait ended), or the back-off of a run whose last start failed.
    """

    run_id: str
    agent: str
    goal: str
    status: str
    created_at: float
    updated_at: float
    last_seq: int
    parent_run_id: str | None = None
    root_run_id: str | None = None
    depth: int = 0
    tenant: str | None = None
    forked_from: str | None = None
    forked_at: int | None = None
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    lease_epoch: int = 0
    recoveries: int = 0
    wake_at: float | None = None
    wait: Wait | None = None
    inbox_last: int = 0
    """The id of the newest inbox item ever delivered to this run."""
    priority: int = 0
    """Set when the run is submitted; claims take higher priorities first."""


class Lease(msgspec.Struct, frozen=True, gc=False):
    """The fencing token a driver holds: every commit carries it."""

    owner: str
    epoch: int


class Claim(msgspec.Struct, frozen=True, gc=False):
    """A lease just taken, and the row as it was when taken."""

    lease: Lease
    info: RunInfo
    took_over: bool
    """True when another owner held the lease before (a recovery)."""


class Delivery(msgspec.Struct, frozen=True, gc=False):
    """An inbox item for ``run_id``: an encoded event under a key (``approval:<digest>``,
    ``signal:<name>``, ``child:<run id>``, ``cancel``)."""

    run_id: str
    key: str
    event: NewEvent


class InboxItem(msgspec.Struct, frozen=True, gc=False):
    id: int
    key: str
    record: EventRecord
    """The delivered event, still encoded (its ``seq`` is 0: it is not in the log yet)."""


class Commit(msgspec.Struct, frozen=True, gc=False):
    """One atomic write by the driver of ``run_id``.

    ``events`` go after event ``expected_seq``; ``status`` becomes the row's status;
    ``wait`` records what the run waits for, and is required when the run is left
    ``waiting`` (ConfigError otherwise); inbox items up to ``consumed`` are removed;
    ``deliveries`` go to other runs' inboxes (skipped for runs that have ended or do not
    exist); ``children`` are created, each with its first events, leased to
    the committer for ``children_lease_s`` when that is set (so it can drive them at
    once) and unleased otherwise; ``release`` gives the lease up. Everything happens, or
    nothing.
    """

    run_id: str
    expected_seq: int
    events: Sequence[NewEvent]
    lease: Lease
    status: str | None = None
    wait: Wait | None = None
    consumed: int = 0
    deliveries: Sequence[Delivery] = ()
    children: Sequence[tuple[NewRun, Sequence[NewEvent]]] = ()
    children_lease_s: float | None = None
    release: bool = False


class Committed(msgspec.Struct, frozen=True, gc=False):
    last_seq: int
    inbox_last: int
    """The newest inbox item of the run: above what the driver consumed means mail."""
    ready: bool = False
    """A wait committed with ``wait`` was already over (what it waited for had arrived)."""


def new_run_info(
    run: NewRun,
    first_seq: int,
    event_count: int,
    *,
    owner: str | None,
    lease_s: float,
    forked_from: str | None,
    now: float,
) -> RunInfo:
    """The row of a run just created (or forked, sharing events before ``first_seq``)."""
    return RunInfo(
        run_id=run.run_id,
        agent=run.agent,
        goal=run.goal,
        status="running",
        created_at=now,
        updated_at=now,
        last_seq=first_seq + event_count - 1,
        parent_run_id=run.parent_run_id,
        root_run_id=run.root_run_id or run.run_id,
        depth=run.depth,
        tenant=run.tenant,
        forked_from=forked_from,
        forked_at=first_seq - 1 if forked_from else None,
        lease_owner=owner,
        lease_expires_at=now + lease_s if owner else None,
        lease_epoch=1 if owner else 0,
        priority=run.priority,
    )


def claim_order(info: RunInfo) -> tuple[int, float]:
    """The order ready runs are claimed in: higher priority first, then the oldest."""
    return (-info.priority, info.created_at)


@dataclass(frozen=True, slots=True)
class ClaimFilter:
    """Which ready runs ``Leases.claim_runs`` may take, and the limits it keeps to.

    ``agents``: only runs of these agents (None: any); ``orphans``: also running runs
    whose owner let its lease expire (it crashed); runs of ``exclude_tenants`` are left.
    ``agent_limits`` and ``tenant_limit`` cap the runs of an agent, and of any one tenant,
    that live leases may hold at once in the whole store. Checked and copied once, when
    made, so that every backend reads the same frozen value.
    """

    agents: Collection[str] | None = None
    orphans: bool = False
    exclude_tenants: Collection[str] = ()
    agent_limits: Mapping[str, int] | None = None
    tenant_limit: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.agents, str) or isinstance(self.exclude_tenants, str):
            raise ConfigError("agents and exclude_tenants are collections of names, not a name")
        # a limit of 0 would strand the runs it covers
        for name, n in (self.agent_limits or {}).items():
            if not isinstance(n, int) or n < 1:
                raise ConfigError(f"the limit of agent {name!r} must be a whole number, 1 or more")
        tenant_limit = self.tenant_limit
        if tenant_limit is not None and (not isinstance(tenant_limit, int) or tenant_limit < 1):
            raise ConfigError("the tenant limit must be a whole number, 1 or more")
        freeze = object.__setattr__
        freeze(self, "agents", None if self.agents is None else frozenset(self.agents))
        freeze(self, "exclude_tenants", frozenset(self.exclude_tenants))
        limits = dict(self.agent_limits or {})
        freeze(self, "agent_limits", MappingProxyType(limits) if limits else None)

    @property
    def limited(self) -> bool:
        """Whether a claim must count the live leases first."""
        return self.agent_limits is not None or self.tenant_limit is not None


ANY_READY = ClaimFilter()
"""Any ready run of any agent, orphans left, no limits: ``claim_runs``'s default."""


def _lease_counts(
    leased: Iterable[tuple[str, str | None, int]],
) -> tuple[Counter[str], Counter[str]]:
    agents: Counter[str] = Counter()
    tenants: Counter[str] = Counter()
    for agent, tenant, n in leased:
        agents[agent] += n
        if tenant is not None:
            tenants[tenant] += n
    return agents, tenants


def within_limits(
    candidates: Iterable[RunInfo],
    leased: Iterable[tuple[str, str | None, int]],
    limit: int,
    limits: ClaimFilter,
) -> list[RunInfo]:
    """The ``candidates`` (in claim order) that may be claimed without any agent or tenant
    going over its limit, counting ``leased``: ``(agent, tenant, count)`` of the runs that
    live leases hold now, in every process. Runs without a tenant count for no tenant."""
    agents, tenants = _lease_counts(leased)
    caps, tenant_limit = limits.agent_limits or {}, limits.tenant_limit
    picked: list[RunInfo] = []
    for info in candidates:
        if len(picked) >= limit:
            break
        cap = caps.get(info.agent)
        if cap is not None and agents[info.agent] >= cap:
            continue
        tenant = info.tenant
        if tenant is not None and tenant_limit is not None and tenants[tenant] >= tenant_limit:
            continue
        agents[info.agent] += 1
        if tenant is not None:
            tenants[tenant] += 1
        picked.append(info)
    return picked


def full_under_limits(
    leased: Iterable[tuple[str, str | None, int]], limits: ClaimFilter
) -> tuple[list[str], list[str]]:
    """The agents and the tenants already at their limit (so a query can leave them out)."""
    agents, tenants = _lease_counts(leased)
    caps, tenant_limit = limits.agent_limits or {}, limits.tenant_limit
    full_agents = sorted(a for a, cap in caps.items() if agents[a] >= cap)
    full_tenants = sorted(
        t for t, n in tenants.items() if tenant_limit is not None and n >= tenant_limit
    )
    return full_agents, full_tenants


def check_limit(limit: int | None) -> None:
    """Refuse a negative ``limit``, which backends would read differently."""
    if limit is not None and limit < 0:
        raise ConfigError("limit must be 0 or more")


def checked_priority(priority: int) -> int:
    """``priority``, refused unless a whole number that fits a store's 64-bit column."""
    if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) >= 2**63:
        raise ConfigError(f"priority {priority!r} must be a whole number (64 bits at most)")
    return priority


def check_wait(commit: Commit, status: str) -> None:
    """A commit that leaves its run (now ``status``) waiting must say what it waits for."""
    if (commit.status or status) == "waiting" and commit.wait is None:
        raise ConfigError(
            f"a commit to run {commit.run_id} leaves it waiting without saying for what: "
            "pass wait=Wait(...), or status='running' to resume it"
        )


def lease_is_free(info: RunInfo, owner: str, now: float, steal_from: str | None = None) -> bool:
    """May ``owner`` take this run's lease: nobody's, ours, a dead owner's, or expired."""
    if info.lease_owner in (None, owner, steal_from):
        return True
    return (info.lease_expires_at or 0) <= now


def check_claimable(info: RunInfo, revive: bool) -> None:
    """Raise RunEnded for a run that may not be claimed by hand: ended, or dead unless
    ``revive``."""
    if info.status in TERMINAL_STATUSES or (info.status == "dead" and not revive):
        raise RunEnded(info.run_id, info.status)


def wait_is_over(wait: Wait | None, arrived: Collection[str], now: float) -> bool:
    """Has a waiting run got what it waits for (or been cancelled, or timed out)?"""
    if CANCEL_KEY in arrived:
        return True
    if wait is None:
        return False
    if wait.wake_at is not None and wait.wake_at <= now:
        return True
    return any(all(key in arrived for key in group) for group in wait.groups)


Lineage = list[tuple[str, int | None]]
"""(run id, highest seq taken from it) from the oldest ancestor to the run itself."""


def lineage_segments(chain: Sequence[RunInfo]) -> Lineage:
    """Turn a run and its fork ancestors (run first) into read segments, oldest first."""
    segments: Lineage = []
    upto: int | None = None
    for info in chain:
        segments.append((info.run_id, upto))
        upto = info.forked_at
    segments.reverse()
    return segments


class EventLog(Protocol):
    async def create_run(
        self, run: NewRun, events: Sequence[NewEvent], *, owner: str | None, lease_s: float
    ) -> RunInfo:
        """Create a run with its first events, leased to ``owner`` when given.

        Raises ConfigError if the id is taken.
        """
        ...

    async def fork_run(
        self,
        source_id: str,
        run: NewRun,
        at_seq: int,
        events: Sequence[NewEvent],
        *,
        owner: str | None,
        lease_s: float,
    ) -> RunInfo:
        """Create ``run`` sharing ``source_id``'s events 1..at_seq, then ``events``."""
        ...

    async def commit(self, commit: Commit) -> Committed:
        """Write ``commit`` atomically.

        Raises ConcurrencyConflict when the log does not end at ``expected_seq``,
        LeaseLost when the lease (owner and epoch) is not the run's current one,
        RunEnded when the run has already ended (checked first), and ConfigError when a
        child's id is taken or a waiting run's ``wait`` is missing.
        """
        ...

    async def read(
        self, run_id: str, after_seq: int = 0, limit: int | None = None
    ) -> list[EventRecord]:
        """Events after ``after_seq`` (at most ``limit``), those a fork shares included."""
        ...

    async def get_blobs(self, digests: Iterable[str]) -> dict[str, bytes]: ...

    async def put_snapshot(
        self, run_id: str, seq: int, body: bytes, blobs: dict[str, bytes]
    ) -> None:
        """Keep ``body`` as the run's latest snapshot (at ``seq``)."""
        ...

    async def latest_snapshot(self, run_id: str) -> tuple[int, bytes] | None: ...


class RunIndex(Protocol):
    async def get_run(self, run_id: str) -> RunInfo:
        """The run's row; raises RunNotFound."""
        ...

    async def find_runs(self, prefix: str, limit: int = 2) -> list[RunInfo]:
        """Runs whose id starts with ``prefix`` (for short ids typed by hand)."""
        ...

    async def list_runs(
        self,
        *,
        status: str | None = None,
        parent_run_id: str | None = None,
        limit: int = 50,
        tenant: str | None = None,
        agent: str | None = None,
        since: float | None = None,
        before: tuple[float, str] | None = None,
    ) -> list[RunInfo]:
        """Most recent first (by ``created_at``, then run id, both descending), only runs
        created at ``since`` or later, and, with ``before`` (the ``created_at`` and run id
        of the last run of a page), only those that come after it: a cursor."""
        ...


class Leases(Protocol):
    async def claim_run(
        self,
        run_id: str,
        owner: str,
        lease_s: float,
        *,
        steal_from: str | None = None,
        revive: bool = False,
    ) -> Claim | None:
        """Take the run's lease if it is free (see ``lease_is_free``), bumping its epoch;
        None when another live owner holds it.

        Checking the status and taking the lease are one step: raises RunEnded for a run
        that has ended, and for a ``dead`` run unless ``revive``.
        """
        ...

    async def claim_runs(
        self,
        owner: str,
        lease_s: float,
        limit: int,
        filter: ClaimFilter = ANY_READY,
    ) -> list[Claim]:
        """Lease up to ``limit`` runs that are ready to be driven and that ``filter``
        admits, those of the highest ``priority`` first, then the oldest first.

        Ready: waiting runs whose ``wake_at`` has passed, and running runs that nobody
        holds and whose ``wake_at`` (a back-off) has passed; with ``filter.orphans``,
        also running runs whose owner let its lease expire (it crashed).

        The filter's limits count the leases of every process: a run that would go over
        is left for later, and the count and the claim are one atomic step, so that
        workers racing each other cannot go over.
        """
        ...

    async def renew_leases(
        self, leases: Sequence[tuple[str, Lease]], lease_s: float
    ) -> tuple[set[str], dict[str, int]]:
        """Extend these leases; returns the run ids whose lease was lost, and the
        ``inbox_last`` of every run still held."""
        ...

    async def release_lease(
        self, run_id: str, lease: Lease, *, failed_start: bool = False, retry_at: float = 0.0
    ) -> None:
        """Give the lease up. ``failed_start``: the run could not even be started here
        (its agent did not load); it counts as a recovery, and it is not claimed again
        before ``retry_at``."""
        ...


class Inbox(Protocol):
    async def deliver(self, delivery: Delivery, *, unique: bool = False) -> int | None:
        """Put an item in a run's inbox; returns its id. A waiting run whose wait it ends
        becomes ready. With ``unique``, nothing is delivered (None) when an unread item
        with the same key is already there. Raises RunNotFound, RunEnded."""
        ...

    async def read_inbox(self, run_id: str, after_id: int = 0) -> list[InboxItem]: ...


@runtime_checkable
class Vaults(Protocol):
    """Encrypted secrets a guard keeps beside a run (the PII vault): opaque bytes by name.

    Not part of ``Store``: a backend that holds no vault is still a store, and the guard
    that needs one says so. ``put_vault`` never overwrites: it returns the names that were
    already taken (those entries are left as they were), so two writers cannot give one
    name two values."""

    async def put_vault(self, vault_id: str, entries: Mapping[str, bytes]) -> list[str]: ...

    async def get_vault(self, vault_id: str) -> dict[str, bytes]: ...


class TenantBudget(msgspec.Struct, frozen=True, omit_defaults=True):
    """A tenant's budget: its limits (``cost_usd``, ``tokens``), what its ended runs
    spent, and what its unfinished root runs hold (run id -> amounts). Each new root run
    is given ``run_share`` of what is left."""

    tenant: str
    limits: dict[str, float]
    spent: dict[str, float] = {}
    held: dict[str, dict[str, float]] = {}
    run_share: float = 1.0

    def remaining(self) -> dict[str, float]:
        return {
            key: limit
            - self.spent.get(key, 0.0)
            - sum(hold.get(key, 0.0) for hold in self.held.values())
            for key, limit in self.limits.items()
        }

    def grant(self) -> dict[str, float]:
        """What a new root run of the tenant is given."""
        grant = {k: max(0.0, v) * self.run_share for k, v in self.remaining().items()}
        if "tokens" in grant:
            grant["tokens"] = float(int(grant["tokens"]))
        return grant


@runtime_checkable
class TenantBudgets(Protocol):
    """Per-tenant budgets beside the runs (not part of ``Store``: the runtime says so when
    a backend has none). Every method is atomic."""

    async def set_tenant_budget(
        self, tenant: str, limits: Mapping[str, float], run_share: float
    ) -> TenantBudget:
        """Set the tenant's limits (what was spent and held stays)."""
        ...

    async def topup_tenant(self, tenant: str, amounts: Mapping[str, float]) -> TenantBudget:
        """Raise the tenant's limits; raises ConfigError when it has no budget."""
        ...

    async def get_tenant_budget(self, tenant: str) -> TenantBudget | None: ...

    async def hold_tenant_budget(self, tenant: str, run_id: str) -> dict[str, float] | None:
        """Give ``run_id`` its share of what the tenant has left, held until it is
        settled; None when the tenant has no budget."""
        ...

    async def settle_tenant_budget(
        self, tenant: str, run_id: str, spent: Mapping[str, float]
    ) -> bool:
        """The run ended having spent ``spent``: release its hold and count that instead.
        False (nothing changes) when it holds nothing."""
        ...


class BoardEntry(msgspec.Struct, frozen=True, gc=False):
    """One key of a blackboard: its JSON value, version (from 1), last writer and time."""

    key: str
    value: bytes
    version: int
    writer: str
    ts: float


@runtime_checkable
class Boards(Protocol):
    """Blackboards beside the runs: versioned JSON values by key, one board per ``scope``
    (a root run id), and the runs that watch a key. Not part of ``Store``, like ``Vaults``.

    ``board_put`` is a compare-and-set: it writes only when the key is at version
    ``expected`` (0: the key does not exist; None: whatever its version), and returns
    (written, the key's version now). It never raises for a lost race, so a writer can
    read again and retry."""

    async def board_entries(self, scope: str) -> dict[str, BoardEntry]: ...

    async def board_put(
        self, scope: str, key: str, value: bytes, writer: str, expected: int | None, ts: float
    ) -> tuple[bool, int]: ...

    async def board_watch(self, scope: str, key: str, run_id: str) -> None: ...

    async def board_watchers(self, scope: str, key: str) -> list[str]: ...


class Store(EventLog, RunIndex, Leases, Inbox, Protocol):
    """Every role over one backend. Implementations: in-memory, SQLite (PostgreSQL later)."""

    url: str

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
