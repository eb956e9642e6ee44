"""An in-memory store: the test double, and the store for throwaway runs (``memory://``)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import msgspec

from autonomic._resource import AsyncResource
from autonomic.errors import ConcurrencyConflict, ConfigError, LeaseLost, RunNotFound
from autonomic.events import EventRecord, NewEvent
from autonomic.store.base import NewRun, RunInfo, lineage_segments, new_run_info

__all__ = ["MemoryStore"]


def _records(first_seq: int, events: Sequence[NewEvent]) -> list[EventRecord]:
    return [
        EventRecord(first_seq + i, e.type, e.version, e.ts, e.body) for i, e in enumerate(events)
    ]


class MemoryStore(AsyncResource):
    """Keeps everything in dicts; same contract as the SQLite store, nothing survives exit."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._runs: dict[str, RunInfo] = {}
        self._events: dict[str, list[EventRecord]] = {}
        self._blobs: dict[str, bytes] = {}
        self._snapshots: dict[str, tuple[int, bytes]] = {}

    def _run(self, run_id: str) -> RunInfo:
        try:
            return self._runs[run_id]
        except KeyError:
            raise RunNotFound(run_id) from None

    def _insert(
        self,
        run: NewRun,
        events: Sequence[NewEvent],
        first_seq: int,
        owner: str | None,
        lease_s: float,
        forked_from: str | None = None,
    ) -> None:
        if run.run_id in self._runs:
            raise ConfigError(f"a run with id {run.run_id!r} already exists")
        self._runs[run.run_id] = new_run_info(
            run,
            first_seq,
            len(events),
            owner=owner,
            lease_s=lease_s,
            forked_from=forked_from,
            now=time.time(),
        )
        self._events[run.run_id] = _records(first_seq, events)
        for e in events:
            self._blobs.update(e.blobs)

    async def create_run(
        self, run: NewRun, events: Sequence[NewEvent], *, owner: str | None, lease_s: float
    ) -> None:
        self._insert(run, events, 1, owner, lease_s)

    async def fork_run(
        self,
        source_id: str,
        run: NewRun,
        at_seq: int,
        events: Sequence[NewEvent],
        *,
        owner: str | None,
        lease_s: float,
    ) -> None:
        source = self._run(source_id)
        if not 1 <= at_seq <= source.last_seq:
            raise ConfigError(
                f"run {source_id} has events 1..{source.last_seq}; cannot fork at {at_seq}"
            )
        self._insert(run, events, at_seq + 1, owner, lease_s, forked_from=source_id)

    async def append(
        self,
        run_id: str,
        expected_seq: int,
        events: Sequence[NewEvent],
        *,
        status: str | None = None,
        owner: str | None = None,
    ) -> int:
        info = self._run(run_id)
        if info.last_seq != expected_seq:
            raise ConcurrencyConflict(run_id, expected_seq, info.last_seq)
        now = time.time()
        if (
            owner is not None
            and info.lease_owner not in (None, owner)
            and (info.lease_expires_at or 0) > now
        ):
            raise LeaseLost(f"run {run_id} is leased to {info.lease_owner}")
        self._events[run_id].extend(_records(expected_seq + 1, events))
        for e in events:
            self._blobs.update(e.blobs)
        last = expected_seq + len(events)
        self._runs[run_id] = msgspec.structs.replace(
            info, last_seq=last, updated_at=now, status=status or info.status
        )
        return last

    def _chain(self, run_id: str) -> list[RunInfo]:
        chain = [self._run(run_id)]
        while chain[-1].forked_from:
            chain.append(self._run(chain[-1].forked_from))
        return chain

    async def read(self, run_id: str, after_seq: int = 0) -> list[EventRecord]:
        result: list[EventRecord] = []
        for rid, upto in lineage_segments(self._chain(run_id)):
            result.extend(
                r
                for r in self._events[rid]
                if r.seq > after_seq and (upto is None or r.seq <= upto)
            )
        return result

    async def get_blobs(self, digests: Iterable[str]) -> dict[str, bytes]:
        return {d: self._blobs[d] for d in digests if d in self._blobs}

    async def put_snapshot(
        self, run_id: str, seq: int, body: bytes, blobs: dict[str, bytes]
    ) -> None:
        self._blobs.update(blobs)
        self._snapshots[run_id] = (seq, body)

    async def latest_snapshot(self, run_id: str) -> tuple[int, bytes] | None:
        return self._snapshots.get(run_id)

    async def get_run(self, run_id: str) -> RunInfo:
        return self._run(run_id)

    async def find_runs(self, prefix: str, limit: int = 2) -> list[RunInfo]:
        return [r for rid, r in self._runs.items() if rid.startswith(prefix)][:limit]

    async def list_runs(self, *, status: str | None = None, limit: int = 50) -> list[RunInfo]:
        runs = [r for r in self._runs.values() if status is None or r.status == status]
        return sorted(runs, key=lambda r: r.created_at, reverse=True)[:limit]

    async def acquire_lease(
        self, run_id: str, owner: str, lease_s: float, *, steal_from: str | None = None
    ) -> RunInfo | None:
        info = self._run(run_id)
        now = time.time()
        held = (
            info.lease_owner not in (None, owner, steal_from) and (info.lease_expires_at or 0) > now
        )
        if held:
            return None
        taken_over = info.lease_owner not in (None, owner)
        info = msgspec.structs.replace(
            info,
            lease_owner=owner,
            lease_expires_at=now + lease_s,
            recoveries=info.recoveries + (1 if taken_over else 0),
        )
        self._runs[run_id] = info
        return info

    async def renew_leases(self, owner: str, run_ids: Sequence[str], lease_s: float) -> set[str]:
        lost: set[str] = set()
        expires = time.time() + lease_s
        for rid in run_ids:
            info = self._runs.get(rid)
            if info is None or info.lease_owner != owner:
                lost.add(rid)
            else:
                self._runs[rid] = msgspec.structs.replace(info, lease_expires_at=expires)
        return lost

    async def release_lease(self, run_id: str, owner: str) -> None:
        info = self._runs.get(run_id)
        if info is not None and info.lease_owner == owner:
            self._runs[run_id] = msgspec.structs.replace(
                info, lease_owner=None, lease_expires_at=None
            )

    async def claim_runs(
        self, owner: str, lease_s: float, limit: int, *, max_recoveries: int
    ) -> list[RunInfo]:
        now = time.time()
        claimed: list[RunInfo] = []
        for info in sorted(self._runs.values(), key=lambda r: r.created_at):
            if len(claimed) >= limit:
                break
            if info.status != "running" or (info.lease_expires_at or 0) > now:
                continue
            if info.lease_owner is not None and info.recoveries >= max_recoveries:
                self._runs[info.run_id] = msgspec.structs.replace(
                    info, status="dead", lease_owner=None, lease_expires_at=None
                )
                continue
            taken = await self.acquire_lease(info.run_id, owner, lease_s)
            if taken is not None:
                claimed.append(taken)
        return claimed

    async def set_status(self, run_id: str, status: str) -> None:
        self._runs[run_id] = msgspec.structs.replace(self._run(run_id), status=status)
