"""What the SQL stores (SQLite, PostgreSQL) share: the runs table's columns, turning a row
into a ``RunInfo``, checking a commit against a row, checking a read log, and refusing
numbers a 64-bit column cannot hold.

Both stores keep the same columns in the same order, so one decoder serves them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from autonomic.errors import (
    AutonomicError,
    ConcurrencyConflict,
    ConfigError,
    LeaseLost,
    RunEnded,
    StoreCorrupt,
)
from autonomic.store.base import TERMINAL_STATUSES, Commit, RunInfo, Wait, check_wait

__all__ = [
    "RUN_COLUMNS",
    "check_rows",
    "decode_wait",
    "int64",
    "refused",
    "run_info",
    "seconds",
]

RUN_COLUMNS = (
    "run_id, agent, goal, status, created_at, updated_at, last_seq, parent_run_id, "
    "root_run_id, depth, tenant, forked_from, forked_at, lease_owner, lease_expires_at, "
    "lease_epoch, recoveries, wake_at, wait, inbox_last, priority"
)
"""The runs table's columns in ``RunInfo``'s order (``wait`` is JSON text)."""


def decode_wait(run_id: str, text: str | None) -> Wait | None:
    if text is None:
        return None
    try:
        return msgspec.json.decode(text, type=Wait)
    except msgspec.DecodeError as e:
        raise StoreCorrupt(f"run {run_id}: what it waits for is unreadable ({e})") from e


def run_info(row: Sequence[Any]) -> RunInfo:
    """A row of ``RUN_COLUMNS`` as a ``RunInfo``."""
    fields: tuple[Any, ...] = (*row[:18], decode_wait(row[0], row[18]), *row[19:21])
    return RunInfo(*fields)


def refused(
    c: Commit, status: str, last_seq: int, owner: str | None, epoch: int
) -> AutonomicError | None:
    """Why ``c`` cannot be written to a run in this state, if it cannot (in the in-memory
    store's order of checks)."""
    if status in TERMINAL_STATUSES:
        return RunEnded(c.run_id, status)
    if last_seq != c.expected_seq:
        return ConcurrencyConflict(c.run_id, c.expected_seq, last_seq)
    if owner != c.lease.owner or epoch != c.lease.epoch:
        return LeaseLost(f"run {c.run_id} is leased to {owner or 'nobody'} now")
    try:
        check_wait(c, status)
    except ConfigError as e:
        return e
    return None


def check_rows(
    run_id: str, rows: Sequence[Any], start: int, want: int, high: int, last_seq: int
) -> None:
    """Events ``start + 1 ..`` as read (seq first) must be all there, in order, and end
    where the row says."""
    got = min(len(rows), want)
    if got < want or (got and rows[got - 1][0] != start + got):
        seqs = {row[0] for row in rows[:want]}
        missing = next(s for s in range(start + 1, start + want + 1) if s not in seqs)
        raise StoreCorrupt(
            f"run {run_id}: event {missing} is missing from its log, which its row says "
            f"ends at event {last_seq} (the store is damaged)"
        )
    if len(rows) > want and rows[want][0] > high:
        raise StoreCorrupt(
            f"run {run_id}: its log goes on past event {high}, where its row says it ends "
            "(the store is damaged)"
        )


def int64(name: str, value: object) -> int:
    if not isinstance(value, int) or not -(2**63) <= value < 2**63:
        raise ConfigError(f"{name} must be an integer of 64 bits at most")
    return value


def seconds(name: str, value: float) -> float:
    if not isinstance(value, int | float) or value != value:
        raise ConfigError(f"{name} must be a number of seconds")
    return value
