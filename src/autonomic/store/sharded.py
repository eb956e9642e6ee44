"""A store over several stores: ``sharded+sqlite:///a.db,sqlite:///b.db``.

A run tree lives on one shard: a new root run goes to the shard that rendezvous hashing
of its id's first dot-separated part picks (child ids are ``<parent>.<n>``, so that part
is the root's), a child goes where its parent is (it is created in the parent's commit),
and a fork where the run it forks is (it shares its events). Adding a shard moves only
the roots the new shard wins, about 1/(N+1) of them; the others stay where they are.

Where a run is is remembered once found; a run not where its hash says (a fork, or a
child of one) is looked for on every shard. Listing and claiming go over every shard.
Tenants' budgets, vaults and blackboards go to the shard their key hashes to.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

import msgspec

from autonomic._resource import SharedResource
from autonomic.errors import ConfigError, RunEnded, RunNotFound
from autonomic.events import EventRecord, NewEvent
from autonomic.store.base import (
    ANY_READY,
    BoardEntry,
    Boards,
    Claim,
    ClaimFilter,
    Commit,
    Committed,
    Delivery,
    InboxItem,
    Lease,
    NewRun,
    RunInfo,
    Store,
    TenantBudget,
    TenantBudgets,
    Vaults,
    check_limit,
    claim_order,
)

__all__ = ["ShardedStore", "rendezvous", "tree_key"]

_REMEMBERED = 200_000


def tree_key(run_id: str) -> str:
    """What places a run: the root's part of its id (a child's id is ``<parent>.<n>``)."""
    return run_id.split(".", 1)[0]


def rendezvous(names: Sequence[str], key: str) -> int:
    """The index of the name that wins ``key`` by highest random weight."""
    best, winner = -1, 0
    for i, name in enumerate(names):
        digest = hashlib.blake2b(f"{name}\0{key}".encode(), digest_size=8).digest()
        score = int.from_bytes(digest, "big")
        if score > best:
            best, winner = score, i
    return winner


class ShardedStore(SharedResource):
    def __init__(self, url: str, shards: Sequence[Store]) -> None:
        if not shards:
            raise ConfigError(f"store URL {url!r} names no shard: sharded+URL1,URL2,...")
        names = [s.url for s in shards]
        if len(set(names)) != len(names):
            raise ConfigError(f"store URL {url!r} names a shard twice")
        self.url = url
        self.shards = list(shards)
        self._names = names
        self._where: OrderedDict[str, int] = OrderedDict()
        self._turn = itertools.count()

    @classmethod
    def from_url(cls, url: str, *, create: bool = True) -> ShardedStore:
        from autonomic.store import open_store

        inner = url.removeprefix("sharded+")
        urls = [u.strip() for u in inner.split(",") if u.strip()]
        if any(u.startswith("sharded+") for u in urls):
            raise ConfigError(f"store URL {url!r}: a shard cannot itself be sharded")
        return cls(url, [open_store(u, create=create) for u in urls])

    async def _open(self) -> None:
        opened: list[Store] = []
        try:
            for shard in self.shards:
                await shard.open()
                opened.append(shard)
        except BaseException:
            for shard in opened:
                await shard.close()
            raise

    async def _close(self) -> None:
        for shard in self.shards:
            await shard.close()

    # -- placement -----------------------------------------------------------------------

    def home(self, key: str) -> int:
        """The shard a new root run with this tree key goes to."""
        return rendezvous(self._names, key)

    def _remember(self, run_id: str, shard: int) -> None:
        self._where[run_id] = shard
        self._where.move_to_end(run_id)
        if len(self._where) > _REMEMBERED:
            self._where.popitem(last=False)

    async def _locate(self, run_id: str) -> int:
        """The shard that holds ``run_id``; raises RunNotFound."""
        known = self._where.get(run_id)
        if known is not None:
            return known
        home = self.home(tree_key(run_id))
        order = [home, *(i for i in range(len(self.shards)) if i != home)]
        for i in order:
            try:
                await self.shards[i].get_run(run_id)
            except RunNotFound:
                continue
            self._remember(run_id, i)
            return i
        raise RunNotFound(run_id)

    async def _index(self, run_id: str) -> int:
        """Where the run is, or (no such run) where it would be: that shard answers as
        it would for any unknown run."""
        try:
            return await self._locate(run_id)
        except RunNotFound:
            return self.home(tree_key(run_id))

    async def _shard_of(self, run_id: str) -> Store:
        return self.shards[await self._index(run_id)]

    async def _check_free(self, run_id: str, target: int) -> None:
        """A run id is unique over every shard, not only the one it goes to."""
        for i, shard in enumerate(self.shards):
            if i == target:
                continue
            try:
                await shard.get_run(run_id)
            except RunNotFound:
                continue
            raise ConfigError(f"a run with id {run_id!r} already exists")

    # -- the event log ---------------------------------------------------------------------

    async def create_run(
        self, run: NewRun, events: Sequence[NewEvent], *, owner: str | None, lease_s: float
    ) -> RunInfo:
        if run.parent_run_id is not None:
            target = await self._locate(run.parent_run_id)
        else:
            target = self.home(tree_key(run.run_id))
        await self._check_free(run.run_id, target)
        info = await self.shards[target].create_run(run, events, owner=owner, lease_s=lease_s)
        self._remember(run.run_id, target)
        return info

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
        target = await self._locate(source_id)
        await self._check_free(run.run_id, target)
        info = await self.shards[target].fork_run(
            source_id, run, at_seq, events, owner=owner, lease_s=lease_s
        )
        self._remember(run.run_id, target)
        return info

    async def commit(self, commit: Commit) -> Committed:
        """Atomic on the run's shard, deliveries to its tree included; a delivery to a run
        of another tree on another shard is made just after (the runtime makes none)."""
        target = await self._index(commit.run_id)
        for child, _ in commit.children:
            await self._check_free(child.run_id, target)
        elsewhere: list[tuple[int, Delivery]] = []
        for delivery in commit.deliveries:
            where = await self._index(delivery.run_id)
            if where != target:
                elsewhere.append((where, delivery))
        if elsewhere:
            commit = msgspec.structs.replace(
                commit,
                deliveries=[d for d in commit.deliveries if all(d is not e for _, e in elsewhere)],
            )
        committed = await self.shards[target].commit(commit)
        for child, _ in commit.children:
            self._remember(child.run_id, target)
        for where, delivery in elsewhere:  # skipped when that run ended, as in a commit
            with contextlib.suppress(RunEnded, RunNotFound):
                await self.shards[where].deliver(delivery)
        return committed

    async def read(
        self, run_id: str, after_seq: int = 0, limit: int | None = None
    ) -> list[EventRecord]:
        return await (await self._shard_of(run_id)).read(run_id, after_seq, limit)

    async def get_blobs(self, digests: Iterable[str]) -> dict[str, bytes]:
        wanted = list(dict.fromkeys(digests))
        found: dict[str, bytes] = {}
        for part in await asyncio.gather(*(s.get_blobs(wanted) for s in self.shards)):
            found.update(part)
        return found

    async def put_snapshot(
        self, run_id: str, seq: int, body: bytes, blobs: dict[str, bytes]
    ) -> None:
        await (await self._shard_of(run_id)).put_snapshot(run_id, seq, body, blobs)

    async def latest_snapshot(self, run_id: str) -> tuple[int, bytes] | None:
        return await (await self._shard_of(run_id)).latest_snapshot(run_id)

    # -- the run index ---------------------------------------------------------------------

    async def get_run(self, run_id: str) -> RunInfo:
        return await (await self._shard_of(run_id)).get_run(run_id)

    async def find_runs(self, prefix: str, limit: int = 2) -> list[RunInfo]:
        parts = await asyncio.gather(*(s.find_runs(prefix, limit) for s in self.shards))
        return sorted(itertools.chain(*parts), key=lambda r: r.run_id)[:limit]

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
        parts = await asyncio.gather(
            *(
                s.list_runs(
                    status=status,
                    parent_run_id=parent_run_id,
                    limit=limit,
                    tenant=tenant,
                    agent=agent,
                    since=since,
                    before=before,
                )
                for s in self.shards
            )
        )
        runs = sorted(itertools.chain(*parts), key=lambda r: (r.created_at, r.run_id))
        runs.reverse()
        return runs[:limit]

    # -- leases ----------------------------------------------------------------------------

    async def claim_run(
        self,
        run_id: str,
        owner: str,
        lease_s: float,
        *,
        steal_from: str | None = None,
        revive: bool = False,
    ) -> Claim | None:
        shard = await self._shard_of(run_id)
        return await shard.claim_run(run_id, owner, lease_s, steal_from=steal_from, revive=revive)

    async def claim_runs(
        self, owner: str, lease_s: float, limit: int, filter: ClaimFilter = ANY_READY
    ) -> list[Claim]:
        """The first ready runs (by priority, then age) over every shard: each shard is
        asked for ``limit``, the first ``limit`` are kept and the others released at once
        (a claim of a ready run counts nothing, so giving it back changes nothing but its
        epoch). Orphans, whose claim counts a recovery, are only taken with the room left,
        shard by shard from a different one each time. Concurrency limits are each
        shard's: a shard counts the leases of its own runs (a root run's tree is on one
        shard)."""
        check_limit(limit)
        if limit == 0:
            return []
        ready_only = replace(filter, orphans=False)
        parts = await asyncio.gather(
            *(s.claim_runs(owner, lease_s, limit, ready_only) for s in self.shards)
        )
        ready = sorted(
            ((claim, i) for i, part in enumerate(parts) for claim in part),
            key=lambda taken: claim_order(taken[0].info),
        )
        kept, surplus = ready[:limit], ready[limit:]
        await asyncio.gather(
            *(self.shards[i].release_lease(c.info.run_id, c.lease) for c, i in surplus)
        )
        start = next(self._turn) % len(self.shards)
        for k in range(len(self.shards)):
            if not filter.orphans or len(kept) >= limit:
                break
            i = (start + k) % len(self.shards)
            more = await self.shards[i].claim_runs(owner, lease_s, limit - len(kept), filter)
            kept.extend((claim, i) for claim in more)
        for claim, i in kept:
            self._remember(claim.info.run_id, i)
        return [claim for claim, _ in kept]

    async def renew_leases(
        self, leases: Sequence[tuple[str, Lease]], lease_s: float
    ) -> tuple[set[str], dict[str, int]]:
        lost: set[str] = set()
        mail: dict[str, int] = {}
        by_shard: dict[int, list[tuple[str, Lease]]] = {}
        for run_id, lease in leases:
            try:
                by_shard.setdefault(await self._locate(run_id), []).append((run_id, lease))
            except RunNotFound:
                lost.add(run_id)
        parts = await asyncio.gather(
            *(self.shards[i].renew_leases(group, lease_s) for i, group in by_shard.items())
        )
        for part_lost, part_mail in parts:
            lost |= part_lost
            mail.update(part_mail)
        return lost, mail

    async def release_lease(
        self, run_id: str, lease: Lease, *, failed_start: bool = False, retry_at: float = 0.0
    ) -> None:
        shard = await self._shard_of(run_id)
        await shard.release_lease(run_id, lease, failed_start=failed_start, retry_at=retry_at)

    # -- inboxes ---------------------------------------------------------------------------

    async def deliver(self, delivery: Delivery, *, unique: bool = False) -> int | None:
        return await (await self._shard_of(delivery.run_id)).deliver(delivery, unique=unique)

    async def read_inbox(self, run_id: str, after_id: int = 0) -> list[InboxItem]:
        return await (await self._shard_of(run_id)).read_inbox(run_id, after_id)

    # -- beside the runs: vaults, tenants' budgets, blackboards -------------------------

    def _cannot(self, shard: Store, what: str) -> ConfigError:
        return ConfigError(f"shard {shard.url!r} of {self.url!r} cannot hold {what}")

    def _vaults(self, vault_id: str) -> Vaults:
        shard = self.shards[self.home(tree_key(vault_id))]
        if not isinstance(shard, Vaults):
            raise self._cannot(shard, "a vault")
        return shard

    async def put_vault(self, vault_id: str, entries: Mapping[str, bytes]) -> list[str]:
        return await self._vaults(vault_id).put_vault(vault_id, entries)

    async def get_vault(self, vault_id: str) -> dict[str, bytes]:
        return await self._vaults(vault_id).get_vault(vault_id)

    def _budgets(self, tenant: str) -> TenantBudgets:
        shard = self.shards[self.home(tenant)]
        if not isinstance(shard, TenantBudgets):
            raise self._cannot(shard, "tenants' budgets")
        return shard

    async def set_tenant_budget(
        self, tenant: str, limits: Mapping[str, float], run_share: float
    ) -> TenantBudget:
        return await self._budgets(tenant).set_tenant_budget(tenant, limits, run_share)

    async def topup_tenant(self, tenant: str, amounts: Mapping[str, float]) -> TenantBudget:
        return await self._budgets(tenant).topup_tenant(tenant, amounts)

    async def get_tenant_budget(self, tenant: str) -> TenantBudget | None:
        return await self._budgets(tenant).get_tenant_budget(tenant)

    async def hold_tenant_budget(self, tenant: str, run_id: str) -> dict[str, float] | None:
        return await self._budgets(tenant).hold_tenant_budget(tenant, run_id)

    async def settle_tenant_budget(
        self, tenant: str, run_id: str, spent: Mapping[str, float]
    ) -> bool:
        return await self._budgets(tenant).settle_tenant_budget(tenant, run_id, spent)

    def _boards(self, scope: str) -> Boards:
        shard = self.shards[self.home(tree_key(scope))]
        if not isinstance(shard, Boards):
            raise self._cannot(shard, "blackboards")
        return shard

    async def board_entries(self, scope: str) -> dict[str, BoardEntry]:
        return await self._boards(scope).board_entries(scope)

    async def board_put(
        self, scope: str, key: str, value: bytes, writer: str, expected: int | None, ts: float
    ) -> tuple[bool, int]:
        return await self._boards(scope).board_put(scope, key, value, writer, expected, ts)

    async def board_watch(self, scope: str, key: str, run_id: str) -> None:
        await self._boards(scope).board_watch(scope, key, run_id)

    async def board_watchers(self, scope: str, key: str) -> list[str]:
        return await self._boards(scope).board_watchers(scope, key)
