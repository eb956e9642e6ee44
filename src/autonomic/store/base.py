"""The Store protocol: where runs, their events, snapshots, blobs and leases live.

The store knows nothing of models or strategies: it keeps encoded events in order,
checks that each append continues the log where the caller expects (optimistic
concurrency), and hands out leases so that one process at a time drives a run.
A fork shares its parent's events up to the fork point instead of copying them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Protocol, Self

import msgspec

from autonomic.events import EventRecord, NewEvent

__all__ = ["Lineage", "NewRun", "RunInfo", "Store", "lineage_segments", "new_run_info"]


class NewRun(msgspec.Struct, frozen=True, gc=False):
    run_id: str
    agent: str
    goal: str
    parent_run_id: str | None = None


class RunInfo(msgspec.Struct, frozen=True, gc=False):
    """A run's row: what listing and claiming need without reading its events."""

    run_id: str
    agent: str
    goal: str
    status: str
    created_at: float
    updated_at: float
    last_seq: int
    parent_run_id: str | None = None
    forked_from: str | None = None
    forked_at: int | None = None
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    recoveries: int = 0


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
        run.run_id,
        run.agent,
        run.goal,
        "running",
        now,
        now,
        first_seq + event_count - 1,
        run.parent_run_id,
        forked_from,
        first_seq - 1 if forked_from else None,
        owner,
        now + lease_s if owner else None,
    )


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


class Store(Protocol):
    """Async storage for runs. Implementations: memory, sqlite (and postgres later)."""

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

    async def create_run(
        self, run: NewRun, events: Sequence[NewEvent], *, owner: str | None, lease_s: float
    ) -> None:
        """Create a run with its first events, leased to ``owner`` when given."""
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
    ) -> None:
        """Create ``run`` sharing ``source_id``'s events 1..at_seq, then ``events``."""
        ...

    async def append(
        self,
        run_id: str,
        expected_seq: int,
        events: Sequence[NewEvent],
        *,
        status: str | None = None,
        owner: str | None = None,
    ) -> int:
        """Append after event ``expected_seq``; returns the new last seq.

        Raises ConcurrencyConflict when the log does not end at ``expected_seq``, and
        LeaseLost when ``owner`` is given but another process holds the lease.
        """
        ...

    async def read(self, run_id: str, after_seq: int = 0) -> list[EventRecord]:
        """Events after ``after_seq``, including those a fork shares with its parent."""
        ...

    async def get_blobs(self, digests: Iterable[str]) -> dict[str, bytes]: ...

    async def put_snapshot(
        self, run_id: str, seq: int, body: bytes, blobs: dict[str, bytes]
    ) -> None:
        """Keep ``body`` as the run's latest snapshot (at ``seq``)."""
        ...

    async def latest_snapshot(self, run_id: str) -> tuple[int, bytes] | None: ...

    async def get_run(self, run_id: str) -> RunInfo:
        """The run's row; raises RunNotFound."""
        ...

    async def find_runs(self, prefix: str, limit: int = 2) -> list[RunInfo]:
        """Runs whose id starts with ``prefix`` (for short ids typed by hand)."""
        ...

    async def list_runs(self, *, status: str | None = None, limit: int = 50) -> list[RunInfo]:
        """Most recent first."""
        ...

    async def acquire_lease(
        self, run_id: str, owner: str, lease_s: float, *, steal_from: str | None = None
    ) -> RunInfo | None:
        """Take the run's lease if it is free, expired, ours, or held by ``steal_from``
        (an owner known to be dead); None if not.

        Taking over another owner's lease counts as a recovery.
        """
        ...

    async def renew_leases(self, owner: str, run_ids: Sequence[str], lease_s: float) -> set[str]:
        """Extend our leases; returns the ids whose lease we no longer hold."""
        ...

    async def release_lease(self, run_id: str, owner: str) -> None: ...

    async def claim_runs(
        self, owner: str, lease_s: float, limit: int, *, max_recoveries: int
    ) -> list[RunInfo]:
        """Lease up to ``limit`` running runs that nobody holds (crashed owners' included).

        A run already recovered ``max_recoveries`` times is moved to status ``dead``
        instead of being claimed again.
        """
        ...

    async def set_status(self, run_id: str, status: str) -> None:
        """Change a run's status without an event (used for dead-lettering)."""
        ...
