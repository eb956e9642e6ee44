"""An in-memory store: the test double, and the store for throwaway runs (``memory://``).

It is also the reference for the store contract: every other backend must behave as this
one does (``tests/conformance`` runs the same suite against all of them).
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import msgspec

from autonomic._resource import SharedResource
from autonomic.errors import ConcurrencyConflict, ConfigError, LeaseLost, RunEnded, RunNotFound
from autonomic.events import EventRecord, NewEvent
from autonomic.store.base import (
    ANY_READY,
    TERMINAL_STATUSES,
    BoardEntry,
    Claim,
    ClaimFilter,
    Commit,
    Committed,
    Delivery,
    InboxItem,
    Lease,
    NewRun,
    RunInfo,
    TenantBudget,
    check_claimable,
    check_limit,
    check_wait,
    claim_order,
    lease_is_free,
    lineage_segments,
    new_run_info,
    wait_is_over,
    within_limits,
)

__all__ = ["InMemoryStore"]

replace = msgspec.structs.replace


def _records(first_seq: int, events: Sequence[NewEvent]) -> list[EventRecord]:
    return [
        EventRecord(first_seq + i, e.type, e.version, e.ts, e.body) for i, e in enumerate(events)
    ]


class InMemoryStore(SharedResource):
    """Keeps everything in dicts; same contract as the SQLite store, nothing survives exit."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._runs: dict[str, RunInfo] = {}
        self._events: dict[str, list[EventRecord]] = {}
        self._blobs: dict[str, bytes] = {}
        self._snapshots: dict[str, tuple[int, bytes]] = {}
        self._vaults: dict[str, dict[str, bytes]] = {}
        self._tenants: dict[str, TenantBudget] = {}
        self._boards: dict[str, dict[str, BoardEntry]] = {}
        self._board_watch: dict[tuple[str, str], dict[str, None]] = {}
        self._inbox: dict[str, list[InboxItem]] = {}
        self._inbox_ids = itertools.count(1)

    def _run(self, run_id: str) -> RunInfo:
        try:
            return self._runs[run_id]
        except KeyError:
            raise RunNotFound(run_id) from None

    # -- the event log ---------------------------------------------------------------------

    def _check_new(self, runs: Iterable[NewRun]) -> None:
        seen: set[str] = set()
        for run in runs:
            if run.run_id in self._runs or run.run_id in seen:
                raise ConfigError(f"a run with id {run.run_id!r} already exists")
            seen.add(run.run_id)

    def _insert(
        self,
        run: NewRun,
        events: Sequence[NewEvent],
        first_seq: int,
        owner: str | None,
        lease_s: float,
        forked_from: str | None = None,
    ) -> RunInfo:
        info = new_run_info(
            run,
            first_seq,
            len(events),
            owner=owner,
            lease_s=lease_s,
            forked_from=forked_from,
            now=time.time(),
        )
        self._runs[run.run_id] = info
        self._events[run.run_id] = _records(first_seq, events)
        for e in events:
            self._blobs.update(e.blobs)
        return info

    async def create_run(
        self, run: NewRun, events: Sequence[NewEvent], *, owner: str | None, lease_s: float
    ) -> RunInfo:
        self._check_new([run])
        return self._insert(run, events, 1, owner, lease_s)

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
        source = self._run(source_id)
        if not 1 <= at_seq <= source.last_seq:
            raise ConfigError(
                f"run {source_id} has events 1..{source.last_seq}; cannot fork at {at_seq}"
            )
        self._check_new([run])
        return self._insert(run, events, at_seq + 1, owner, lease_s, forked_from=source_id)

    def _check_commit(self, c: Commit) -> RunInfo:
        info = self._run(c.run_id)
        if info.status in TERMINAL_STATUSES:
            raise RunEnded(c.run_id, info.status)
        if info.last_seq != c.expected_seq:
            raise ConcurrencyConflict(c.run_id, c.expected_seq, info.last_seq)
        if info.lease_owner != c.lease.owner or info.lease_epoch != c.lease.epoch:
            raise LeaseLost(f"run {c.run_id} is leased to {info.lease_owner or 'nobody'} now")
        check_wait(c, info.status)
        self._check_new(child for child, _ in c.children)
        return info

    async def commit(self, commit: Commit) -> Committed:
        info = self._check_commit(commit)
        now = time.time()
        run_id = commit.run_id
        self._events[run_id].extend(_records(commit.expected_seq + 1, commit.events))
        for e in commit.events:
            self._blobs.update(e.blobs)
        if commit.consumed:
            self._inbox[run_id] = [i for i in self._inbox.get(run_id, ()) if i.id > commit.consumed]
        status = commit.status or info.status
        wait = commit.wait if status == "waiting" else None
        wake_at = wait.wake_at if wait else None
        ready = status == "waiting" and wait_is_over(wait, self._arrived(run_id), now)
        if ready:
            wake_at = now
        released = {"lease_owner": None, "lease_expires_at": None} if commit.release else {}
        info = self._runs[run_id] = replace(
            info,
            last_seq=commit.expected_seq + len(commit.events),
            updated_at=now,
            status=status,
            wait=wait,
            wake_at=wake_at,
            **released,
        )
        owner = commit.lease.owner if commit.children_lease_s is not None else None
        for child, events in commit.children:
            self._insert(child, events, 1, owner, commit.children_lease_s or 0.0)
        for delivery in commit.deliveries:
            target = self._runs.get(delivery.run_id)
            if target is not None and target.status not in TERMINAL_STATUSES:
                self._deliver(delivery, now)
        return Committed(info.last_seq, info.inbox_last, ready)

    def _arrived(self, run_id: str) -> set[str]:
        return {item.key for item in self._inbox.get(run_id, ())}

    async def read(
        self, run_id: str, after_seq: int = 0, limit: int | None = None
    ) -> list[EventRecord]:
        check_limit(limit)
        result: list[EventRecord] = []
        for rid, upto in lineage_segments(self._chain(run_id)):
            result.extend(
                r
                for r in self._events[rid]
                if r.seq > after_seq and (upto is None or r.seq <= upto)
            )
        return result if limit is None else result[:limit]

    def _chain(self, run_id: str) -> list[RunInfo]:
        chain = [self._run(run_id)]
        while chain[-1].forked_from:
            chain.append(self._run(chain[-1].forked_from))
        return chain

    async def get_blobs(self, digests: Iterable[str]) -> dict[str, bytes]:
        return {d: self._blobs[d] for d in digests if d in self._blobs}

    async def put_snapshot(
        self, run_id: str, seq: int, body: bytes, blobs: dict[str, bytes]
    ) -> None:
        self._blobs.update(blobs)
        self._snapshots[run_id] = (seq, body)

    async def latest_snapshot(self, run_id: str) -> tuple[int, bytes] | None:
        return self._snapshots.get(run_id)

    # -- tenant budgets ------------------------------------------------------------------

    async def set_tenant_budget(
        self, tenant: str, limits: Mapping[str, float], run_share: float
    ) -> TenantBudget:
        known = self._tenants.get(tenant) or TenantBudget(tenant, {})
        budget = msgspec.structs.replace(known, limits=dict(limits), run_share=run_share)
        self._tenants[tenant] = budget
        return budget

    async def topup_tenant(self, tenant: str, amounts: Mapping[str, float]) -> TenantBudget:
        budget = self._tenants.get(tenant)
        if budget is None:
            raise ConfigError(f"tenant {tenant!r} has no budget to top up: set one first")
        limits = dict(budget.limits)
        for key, amount in amounts.items():
            if key in limits:
                limits[key] += amount
        budget = self._tenants[tenant] = msgspec.structs.replace(budget, limits=limits)
        return budget

    async def get_tenant_budget(self, tenant: str) -> TenantBudget | None:
        return self._tenants.get(tenant)

    async def hold_tenant_budget(self, tenant: str, run_id: str) -> dict[str, float] | None:
        budget = self._tenants.get(tenant)
        if budget is None:
            return None
        grant = budget.grant()
        held = {**budget.held, run_id: grant}
        self._tenants[tenant] = msgspec.structs.replace(budget, held=held)
        return grant

    async def settle_tenant_budget(
        self, tenant: str, run_id: str, spent: Mapping[str, float]
    ) -> bool:
        budget = self._tenants.get(tenant)
        if budget is None or run_id not in budget.held:
            return False
        held = {k: v for k, v in budget.held.items() if k != run_id}
        total = dict(budget.spent)
        for key in budget.limits:
            total[key] = total.get(key, 0.0) + spent.get(key, 0.0)
        self._tenants[tenant] = msgspec.structs.replace(budget, held=held, spent=total)
        return True

    # -- the vault -------------------------------------------------------------------------

    async def put_vault(self, vault_id: str, entries: Mapping[str, bytes]) -> list[str]:
        vault = self._vaults.setdefault(vault_id, {})
        taken = [name for name in entries if name in vault]
        vault.update((n, bytes(v)) for n, v in entries.items() if n not in vault)
        return taken

    async def get_vault(self, vault_id: str) -> dict[str, bytes]:
        return dict(self._vaults.get(vault_id, {}))

    # -- blackboards -----------------------------------------------------------------------

    async def board_entries(self, scope: str) -> dict[str, BoardEntry]:
        return dict(self._boards.get(scope, {}))

    async def board_put(
        self, scope: str, key: str, value: bytes, writer: str, expected: int | None, ts: float
    ) -> tuple[bool, int]:
        board = self._boards.setdefault(scope, {})
        current = board[key].version if key in board else 0
        if expected is not None and expected != current:
            return False, current
        board[key] = BoardEntry(key, bytes(value), current + 1, writer, ts)
        return True, current + 1

    async def board_watch(self, scope: str, key: str, run_id: str) -> None:
        self._board_watch.setdefault((scope, key), {})[run_id] = None

    async def board_watchers(self, scope: str, key: str) -> list[str]:
        return list(self._board_watch.get((scope, key), {}))

    # -- the run index ---------------------------------------------------------------------

    async def get_run(self, run_id: str) -> RunInfo:
        return self._run(run_id)

    async def find_runs(self, prefix: str, limit: int = 2) -> list[RunInfo]:
        check_limit(limit)
        return [r for rid, r in self._runs.items() if rid.startswith(prefix)][:limit]

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
        check_limit(limit)
        runs = [
            r
            for r in self._runs.values()
            if (status is None or r.status == status)
            and (parent_run_id is None or r.parent_run_id == parent_run_id)
            and (tenant is None or r.tenant == tenant)
            and (agent is None or r.agent == agent)
            and (since is None or r.created_at >= since)
            and (before is None or (r.created_at, r.run_id) < before)
        ]
        return sorted(runs, key=lambda r: (r.created_at, r.run_id), reverse=True)[:limit]

    # -- leases ----------------------------------------------------------------------------

    def _take(self, info: RunInfo, owner: str, lease_s: float, now: float) -> Claim:
        took_over = info.lease_owner not in (None, owner)
        taken = self._runs[info.run_id] = replace(
            info,
            lease_owner=owner,
            lease_expires_at=now + lease_s,
            lease_epoch=info.lease_epoch + 1,
            recoveries=info.recoveries + took_over,
        )
        return Claim(Lease(owner, taken.lease_epoch), taken, took_over)

    async def claim_run(
        self,
        run_id: str,
        owner: str,
        lease_s: float,
        *,
        steal_from: str | None = None,
        revive: bool = False,
    ) -> Claim | None:
        info = self._run(run_id)
        check_claimable(info, revive)
        now = time.time()
        if not lease_is_free(info, owner, now, steal_from):
            return None
        return self._take(info, owner, lease_s, now)

    async def claim_runs(
        self, owner: str, lease_s: float, limit: int, filter: ClaimFilter = ANY_READY
    ) -> list[Claim]:
        check_limit(limit)
        now = time.time()
        agents, excluded = filter.agents, filter.exclude_tenants
        ready = [
            info
            for info in sorted(self._runs.values(), key=claim_order)
            if (agents is None or info.agent in agents)
            and (info.tenant is None or info.tenant not in excluded)
            and _is_ready(info, now, filter.orphans)
        ]
        if filter.limited:
            leased = Counter(
                (info.agent, info.tenant)
                for info in self._runs.values()
                if info.status in ("running", "waiting")
                and info.lease_owner is not None
                and (info.lease_expires_at or 0) > now
            )
            leased_rows = [(a, t, n) for (a, t), n in leased.items()]
            ready = within_limits(ready, leased_rows, limit, filter)
        return [self._take(info, owner, lease_s, now) for info in ready[:limit]]

    async def renew_leases(
        self, leases: Sequence[tuple[str, Lease]], lease_s: float
    ) -> tuple[set[str], dict[str, int]]:
        lost: set[str] = set()
        mail: dict[str, int] = {}
        expires = time.time() + lease_s
        for run_id, lease in leases:
            info = self._runs.get(run_id)
            if info is None or (info.lease_owner, info.lease_epoch) != (lease.owner, lease.epoch):
                lost.add(run_id)
                continue
            self._runs[run_id] = replace(info, lease_expires_at=expires)
            mail[run_id] = info.inbox_last
        return lost, mail

    async def release_lease(
        self, run_id: str, lease: Lease, *, failed_start: bool = False, retry_at: float = 0.0
    ) -> None:
        info = self._runs.get(run_id)
        if info is None or (info.lease_owner, info.lease_epoch) != (lease.owner, lease.epoch):
            return
        retry = {"recoveries": info.recoveries + 1, "wake_at": retry_at} if failed_start else {}
        self._runs[run_id] = replace(info, lease_owner=None, lease_expires_at=None, **retry)

    # -- the inbox -------------------------------------------------------------------------

    def _deliver(self, delivery: Delivery, now: float) -> int:
        item_id = next(self._inbox_ids)
        e = delivery.event
        record = EventRecord(0, e.type, e.version, e.ts, e.body)
        self._inbox.setdefault(delivery.run_id, []).append(InboxItem(item_id, delivery.key, record))
        self._blobs.update(e.blobs)
        info = self._runs[delivery.run_id]
        woke = info.status == "waiting" and wait_is_over(
            info.wait, self._arrived(delivery.run_id), now
        )
        self._runs[delivery.run_id] = replace(
            info, inbox_last=item_id, wake_at=now if woke else info.wake_at
        )
        return item_id

    async def deliver(self, delivery: Delivery, *, unique: bool = False) -> int | None:
        info = self._run(delivery.run_id)
        if info.status in TERMINAL_STATUSES:
            raise RunEnded(info.run_id, info.status)
        if unique and delivery.key in self._arrived(delivery.run_id):
            return None
        return self._deliver(delivery, time.time())

    async def read_inbox(self, run_id: str, after_id: int = 0) -> list[InboxItem]:
        self._run(run_id)
        return [item for item in self._inbox.get(run_id, ()) if item.id > after_id]


def _is_ready(info: RunInfo, now: float, orphans: bool) -> bool:
    """The claim rule (see ``Leases.claim_runs``)."""
    if (info.wake_at or 0) > now:
        return False
    if info.status == "waiting":
        return info.wake_at is not None and lease_is_free(info, "", now)
    if info.status != "running":
        return False
    if info.lease_owner is None:
        return True
    return orphans and (info.lease_expires_at or 0) <= now
