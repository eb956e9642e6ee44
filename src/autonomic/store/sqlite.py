"""The SQLite store: one file in WAL mode, shared safely by several processes.

Writes go through a group commit (``_group_commit``): whatever is queued in one turn of the
event loop is one transaction. A driver's plain commit reads its run's row by key (the end,
optimistic and lease checks are made on it, under the write lock), inserts its events and
updates the row by key; plain commits of many runs in one batch take a handful of
statements in all. The schema is a list of numbered migrations (``_sqlite_schema``), and
errors are mapped in ``_sqlite_errors``. The in-memory store is the reference for what
every operation means.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import msgspec

from autonomic._resource import SharedResource
from autonomic.errors import (
    AutonomicError,
    ConfigError,
    RunEnded,
    RunNotFound,
    StoreCorrupt,
    StoreError,
)
from autonomic.events import EventRecord, NewEvent
from autonomic.store._group_commit import Abort, BatchedOp, GroupCommit, LockBusy
from autonomic.store._rows import (
    RUN_COLUMNS,
    check_rows,
    decode_wait,
    int64,
    refused,
    run_info,
    seconds,
)
from autonomic.store._sqlite_errors import store_error
from autonomic.store._sqlite_schema import ensure_schema
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
    Wait,
    check_claimable,
    check_limit,
    full_under_limits,
    lease_is_free,
    lineage_segments,
    new_run_info,
    wait_is_over,
    within_limits,
)

__all__ = ["SQLiteStore"]

log = logging.getLogger("autonomic.store")

T = TypeVar("T")
_BUSY_MS = 30_000
_CHECK_WAL_EVERY = 64
"""Batches between looks at the WAL's size."""
_CHECKPOINT_BYTES = 4 * 1024 * 1024
"""A WAL larger than this is copied back into the database by a background checkpoint."""
_MIN_SQLITE = (3, 35, 0)
"""UPDATE ... RETURNING."""
_CHUNK = 500
_SMALL_READ = 256
_LAST_SEQ = "SELECT last_seq FROM runs WHERE run_id = ?"
"""Reads of at most this many rows run on the loop (see ``SQLiteStore._read``)."""
"""Values per ``IN (...)`` list."""

_INSERT_RUN = f"INSERT INTO runs ({RUN_COLUMNS}) VALUES ({', '.join('?' * 21)})"
_SELECT_RUN = f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?"
_INSERT_EVENT = (
    "INSERT INTO events (run_id, seq, type, version, ts, body) VALUES (?, ?, ?, ?, ?, ?)"
)
_INSERT_BLOB = "INSERT OR IGNORE INTO blobs (digest, data) VALUES (?, ?)"
_HEAD_COLUMNS = (
    "status, last_seq, lease_owner, lease_epoch, inbox_last, "
    "wait IS NOT NULL OR wake_at IS NOT NULL"
)
"""What a plain commit is checked against (the last: a wait or back-off left to clear)."""
_HEAD = f"SELECT {_HEAD_COLUMNS} FROM runs WHERE run_id = ?"
_HEADS = f"SELECT run_id, {_HEAD_COLUMNS} FROM runs WHERE run_id IN ({{}})"
_APPEND = "UPDATE runs SET last_seq = ?, updated_at = ? WHERE run_id = ?"
"""It sets no indexed column, so that only the row's page is written."""
_APPEND_AND_SET = """
UPDATE runs SET last_seq = ?, updated_at = ?, status = ?, wait = NULL, wake_at = NULL,
    lease_owner = ?, lease_expires_at = CASE WHEN ? THEN NULL ELSE lease_expires_at END
WHERE run_id = ?"""
_SET_RUN = """
UPDATE runs SET last_seq = ?, updated_at = ?, status = ?, wait = ?, wake_at = ?,
    lease_owner = CASE WHEN ? THEN NULL ELSE lease_owner END,
    lease_expires_at = CASE WHEN ? THEN NULL ELSE lease_expires_at END
WHERE run_id = ? RETURNING inbox_last"""
_TO_CLAIM = f"""
SELECT {RUN_COLUMNS} FROM runs
WHERE ((status = 'waiting' AND wake_at <= :now
        AND (coalesce(lease_owner, '') = '' OR coalesce(lease_expires_at, 0) <= :now))
    OR (status = 'running' AND coalesce(wake_at, 0) <= :now
        AND (lease_owner IS NULL OR (:orphans AND coalesce(lease_expires_at, 0) <= :now))))
    AND (:any_agent OR agent IN (SELECT value FROM json_each(:agents)))
    AND (tenant IS NULL OR tenant NOT IN (SELECT value FROM json_each(:tenants)))
    AND agent NOT IN (SELECT value FROM json_each(:full_agents))
ORDER BY priority DESC, created_at, rowid LIMIT :limit"""
_LEASED = """
SELECT agent, tenant, count(*) FROM runs
WHERE status IN ('running', 'waiting') AND lease_owner IS NOT NULL AND lease_expires_at > ?
GROUP BY agent, tenant"""
"""What live leases hold now, by agent and tenant (for concurrency limits)."""


def _path_from_url(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if parts.netloc:
        path = parts.netloc + "/" + path
    if not path:
        raise ConfigError(f"store URL {url!r} names no file: use sqlite:///runs.db")
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return path, options


def _damaged_log(run_id: str, last_seq: int, error: sqlite3.IntegrityError) -> Abort:
    """Events could not be added after ``last_seq``: the store is damaged, or an event is bad."""
    if "UNIQUE" in str(error):
        return Abort(
            StoreCorrupt(
                f"run {run_id}: its log already holds events after event {last_seq}, where its "
                "row says it ends (the store is damaged)"
            )
        )
    return Abort(ConfigError(f"run {run_id}: an event cannot be stored ({error})"))


def _is_plain(c: Commit) -> bool:
    return (
        c.wait is None and c.status != "waiting" and not (c.consumed or c.deliveries or c.children)
    )


@contextlib.contextmanager
def _snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """Several reads that see one state of the file."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")


class _Transactions:
    """The group commit's view of the write connection."""

    def __init__(self, conn: sqlite3.Connection, path: str, inline: bool) -> None:
        self.conn, self.path, self.inline = conn, path, inline

    def begin(self, wait: bool) -> None:
        if wait and self.inline:  # the inline connection never waits; this time, wait
            self.conn.execute(f"PRAGMA busy_timeout = {_BUSY_MS}")
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            finally:
                self.conn.execute("PRAGMA busy_timeout = 0")
            return
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            if not wait and (e.sqlite_errorname or "").startswith("SQLITE_BUSY"):
                raise LockBusy from e
            raise

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        if self.conn.in_transaction:
            # after some errors SQLite has already rolled back by itself
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")

    def failure(self, error: Exception) -> AutonomicError:
        return store_error(self.path, "write to", error)


class _PlainCommit(BatchedOp):
    """A commit of events, perhaps with a new status or a release: the common case."""

    __slots__ = ("c", "store")

    def __init__(self, store: SQLiteStore, c: Commit) -> None:
        self.store, self.c = store, c

    def __call__(self) -> Committed:
        c, conn = self.c, self.store._w
        row = conn.execute(_HEAD, (c.run_id,)).fetchone()
        if row is None:
            raise RunNotFound(c.run_id)
        status, last, owner, epoch, inbox_last, stale = row
        refusal = refused(c, status, last, owner, epoch)
        if refusal:
            raise refusal
        self.store._insert_events(c.run_id, last + 1, c.events)
        last += len(c.events)
        if c.status is None and not c.release and not stale:
            conn.execute(_APPEND, (last, time.time(), c.run_id))
        else:
            owner = None if c.release else owner
            values = (last, time.time(), c.status or status, owner, c.release, c.run_id)
            conn.execute(_APPEND_AND_SET, values)
        return Committed(last, inbox_last)

    def write_many(self, ops: Sequence[_PlainCommit]) -> list[Any]:
        """Read the runs' rows once, check each commit in order against them (under the
        write lock, they cannot change), then write the events and the rows."""
        store, now = self.store, time.time()
        ids = {op.c.run_id for op in ops}
        heads = {row[0]: list(row[1:]) for row in store._select_in(_HEADS, ids)}
        written: dict[str, list[Any]] = {}
        results: list[Any] = []
        events: list[tuple[Any, ...]] = []
        blobs: dict[str, bytes] = {}
        for op in ops:
            c = op.c
            head = heads.get(c.run_id)
            if head is None:
                results.append(RunNotFound(c.run_id))
                continue
            status, last, owner, epoch, inbox_last, full = head
            refusal = refused(c, status, last, owner, epoch)
            if refusal:
                results.append(refusal)
                continue
            for e in c.events:
                last += 1
                events.append((c.run_id, last, e.type, e.version, e.ts, e.body))
                if e.blobs:
                    blobs.update(e.blobs)
            # head: status, last_seq, owner, epoch, inbox_last, needs the full update
            head[:3] = c.status or status, last, None if c.release else owner
            head[5] = full or c.status is not None or c.release
            written[c.run_id] = head
            results.append(Committed(last, inbox_last))
        # a damaged log fails the INSERT: the group commit then writes each commit alone
        conn = store._w
        conn.executemany(_INSERT_EVENT, events)
        store._insert_blobs(blobs)
        store.bytes_written += sum(len(row[5]) for row in events)
        plain = [(h[1], now, run_id) for run_id, h in written.items() if not h[5]]
        full = [
            (h[1], now, h[0], h[2], h[2] is None, run_id) for run_id, h in written.items() if h[5]
        ]
        for sql, rows in ((_APPEND, plain), (_APPEND_AND_SET, full)):
            if rows:
                conn.executemany(sql, rows)
        return results


class SQLiteStore(SharedResource):
    """``sqlite:///relative.db``, ``sqlite:////absolute.db``; ``?synchronous=full`` for fsync."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = url
        self.create = create
        self.path, options = _path_from_url(url)
        self.synchronous = options.get("synchronous", "normal").upper()
        if self.synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ConfigError(f"synchronous={self.synchronous.lower()} is not one of normal, full")
        self.bytes_written = 0
        self._inline = self.synchronous in ("OFF", "NORMAL")
        self._wconn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        self._lconn: sqlite3.Connection | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._group: GroupCommit | None = None
        self._batches = 0
        self._checkpoint: asyncio.Future[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def _open(self) -> None:
        if sqlite3.sqlite_version_info < _MIN_SQLITE:
            raise StoreError(
                f"the SQLite store needs SQLite {'.'.join(map(str, _MIN_SQLITE))} or newer; "
                f"this Python has {sqlite3.sqlite_version}"
            )
        loop = asyncio.get_running_loop()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="autonomic-sqlite-write")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="autonomic-sqlite-read")
        try:
            self._wconn = await loop.run_in_executor(self._writer, self._connect, True)
            self._rconn = await loop.run_in_executor(self._reader, self._connect, False)
            self._lconn = await loop.run_in_executor(self._reader, self._connect, False)
        except BaseException:
            await self._close()
            raise
        self._group = GroupCommit(
            _Transactions(self._wconn, self.path, self._inline),
            self._writer,
            inline=self._inline,
            after_batch=self._after_batch,
        )

    def _connect(self, writer: bool) -> sqlite3.Connection:
        # Never open the file with anything but SQLite here: closing another descriptor of
        # it would drop the POSIX locks SQLite holds, and let other processes corrupt it.
        path = Path(self.path)
        if path.is_dir():
            raise StoreCorrupt(f"{self.path} is a directory, not an autonomic store")
        if not path.exists() and not self.create:
            raise StoreError(
                f"no store at {self.path}: start a run first, or point --store/AUTONOMIC_STORE "
                "at an existing store"
            )
        if not path.exists() and not path.parent.exists():
            raise ConfigError(
                f"cannot create store {self.path}: folder {path.parent} does not exist"
            )
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise store_error(self.path, "open", e) from e
        try:
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_MS}")
            # small pages: a step's commit rewrites a few pages, so 1 KiB pages write a
            # third of the bytes 4 KiB ones do (applies when the file is created)
            conn.execute("PRAGMA page_size = 1024")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            if writer:
                ensure_schema(conn, self.path)
                # checkpoints (which fsync) run in the background, not inside a commit
                conn.execute("PRAGMA wal_autocheckpoint = 0")
                if self._inline:
                    conn.execute("PRAGMA busy_timeout = 0")
            return conn
        except BaseException as e:
            conn.close()
            if isinstance(e, sqlite3.DatabaseError) and "not a database" in str(e):
                raise StoreCorrupt(
                    f"{self.path} is not an autonomic store (not a SQLite file)"
                ) from e
            if isinstance(e, Exception):
                raise store_error(self.path, "open", e) from e
            raise

    async def _close(self) -> None:
        if self._group is not None:
            await self._group.drain()
            self._group = None
        if self._checkpoint is not None:
            await asyncio.wait([self._checkpoint])
        loop = asyncio.get_running_loop()
        conns = ((self._wconn, self._writer), (self._rconn, self._reader))
        for conn, pool in (*conns, (self._lconn, self._reader)):
            if conn is not None and pool is not None:
                await loop.run_in_executor(pool, conn.close)
        self._wconn = self._rconn = self._lconn = None
        for pool in (self._writer, self._reader):
            if pool is not None:
                pool.shutdown(wait=False)
        self._writer = self._reader = None

    # -- plumbing ----------------------------------------------------------------------

    @property
    def _w(self) -> sqlite3.Connection:
        assert self._wconn is not None
        return self._wconn

    async def _write(self, op: Callable[[], T]) -> T:
        if self._group is None:
            raise StoreError("the store is not open: use 'async with' or await store.open()")
        return await self._group.write(op)

    async def _read(self, op: Callable[[sqlite3.Connection], T], *, small: bool = False) -> T:
        """Run a read. A ``small`` one (a few rows by key) runs right here on the loop, on
        a connection of its own: in WAL mode a reader never waits for a writer, and a
        hop to the reader thread and back costs more than the read. Others run in the
        reader thread, so that the loop never waits on a long scan."""
        conn, pool = (self._lconn, None) if small else (self._rconn, self._reader)
        if conn is None or (pool is None and not small):
            raise StoreError("the store is not open: use 'async with' or await store.open()")

        def run() -> T:
            try:
                return op(conn)
            except AutonomicError:
                raise
            except Exception as e:
                raise store_error(self.path, "read", e) from e

        if pool is None:
            return run()
        return await asyncio.get_running_loop().run_in_executor(pool, run)

    def _after_batch(self) -> None:
        """Now and then, start a checkpoint on the reader's thread if the WAL has grown."""
        self._batches += 1
        if self._batches % _CHECK_WAL_EVERY or self._checkpoint is not None:
            return
        try:
            size = os.stat(self.path + "-wal").st_size
        except OSError:
            return
        if size > _CHECKPOINT_BYTES and self._rconn is not None and self._reader is not None:
            loop = asyncio.get_running_loop()
            self._checkpoint = loop.run_in_executor(self._reader, self._run_checkpoint)
            self._checkpoint.add_done_callback(self._checkpoint_done)

    def _run_checkpoint(self) -> None:
        assert self._rconn is not None
        self._rconn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _checkpoint_done(self, future: asyncio.Future[None]) -> None:
        self._checkpoint = None
        if not future.cancelled() and future.exception() is not None:
            log.warning("background checkpoint of %s failed: %s", self.path, future.exception())

    def _select_in(self, sql: str, values: Collection[Any]) -> list[Any]:
        """Rows of ``sql`` (with ``IN ({})``) for ``values``, a chunk of values at a time."""
        found: list[Any] = []
        items = list(values)
        for i in range(0, len(items), _CHUNK):
            chunk = items[i : i + _CHUNK]
            found += self._w.execute(sql.format(", ".join("?" * len(chunk))), chunk).fetchall()
        return found

    def _get_run(self, conn: sqlite3.Connection, run_id: str) -> RunInfo:
        row = conn.execute(_SELECT_RUN, (run_id,)).fetchone()
        if row is None:
            raise RunNotFound(run_id)
        return run_info(row)

    # -- writing -----------------------------------------------------------------------

    def _insert_blobs(self, blobs: dict[str, bytes]) -> None:
        if blobs:
            self._w.executemany(_INSERT_BLOB, blobs.items())
            self.bytes_written += sum(map(len, blobs.values()))

    def _insert_events(self, run_id: str, first_seq: int, events: Sequence[NewEvent]) -> None:
        try:
            self._w.executemany(
                _INSERT_EVENT,
                [
                    (run_id, first_seq + i, e.type, e.version, e.ts, e.body)
                    for i, e in enumerate(events)
                ],
            )
        except sqlite3.IntegrityError as error:
            raise _damaged_log(run_id, first_seq - 1, error) from error
        self.bytes_written += sum(len(e.body) for e in events)
        for e in events:
            if e.blobs:
                self._insert_blobs(e.blobs)

    def _check_new(self, runs: Sequence[NewRun]) -> None:
        """Refuse ids that are taken (before anything is written)."""
        ids = [run.run_id for run in runs]
        taken = {
            row[0] for row in self._select_in("SELECT run_id FROM runs WHERE run_id IN ({})", ids)
        }
        seen: set[str] = set()
        for run_id in ids:
            if run_id in taken or run_id in seen:
                raise ConfigError(f"a run with id {run_id!r} already exists")
            seen.add(run_id)

    def _insert_runs(self, runs: Sequence[tuple[RunInfo, Sequence[NewEvent]]]) -> None:
        self._w.executemany(_INSERT_RUN, [msgspec.structs.astuple(info) for info, _ in runs])
        for info, events in runs:
            self._insert_events(info.run_id, info.last_seq - len(events) + 1, events)

    def _new_run(
        self,
        run: NewRun,
        events: Sequence[NewEvent],
        first_seq: int,
        owner: str | None,
        lease_s: float,
        forked_from: str | None = None,
    ) -> RunInfo:
        self._check_new([run])
        info = new_run_info(
            run,
            first_seq,
            len(events),
            owner=owner,
            lease_s=lease_s,
            forked_from=forked_from,
            now=time.time(),
        )
        self._insert_runs([(info, events)])
        return info

    async def create_run(
        self, run: NewRun, events: Sequence[NewEvent], *, owner: str | None, lease_s: float
    ) -> RunInfo:
        int64("depth", run.depth)
        seconds("lease_s", lease_s)
        return await self._write(lambda: self._new_run(run, events, 1, owner, lease_s))

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
        int64("at_seq", at_seq)
        int64("depth", run.depth)
        seconds("lease_s", lease_s)

        def op() -> RunInfo:
            source = self._get_run(self._w, source_id)
            if not 1 <= at_seq <= source.last_seq:
                raise ConfigError(
                    f"run {source_id} has events 1..{source.last_seq}; cannot fork at {at_seq}"
                )
            return self._new_run(run, events, at_seq + 1, owner, lease_s, source_id)

        return await self._write(op)

    async def commit(self, commit: Commit) -> Committed:
        int64("expected_seq", commit.expected_seq)
        int64("consumed", commit.consumed)
        int64("the lease epoch", commit.lease.epoch)
        if _is_plain(commit):
            return await self._write(_PlainCommit(self, commit))
        for child, _ in commit.children:
            int64("depth", child.depth)
        if commit.children_lease_s is not None:
            seconds("children_lease_s", commit.children_lease_s)
        try:
            wait = msgspec.json.encode(commit.wait).decode() if commit.wait else None
        except (msgspec.EncodeError, TypeError) as e:
            raise ConfigError(
                f"run {commit.run_id}: what it waits for cannot be stored: {e}"
            ) from e
        return await self._write(lambda: self._commit(commit, wait))

    def _commit(self, c: Commit, wait_text: str | None) -> Committed:
        """A commit that also waits, consumes, delivers or creates children."""
        info = self._get_run(self._w, c.run_id)
        refusal = refused(c, info.status, info.last_seq, info.lease_owner, info.lease_epoch)
        if refusal:
            raise refusal
        self._check_new([child for child, _ in c.children])
        try:
            return self._write_commit(c, c.status or info.status, wait_text)
        except AutonomicError as e:  # past the checks, a failure must undo what was written
            raise Abort(e) from e

    def _write_commit(self, c: Commit, status: str, wait_text: str | None) -> Committed:
        conn, now = self._w, time.time()
        self._insert_events(c.run_id, c.expected_seq + 1, c.events)
        if c.consumed:
            conn.execute("DELETE FROM inbox WHERE run_id = ? AND id <= ?", (c.run_id, c.consumed))
        wait, wake_at = (c.wait, c.wait.wake_at) if c.wait and status == "waiting" else (None, None)
        ready = status == "waiting" and wait_is_over(wait, self._arrived(c.run_id), now)
        if ready:
            wake_at = now
        last = c.expected_seq + len(c.events)
        stored_wait = wait_text if wait else None
        values = (last, now, status, stored_wait, wake_at, c.release, c.release, c.run_id)
        (inbox_last,) = conn.execute(_SET_RUN, values).fetchone()
        if c.children:
            lease: dict[str, Any] = {
                "owner": c.lease.owner if c.children_lease_s is not None else None,
                "lease_s": c.children_lease_s or 0.0,
                "now": now,
            }
            self._insert_runs(
                [
                    (new_run_info(child, 1, len(events), **lease, forked_from=None), events)
                    for child, events in c.children
                ]
            )
        for delivery in c.deliveries:
            row = conn.execute(
                "SELECT status, wait FROM runs WHERE run_id = ?", (delivery.run_id,)
            ).fetchone()
            if row is not None and row[0] not in TERMINAL_STATUSES:
                self._deliver(delivery, now, row[0], decode_wait(delivery.run_id, row[1]))
        return Committed(last, inbox_last, ready)

    def _arrived(self, run_id: str) -> set[str]:
        rows = self._w.execute("SELECT key FROM inbox WHERE run_id = ?", (run_id,))
        return {row[0] for row in rows}

    def _deliver(self, d: Delivery, now: float, status: str, wait: Wait | None) -> int:
        """Put ``d`` in the inbox of its run (now ``status``, waiting for ``wait``)."""
        e = d.event
        item_id: int
        (item_id,) = self._w.execute(
            "INSERT INTO inbox (run_id, key, type, version, ts, body) VALUES (?, ?, ?, ?, ?, ?) "
            "RETURNING id",
            (d.run_id, d.key, e.type, e.version, e.ts, e.body),
        ).fetchone()
        self._insert_blobs(e.blobs)
        woke = status == "waiting" and wait_is_over(wait, self._arrived(d.run_id), now)
        self._w.execute(
            "UPDATE runs SET inbox_last = ?, wake_at = CASE WHEN ? THEN ? ELSE wake_at END "
            "WHERE run_id = ?",
            (item_id, woke, now, d.run_id),
        )
        return item_id

    async def deliver(self, delivery: Delivery, *, unique: bool = False) -> int | None:
        def op() -> int | None:
            conn = self._w
            row = conn.execute(
                "SELECT status, wait FROM runs WHERE run_id = ?", (delivery.run_id,)
            ).fetchone()
            if row is None:
                raise RunNotFound(delivery.run_id)
            if row[0] in TERMINAL_STATUSES:
                raise RunEnded(delivery.run_id, row[0])
            wait = decode_wait(delivery.run_id, row[1])
            if (
                unique
                and conn.execute(
                    "SELECT 1 FROM inbox WHERE run_id = ? AND key = ?",
                    (delivery.run_id, delivery.key),
                ).fetchone()
            ):
                return None
            return self._deliver(delivery, time.time(), row[0], wait)

        return await self._write(op)

    async def put_snapshot(
        self, run_id: str, seq: int, body: bytes, blobs: dict[str, bytes]
    ) -> None:
        int64("seq", seq)

        def op() -> None:
            self._insert_blobs(blobs)
            self._w.execute(
                "INSERT INTO snapshots (run_id, seq, body) VALUES (?, ?, ?) "
                "ON CONFLICT (run_id) DO UPDATE SET seq = excluded.seq, body = excluded.body",
                (run_id, seq, body),
            )
            self.bytes_written += len(body)

        await self._write(op)

    # -- tenant budgets ------------------------------------------------------------------

    def _tenant(self, tenant: str) -> TenantBudget | None:
        row = self._w.execute(
            "SELECT budget FROM tenant_budgets WHERE tenant = ?", (tenant,)
        ).fetchone()
        return None if row is None else msgspec.json.decode(row[0], type=TenantBudget)

    def _put_tenant(self, budget: TenantBudget) -> TenantBudget:
        self._w.execute(
            "INSERT INTO tenant_budgets (tenant, budget) VALUES (?, ?) "
            "ON CONFLICT (tenant) DO UPDATE SET budget = excluded.budget",
            (budget.tenant, msgspec.json.encode(budget).decode()),
        )
        return budget

    async def set_tenant_budget(
        self, tenant: str, limits: Mapping[str, float], run_share: float
    ) -> TenantBudget:
        def op() -> TenantBudget:
            known = self._tenant(tenant) or TenantBudget(tenant, {})
            return self._put_tenant(
                msgspec.structs.replace(known, limits=dict(limits), run_share=run_share)
            )

        return await self._write(op)

    async def topup_tenant(self, tenant: str, amounts: Mapping[str, float]) -> TenantBudget:
        def op() -> TenantBudget:
            budget = self._tenant(tenant)
            if budget is None:
                raise ConfigError(f"tenant {tenant!r} has no budget to top up: set one first")
            limits = {k: v + amounts.get(k, 0.0) for k, v in budget.limits.items()}
            return self._put_tenant(msgspec.structs.replace(budget, limits=limits))

        return await self._write(op)

    async def get_tenant_budget(self, tenant: str) -> TenantBudget | None:
        def op(conn: sqlite3.Connection) -> TenantBudget | None:
            row = conn.execute(
                "SELECT budget FROM tenant_budgets WHERE tenant = ?", (tenant,)
            ).fetchone()
            return None if row is None else msgspec.json.decode(row[0], type=TenantBudget)

        return await self._read(op, small=True)

    async def hold_tenant_budget(self, tenant: str, run_id: str) -> dict[str, float] | None:
        def op() -> dict[str, float] | None:
            budget = self._tenant(tenant)
            if budget is None:
                return None
            grant = budget.grant()
            self._put_tenant(msgspec.structs.replace(budget, held={**budget.held, run_id: grant}))
            return grant

        return await self._write(op)

    async def settle_tenant_budget(
        self, tenant: str, run_id: str, spent: Mapping[str, float]
    ) -> bool:
        def op() -> bool:
            budget = self._tenant(tenant)
            if budget is None or run_id not in budget.held:
                return False
            held = {k: v for k, v in budget.held.items() if k != run_id}
            total = {k: budget.spent.get(k, 0.0) + spent.get(k, 0.0) for k in budget.limits}
            self._put_tenant(msgspec.structs.replace(budget, held=held, spent=total))
            return True

        return await self._write(op)

    # -- the vault -----------------------------------------------------------------------

    async def put_vault(self, vault_id: str, entries: Mapping[str, bytes]) -> list[str]:
        items = list(entries.items())

        def op() -> list[str]:
            taken = []
            for name, secret in items:
                cursor = self._w.execute(
                    "INSERT OR IGNORE INTO vault (vault_id, name, secret) VALUES (?, ?, ?)",
                    (vault_id, name, secret),
                )
                if cursor.rowcount == 0:
                    taken.append(name)
            return taken

        return await self._write(op)

    async def get_vault(self, vault_id: str) -> dict[str, bytes]:
        def op(conn: sqlite3.Connection) -> dict[str, bytes]:
            rows = conn.execute(
                "SELECT name, secret FROM vault WHERE vault_id = ?", (vault_id,)
            ).fetchall()
            return {name: bytes(secret) for name, secret in rows}

        return await self._read(op)

    # -- blackboards -------------------------------------------------------------------

    async def board_entries(self, scope: str) -> dict[str, BoardEntry]:
        def op(conn: sqlite3.Connection) -> dict[str, BoardEntry]:
            rows = conn.execute(
                "SELECT key, value, version, writer, ts FROM board WHERE scope = ?", (scope,)
            ).fetchall()
            return {r[0]: BoardEntry(r[0], bytes(r[1]), r[2], r[3], r[4]) for r in rows}

        return await self._read(op)

    async def board_put(
        self, scope: str, key: str, value: bytes, writer: str, expected: int | None, ts: float
    ) -> tuple[bool, int]:
        def op() -> tuple[bool, int]:
            row = self._w.execute(
                "SELECT version FROM board WHERE scope = ? AND key = ?", (scope, key)
            ).fetchone()
            current = row[0] if row else 0
            if expected is not None and expected != current:
                return False, current
            self._w.execute(
                "INSERT INTO board (scope, key, value, version, writer, ts) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (scope, key) DO UPDATE SET "
                "value = excluded.value, version = excluded.version, "
                "writer = excluded.writer, ts = excluded.ts",
                (scope, key, value, current + 1, writer, ts),
            )
            return True, current + 1

        return await self._write(op)

    async def board_watch(self, scope: str, key: str, run_id: str) -> None:
        def op() -> None:
            self._w.execute(
                "INSERT OR IGNORE INTO board_watch (scope, key, run_id) VALUES (?, ?, ?)",
                (scope, key, run_id),
            )

        await self._write(op)

    async def board_watchers(self, scope: str, key: str) -> list[str]:
        def op(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT run_id FROM board_watch WHERE scope = ? AND key = ? ORDER BY run_id",
                (scope, key),
            ).fetchall()
            return [r[0] for r in rows]

        return await self._read(op)

    # -- leases ------------------------------------------------------------------------

    def _take(
        self, infos: Sequence[RunInfo], owner: str, lease_s: float, now: float
    ) -> list[Claim]:
        claims = []
        for info in infos:
            took_over = info.lease_owner not in (None, owner)
            taken = msgspec.structs.replace(
                info,
                lease_owner=owner,
                lease_expires_at=now + lease_s,
                lease_epoch=info.lease_epoch + 1,
                recoveries=info.recoveries + took_over,
            )
            claims.append(Claim(Lease(owner, taken.lease_epoch), taken, took_over))
        self._w.executemany(
            "UPDATE runs SET lease_owner = ?, lease_expires_at = ?, lease_epoch = ?, "
            "recoveries = ? WHERE run_id = ?",
            [
                (
                    owner,
                    c.info.lease_expires_at,
                    c.info.lease_epoch,
                    c.info.recoveries,
                    c.info.run_id,
                )
                for c in claims
            ],
        )
        return claims

    async def claim_run(
        self,
        run_id: str,
        owner: str,
        lease_s: float,
        *,
        steal_from: str | None = None,
        revive: bool = False,
    ) -> Claim | None:
        seconds("lease_s", lease_s)

        def op() -> Claim | None:
            info = self._get_run(self._w, run_id)
            check_claimable(info, revive)
            now = time.time()
            if not lease_is_free(info, owner, now, steal_from):
                return None
            return self._take([info], owner, lease_s, now)[0]

        return await self._write(op)

    async def claim_runs(
        self, owner: str, lease_s: float, limit: int, filter: ClaimFilter = ANY_READY
    ) -> list[Claim]:
        check_limit(int64("limit", limit))
        seconds("lease_s", lease_s)
        agents = filter.agents
        names = msgspec.json.encode(sorted(agents) if agents is not None else []).decode()

        def op() -> list[Claim]:
            # one write transaction: the count of leases and the claim are one step
            now = time.time()
            leased: list[tuple[str, str | None, int]] = []
            full_agents: list[str] = []
            excluded = sorted(filter.exclude_tenants)
            if filter.limited:
                leased = self._w.execute(_LEASED, (now,)).fetchall()
                full_agents, full_tenants = full_under_limits(leased, filter)
                excluded = sorted({*excluded, *full_tenants})
            rows = self._w.execute(
                _TO_CLAIM,
                {
                    "now": now,
                    "orphans": filter.orphans,
                    "any_agent": agents is None,
                    "agents": names,
                    "tenants": msgspec.json.encode(excluded).decode(),
                    "full_agents": msgspec.json.encode(full_agents).decode(),
                    "limit": limit,
                },
            ).fetchall()
            infos = [run_info(row) for row in rows]
            if filter.limited:
                infos = within_limits(infos, leased, limit, filter)
            return self._take(infos, owner, lease_s, now)

        return await self._write(op)

    async def renew_leases(
        self, leases: Sequence[tuple[str, Lease]], lease_s: float
    ) -> tuple[set[str], dict[str, int]]:
        seconds("lease_s", lease_s)
        for _, lease in leases:
            int64("the lease epoch", lease.epoch)

        def op() -> tuple[set[str], dict[str, int]]:
            lost: set[str] = set()
            mail: dict[str, int] = {}
            expires = time.time() + lease_s
            for run_id, lease in leases:
                rows = self._w.execute(
                    "UPDATE runs SET lease_expires_at = ? WHERE run_id = ? AND lease_owner = ? "
                    "AND lease_epoch = ? RETURNING inbox_last",
                    (expires, run_id, lease.owner, lease.epoch),
                ).fetchall()
                if rows:
                    mail[run_id] = rows[0][0]
                else:
                    lost.add(run_id)
            return lost, mail

        return await self._write(op) if leases else (set(), {})

    async def release_lease(
        self, run_id: str, lease: Lease, *, failed_start: bool = False, retry_at: float = 0.0
    ) -> None:
        int64("the lease epoch", lease.epoch)
        seconds("retry_at", retry_at)

        def op() -> None:
            self._w.execute(
                "UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL, "
                "recoveries = recoveries + ?, wake_at = CASE WHEN ? THEN ? ELSE wake_at END "
                "WHERE run_id = ? AND lease_owner = ? AND lease_epoch = ?",
                (int(failed_start), failed_start, retry_at, run_id, lease.owner, lease.epoch),
            )

        await self._write(op)

    # -- reading -----------------------------------------------------------------------

    def _chain(self, conn: sqlite3.Connection, run_id: str) -> list[RunInfo]:
        """The run and its fork ancestors, the run first."""
        chain = [self._get_run(conn, run_id)]
        while (source := chain[-1].forked_from) is not None:
            if any(info.run_id == source for info in chain):
                raise StoreCorrupt(f"run {run_id}: its fork ancestry loops through {source}")
            try:
                chain.append(self._get_run(conn, source))
            except RunNotFound:
                raise StoreCorrupt(
                    f"run {chain[-1].run_id} is forked from {source}, which is not in the store"
                ) from None
        return chain

    def _read_events(
        self, conn: sqlite3.Connection, run_id: str, after_seq: int, limit: int | None
    ) -> list[EventRecord]:
        records: list[EventRecord] = []
        with _snapshot(conn):
            chain = self._chain(conn, run_id)
            last_seqs = {info.run_id: info.last_seq for info in chain}
            low = 0
            for rid, upto in lineage_segments(chain):
                high = last_seqs[rid] if upto is None else upto
                start = max(after_seq, low)
                want = high - start
                if limit is not None:
                    want = min(want, limit - len(records))
                low = high
                if want <= 0:
                    continue  # before after_seq, or past the limit
                # of the run's own log, one event more: to notice events past its last_seq
                own = upto is None
                rows = conn.execute(
                    "SELECT seq, type, version, ts, body FROM events "
                    "WHERE run_id = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                    (rid, start, 2**62 if own else high, want + 1 if own else want),
                ).fetchall()
                check_rows(rid, rows, start, want, high, last_seqs[rid])
                records.extend(EventRecord(*row) for row in rows[:want])
        return records

    async def read(
        self, run_id: str, after_seq: int = 0, limit: int | None = None
    ) -> list[EventRecord]:
        int64("after_seq", after_seq)
        if limit is not None:
            check_limit(int64("limit", limit))
        small = limit is not None and limit <= _SMALL_READ
        if not small and self._lconn is not None:  # the row says how many there can be
            row = self._lconn.execute(_LAST_SEQ, (run_id,)).fetchone()
            small = row is not None and row[0] - after_seq <= _SMALL_READ
        return await self._read(
            lambda conn: self._read_events(conn, run_id, after_seq, limit), small=small
        )

    async def get_blobs(self, digests: Iterable[str]) -> dict[str, bytes]:
        wanted = list(dict.fromkeys(digests))

        def op(conn: sqlite3.Connection) -> dict[str, bytes]:
            found: dict[str, bytes] = {}
            for i in range(0, len(wanted), _CHUNK):
                chunk = wanted[i : i + _CHUNK]
                marks = ", ".join("?" * len(chunk))
                found.update(
                    conn.execute(f"SELECT digest, data FROM blobs WHERE digest IN ({marks})", chunk)
                )
            return found

        return await self._read(op, small=len(wanted) <= _SMALL_READ) if wanted else {}

    async def latest_snapshot(self, run_id: str) -> tuple[int, bytes] | None:
        def op(conn: sqlite3.Connection) -> tuple[int, bytes] | None:
            row = conn.execute(
                "SELECT seq, body FROM snapshots WHERE run_id = ?", (run_id,)
            ).fetchone()
            return (row[0], row[1]) if row else None

        return await self._read(op, small=True)

    async def get_run(self, run_id: str) -> RunInfo:
        return await self._read(lambda conn: self._get_run(conn, run_id), small=True)

    async def find_runs(self, prefix: str, limit: int = 2) -> list[RunInfo]:
        check_limit(int64("limit", limit))
        pattern = "".join(f"[{ch}]" if ch in "*?[" else ch for ch in prefix) + "*"
        return await self._read(
            lambda conn: [
                run_info(row)
                for row in conn.execute(
                    f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id GLOB ? "
                    "ORDER BY created_at, rowid LIMIT ?",
                    (pattern, limit),
                )
            ]
        )

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
        check_limit(int64("limit", limit))
        equal = (
            ("status", status),
            ("parent_run_id", parent_run_id),
            ("tenant", tenant),
            ("agent", agent),
        )
        where = [f"{column} = ?" for column, value in equal if value is not None]
        params: list[object] = [value for _, value in equal if value is not None]
        if since is not None:
            where.append("created_at >= ?")
            params.append(since)
        if before is not None:
            where.append("(created_at < ? OR (created_at = ? AND run_id < ?))")
            params += [before[0], before[0], before[1]]
        sql = (
            f"SELECT {RUN_COLUMNS} FROM runs "
            + (f"WHERE {' AND '.join(where)} " if where else "")
            + "ORDER BY created_at DESC, run_id DESC LIMIT ?"
        )
        return await self._read(
            lambda conn: [run_info(row) for row in conn.execute(sql, (*params, limit))]
        )

    # -- the inbox ---------------------------------------------------------------------

    async def read_inbox(self, run_id: str, after_id: int = 0) -> list[InboxItem]:
        int64("after_id", after_id)

        def op(conn: sqlite3.Connection) -> list[InboxItem]:
            with _snapshot(conn):
                if (
                    conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone()
                    is None
                ):
                    raise RunNotFound(run_id)
                rows = conn.execute(
                    "SELECT id, key, type, version, ts, body FROM inbox "
                    "WHERE run_id = ? AND id > ? ORDER BY id",
                    (run_id, after_id),
                ).fetchall()
            return [InboxItem(row[0], row[1], EventRecord(0, *row[2:])) for row in rows]

        return await self._read(op, small=True)
