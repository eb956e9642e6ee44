"""The SQLite store: one file, WAL mode, safe for several processes, group commits.

Writes from every run in the process go through one queue; whatever has queued up is
committed in one transaction, each append guarded by a savepoint so that one run's
conflict never spoils another's. Under load this turns a thousand small commits into a
handful. A WAL commit without fsync takes tens of microseconds, less than a hop to a
thread and back, so the batch is written on the event loop when the write lock is free
at once; when another process holds it (or ``synchronous=full`` makes commits fsync),
the batch waits for the lock in a writer thread instead, never blocking the loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import msgspec

from autonomic._resource import AsyncResource
from autonomic.errors import (
    AutonomicError,
    ConcurrencyConflict,
    ConfigError,
    LeaseLost,
    RunNotFound,
    StoreCorrupt,
    StoreError,
)
from autonomic.events import EventRecord, NewEvent
from autonomic.store.base import NewRun, RunInfo, lineage_segments, new_run_info

__all__ = ["SQLiteStore"]

log = logging.getLogger("autonomic.store")

SCHEMA_VERSION = 1
_BUSY_MS = 30_000
T = TypeVar("T")


class _LockBusy(Exception):
    """The write lock is held by another connection right now."""


@dataclass(frozen=True, slots=True)
class _Append:
    """An append waiting in the write queue; consecutive ones are written together."""

    run_id: str
    expected_seq: int
    events: Sequence[NewEvent]
    status: str | None
    owner: str | None


_WriteOp = Callable[[sqlite3.Connection], Any] | _Append


_SCHEMA = """
CREATE TABLE autonomic_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    goal TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    last_seq INTEGER NOT NULL,
    parent_run_id TEXT,
    forked_from TEXT,
    forked_at INTEGER,
    lease_owner TEXT,
    lease_expires_at REAL,
    recoveries INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX runs_by_status ON runs (status, lease_expires_at);
CREATE INDEX runs_by_created ON runs (created_at);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    version INTEGER NOT NULL,
    ts REAL NOT NULL,
    body BLOB NOT NULL
);
CREATE UNIQUE INDEX events_by_run ON events (run_id, seq);
CREATE TABLE blobs (digest TEXT PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE snapshots (run_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, body BLOB NOT NULL);
"""

_RUN_COLUMNS = (
    "run_id, agent, goal, status, created_at, updated_at, last_seq, parent_run_id, "
    "forked_from, forked_at, lease_owner, lease_expires_at, recoveries"
)


def _path_from_url(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if parts.netloc:
        path = parts.netloc + "/" + path
    if not path:
        raise ConfigError(f"store URL {url!r} names no file: use sqlite:///runs.db")
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return path, options


def _run_info(row: Sequence[Any]) -> RunInfo:
    return RunInfo(*row)


_CHECK_WAL_EVERY = 64
"""Commits between looks at the WAL's size."""
_CHECKPOINT_BYTES = 4 * 1024 * 1024
"""A WAL larger than this is copied back into the database by a background checkpoint."""


def _settle(batch: list[tuple[_WriteOp, asyncio.Future[Any]]], results: list[Any]) -> None:
    for (_, future), result in zip(batch, results, strict=True):
        if future.done():
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


class SQLiteStore(AsyncResource):
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
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="autonomic-sqlite-write")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="autonomic-sqlite-read")
        self._wconn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        self._queue: list[tuple[_WriteOp, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._flush_scheduled = False
        self._commits = 0
        self._checkpoint: asyncio.Future[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._wconn = await loop.run_in_executor(self._writer, self._connect, True)
        self._rconn = await loop.run_in_executor(self._reader, self._connect, False)

    def _connect(self, create: bool) -> sqlite3.Connection:
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
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_MS}")
            # small pages: a step's commit rewrites a few pages, so 1 KiB pages write a
            # third of the bytes 4 KiB ones do (applies when the file is created)
            conn.execute("PRAGMA page_size = 1024")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            if create:
                self._ensure_schema(conn)
                # checkpoints (which fsync) run in the background, not inside a commit
                conn.execute("PRAGMA wal_autocheckpoint = 0")
                if self._inline:
                    conn.execute("PRAGMA busy_timeout = 0")
            return conn
        except sqlite3.DatabaseError as e:
            if "not a database" in str(e):
                raise StoreCorrupt(
                    f"{self.path} is not an autonomic store (not a SQLite file)"
                ) from e
            raise StoreCorrupt(f"{self.path} is not a usable autonomic store: {e}") from e

    def _ensure_schema(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            if not tables:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(
                    "INSERT INTO autonomic_meta VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            elif "autonomic_meta" not in tables:
                raise StoreCorrupt(f"{self.path} is a SQLite database but not an autonomic store")
            else:
                row = conn.execute(
                    "SELECT value FROM autonomic_meta WHERE key='schema_version'"
                ).fetchone()
                if row is None or int(row[0]) > SCHEMA_VERSION:
                    raise StoreCorrupt(
                        f"{self.path} was written by a newer autonomic: upgrade to open it"
                    )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        while self._flusher is not None or self._queue:
            if self._flusher is not None:
                await self._flusher
            else:
                self._flush_inline()
        if self._checkpoint is not None:
            await asyncio.wait([self._checkpoint])
        loop = asyncio.get_running_loop()
        for conn, pool in ((self._wconn, self._writer), (self._rconn, self._reader)):
            if conn is not None:
                await loop.run_in_executor(pool, conn.close)
        self._wconn = self._rconn = None
        self._writer.shutdown(wait=False)
        self._reader.shutdown(wait=False)

    # -- the write queue (group commit) ---------------------------------------------------
    # Every write op checks its preconditions before it writes anything, so an op that
    # raises AutonomicError has changed nothing and the rest of its batch commits.

    async def _write(self, op: Callable[[sqlite3.Connection], T] | _Append) -> T:
        if self._wconn is None:
            raise StoreError("the store is not open: use 'async with' or await store.open()")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.append((op, future))
        if self._flusher is None and not self._flush_scheduled:
            # a callback, not a task: everything queued in this loop iteration joins the batch
            self._flush_scheduled = True
            loop.call_soon(self._flush_inline)
        return await future

    def _flush_inline(self) -> None:
        """Commit the queue on the loop, or hand it to the writer thread if the lock is busy."""
        self._flush_scheduled = False
        if self._flusher is not None or not self._queue:
            return
        if not self._inline:
            self._flusher = asyncio.create_task(self._flush_in_thread())
            return
        batch, self._queue = self._queue, []
        try:
            results = self._commit_batch([op for op, _ in batch], wait=False)
        except _LockBusy:
            self._queue = batch + self._queue
            self._flusher = asyncio.create_task(self._flush_in_thread())
            return
        except BaseException as e:
            results = [self._as_store_error(e)] * len(batch)
        _settle(batch, results)
        self._after_commit()

    async def _flush_in_thread(self) -> None:
        """Write batches from the writer thread, waiting for the lock, until the queue is empty."""
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    results = await loop.run_in_executor(
                        self._writer, self._commit_batch, [op for op, _ in batch]
                    )
                except BaseException as e:
                    results = [self._as_store_error(e)] * len(batch)
                _settle(batch, results)
                self._after_commit()
        finally:
            self._flusher = None

    def _after_commit(self) -> None:
        """Now and then, start a checkpoint on the reader's thread if the WAL has grown."""
        self._commits += 1
        if self._commits % _CHECK_WAL_EVERY or self._checkpoint is not None:
            return
        try:
            size = os.stat(self.path + "-wal").st_size
        except OSError:
            return
        if size > _CHECKPOINT_BYTES and self._rconn is not None:
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

    @staticmethod
    def _as_store_error(error: BaseException) -> BaseException:
        return error if isinstance(error, AutonomicError) else StoreError(f"write failed: {error}")

    def _commit_batch(self, ops: list[_WriteOp], wait: bool = True) -> list[Any]:
        conn = self._wconn
        assert conn is not None
        results: list[Any] = []
        try:
            if not wait:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as e:
                    if "locked" in str(e) or "busy" in str(e):
                        raise _LockBusy from e
                    raise
            elif self._inline:
                conn.execute(f"PRAGMA busy_timeout = {_BUSY_MS}")
                try:
                    conn.execute("BEGIN IMMEDIATE")
                finally:
                    conn.execute("PRAGMA busy_timeout = 0")
            else:
                conn.execute("BEGIN IMMEDIATE")
            appends: list[_Append] = []
            for op in ops:
                if isinstance(op, _Append):
                    appends.append(op)
                    continue
                if appends:
                    results.extend(self._append_many(conn, appends))
                    appends = []
                try:
                    results.append(op(conn))
                except AutonomicError as e:
                    results.append(e)
            if appends:
                results.extend(self._append_many(conn, appends))
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreError(f"could not write to {self.path}: {e}") from e
        return results

    async def _read(self, op: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._rconn
        if conn is None:
            raise StoreError("the store is not open: use 'async with' or await store.open()")

        def run() -> T:
            try:
                return op(conn)
            except sqlite3.Error as e:
                raise StoreError(f"could not read {self.path}: {e}") from e

        return await asyncio.get_running_loop().run_in_executor(self._reader, run)

    # -- writes -------------------------------------------------------------------------

    def _insert_events(
        self, conn: sqlite3.Connection, run_id: str, first_seq: int, events: Sequence[NewEvent]
    ) -> None:
        conn.executemany(
            "INSERT INTO events (run_id, seq, type, version, ts, body) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (run_id, first_seq + i, e.type, e.version, e.ts, e.body)
                for i, e in enumerate(events)
            ],
        )
        blobs = [item for e in events for item in e.blobs.items()]
        if blobs:
            conn.executemany("INSERT OR IGNORE INTO blobs (digest, data) VALUES (?, ?)", blobs)
        self.bytes_written += sum(len(e.body) for e in events) + sum(len(b) for _, b in blobs)

    def _insert_run(
        self,
        conn: sqlite3.Connection,
        run: NewRun,
        events: Sequence[NewEvent],
        first_seq: int,
        owner: str | None,
        lease_s: float,
        forked_from: str | None,
    ) -> None:
        info = new_run_info(
            run,
            first_seq,
            len(events),
            owner=owner,
            lease_s=lease_s,
            forked_from=forked_from,
            now=time.time(),
        )
        try:
            conn.execute(
                f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                msgspec.structs.astuple(info),
            )
        except sqlite3.IntegrityError:
            raise ConfigError(f"a run with id {run.run_id!r} already exists") from None
        self._insert_events(conn, run.run_id, first_seq, events)

    async def create_run(
        self, run: NewRun, events: Sequence[NewEvent], *, owner: str | None, lease_s: float
    ) -> None:
        await self._write(lambda c: self._insert_run(c, run, events, 1, owner, lease_s, None))

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
        def op(conn: sqlite3.Connection) -> None:
            source = self._get_run(conn, source_id)
            if not 1 <= at_seq <= source.last_seq:
                raise ConfigError(
                    f"run {source_id} has events 1..{source.last_seq}; cannot fork at {at_seq}"
                )
            self._insert_run(conn, run, events, at_seq + 1, owner, lease_s, source_id)

        await self._write(op)

    async def append(
        self,
        run_id: str,
        expected_seq: int,
        events: Sequence[NewEvent],
        *,
        status: str | None = None,
        owner: str | None = None,
    ) -> int:
        return await self._write(_Append(run_id, expected_seq, events, status, owner))

    def _append_one(self, conn: sqlite3.Connection, a: _Append) -> Any:
        """A lone append: the check and the update are one conditional UPDATE."""
        now = time.time()
        last = a.expected_seq + len(a.events)
        updated = conn.execute(
            "UPDATE runs SET last_seq = ?, updated_at = ?, status = coalesce(?, status) "
            "WHERE run_id = ? AND last_seq = ? AND (? IS NULL OR lease_owner IS NULL "
            "OR lease_owner = ? OR lease_expires_at <= ?)",
            (last, now, a.status, a.run_id, a.expected_seq, a.owner, a.owner, now),
        ).rowcount
        if not updated:
            try:
                info = self._get_run(conn, a.run_id)
            except RunNotFound as e:
                return e
            if info.last_seq != a.expected_seq:
                return ConcurrencyConflict(a.run_id, a.expected_seq, info.last_seq)
            return LeaseLost(f"run {a.run_id} is leased to {info.lease_owner}")
        self._insert_events(conn, a.run_id, a.expected_seq + 1, a.events)
        return last

    def _append_many(self, conn: sqlite3.Connection, appends: list[_Append]) -> list[Any]:
        """Check and write many appends with a handful of statements instead of two each."""
        if len(appends) == 1:
            return [self._append_one(conn, appends[0])]
        ids = list(dict.fromkeys(a.run_id for a in appends))
        heads: dict[str, tuple[int, str | None, float | None]] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            rows = conn.execute(
                "SELECT run_id, last_seq, lease_owner, lease_expires_at FROM runs "
                f"WHERE run_id IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            heads.update((row[0], row[1:]) for row in rows)
        now = time.time()
        results: list[Any] = []
        updates: dict[str, tuple[int, float, str | None, str]] = {}
        rows_out: list[tuple[str, int, str, int, float, bytes]] = []
        blobs: dict[str, bytes] = {}
        for a in appends:
            head = heads.get(a.run_id)
            if head is None:
                results.append(RunNotFound(a.run_id))
                continue
            last, lease_owner, lease_expires = head
            if last != a.expected_seq:
                results.append(ConcurrencyConflict(a.run_id, a.expected_seq, last))
                continue
            if (
                a.owner is not None
                and lease_owner not in (None, a.owner)
                and (lease_expires or 0) > now
            ):
                results.append(LeaseLost(f"run {a.run_id} is leased to {lease_owner}"))
                continue
            for i, e in enumerate(a.events):
                rows_out.append((a.run_id, last + 1 + i, e.type, e.version, e.ts, e.body))
                blobs.update(e.blobs)
            new_last = last + len(a.events)
            heads[a.run_id] = (new_last, lease_owner, lease_expires)
            previous = updates.get(a.run_id)
            status = a.status or (previous[2] if previous else None)
            updates[a.run_id] = (new_last, now, status, a.run_id)
            results.append(new_last)
        conn.executemany(
            "INSERT INTO events (run_id, seq, type, version, ts, body) VALUES (?, ?, ?, ?, ?, ?)",
            rows_out,
        )
        if blobs:
            conn.executemany("INSERT OR IGNORE INTO blobs VALUES (?, ?)", list(blobs.items()))
        conn.executemany(
            "UPDATE runs SET last_seq = ?, updated_at = ?, status = coalesce(?, status) "
            "WHERE run_id = ?",
            list(updates.values()),
        )
        self.bytes_written += sum(len(r[5]) for r in rows_out) + sum(map(len, blobs.values()))
        return results

    async def put_snapshot(
        self, run_id: str, seq: int, body: bytes, blobs: dict[str, bytes]
    ) -> None:
        def op(conn: sqlite3.Connection) -> None:
            if blobs:
                conn.executemany("INSERT OR IGNORE INTO blobs VALUES (?, ?)", list(blobs.items()))
            conn.execute(
                "INSERT INTO snapshots (run_id, seq, body) VALUES (?, ?, ?) "
                "ON CONFLICT (run_id) DO UPDATE SET seq = excluded.seq, body = excluded.body",
                (run_id, seq, body),
            )
            self.bytes_written += len(body) + sum(len(b) for b in blobs.values())

        await self._write(op)

    # -- reads --------------------------------------------------------------------------

    @staticmethod
    def _get_run(conn: sqlite3.Connection, run_id: str) -> RunInfo:
        row = conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        if row is None:
            raise RunNotFound(run_id)
        return _run_info(row)

    async def read(self, run_id: str, after_seq: int = 0) -> list[EventRecord]:
        def op(conn: sqlite3.Connection) -> list[EventRecord]:
            conn.execute("BEGIN")
            try:
                chain = [self._get_run(conn, run_id)]
                while chain[-1].forked_from:
                    chain.append(self._get_run(conn, chain[-1].forked_from))
                records: list[EventRecord] = []
                for rid, upto in lineage_segments(chain):
                    rows = conn.execute(
                        "SELECT seq, type, version, ts, body FROM events "
                        "WHERE run_id = ? AND seq > ? AND seq <= ? ORDER BY seq",
                        (rid, after_seq, upto if upto is not None else 2**62),
                    )
                    records.extend(EventRecord(*row) for row in rows)
                return records
            finally:
                conn.execute("COMMIT")

        return await self._read(op)

    async def get_blobs(self, digests: Iterable[str]) -> dict[str, bytes]:
        wanted = list(dict.fromkeys(digests))

        def op(conn: sqlite3.Connection) -> dict[str, bytes]:
            found: dict[str, bytes] = {}
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                marks = ",".join("?" * len(chunk))
                found.update(
                    conn.execute(f"SELECT digest, data FROM blobs WHERE digest IN ({marks})", chunk)
                )
            return found

        return await self._read(op) if wanted else {}

    async def latest_snapshot(self, run_id: str) -> tuple[int, bytes] | None:
        def op(conn: sqlite3.Connection) -> tuple[int, bytes] | None:
            row = conn.execute("SELECT seq, body FROM snapshots WHERE run_id = ?", (run_id,))
            found = row.fetchone()
            return (found[0], found[1]) if found else None

        return await self._read(op)

    async def get_run(self, run_id: str) -> RunInfo:
        return await self._read(lambda c: self._get_run(c, run_id))

    async def find_runs(self, prefix: str, limit: int = 2) -> list[RunInfo]:
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return await self._read(
            lambda c: [
                _run_info(r)
                for r in c.execute(
                    f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id LIKE ? ESCAPE '\\' LIMIT ?",
                    (escaped + "%", limit),
                )
            ]
        )

    async def list_runs(self, *, status: str | None = None, limit: int = 50) -> list[RunInfo]:
        where, params = ("WHERE status = ?", [status]) if status else ("", [])
        return await self._read(
            lambda c: [
                _run_info(r)
                for r in c.execute(
                    f"SELECT {_RUN_COLUMNS} FROM runs {where} ORDER BY created_at DESC LIMIT ?",
                    (*params, limit),
                )
            ]
        )

    # -- leases -------------------------------------------------------------------------

    @staticmethod
    def _take_lease(
        conn: sqlite3.Connection,
        info: RunInfo,
        owner: str,
        lease_s: float,
        now: float,
        steal_from: str | None = None,
    ) -> RunInfo | None:
        free = info.lease_owner in (None, owner, steal_from)
        if not free and (info.lease_expires_at or 0) > now:
            return None
        recovered = 1 if info.lease_owner not in (None, owner) else 0
        conn.execute(
            "UPDATE runs SET lease_owner = ?, lease_expires_at = ?, recoveries = recoveries + ? "
            "WHERE run_id = ?",
            (owner, now + lease_s, recovered, info.run_id),
        )
        return msgspec.structs.replace(
            info,
            lease_owner=owner,
            lease_expires_at=now + lease_s,
            recoveries=info.recoveries + recovered,
        )

    async def acquire_lease(
        self, run_id: str, owner: str, lease_s: float, *, steal_from: str | None = None
    ) -> RunInfo | None:
        return await self._write(
            lambda c: self._take_lease(
                c, self._get_run(c, run_id), owner, lease_s, time.time(), steal_from
            )
        )

    async def renew_leases(self, owner: str, run_ids: Sequence[str], lease_s: float) -> set[str]:
        def op(conn: sqlite3.Connection) -> set[str]:
            expires = time.time() + lease_s
            lost = set()
            for rid in run_ids:
                cursor = conn.execute(
                    "UPDATE runs SET lease_expires_at = ? WHERE run_id = ? AND lease_owner = ?",
                    (expires, rid, owner),
                )
                if cursor.rowcount == 0:
                    lost.add(rid)
            return lost

        return await self._write(op) if run_ids else set()

    async def release_lease(self, run_id: str, owner: str) -> None:
        await self._write(
            lambda c: c.execute(
                "UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL "
                "WHERE run_id = ? AND lease_owner = ?",
                (run_id, owner),
            )
        )

    async def claim_runs(
        self, owner: str, lease_s: float, limit: int, *, max_recoveries: int
    ) -> list[RunInfo]:
        def op(conn: sqlite3.Connection) -> list[RunInfo]:
            now = time.time()
            rows = conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE status = 'running' "
                "AND (lease_expires_at IS NULL OR lease_expires_at <= ?) "
                "ORDER BY created_at LIMIT ?",
                (now, limit * 2 + 10),
            ).fetchall()
            claimed: list[RunInfo] = []
            for info in map(_run_info, rows):
                if len(claimed) >= limit:
                    break
                if info.lease_owner is not None and info.recoveries >= max_recoveries:
                    conn.execute(
                        "UPDATE runs SET status = 'dead', lease_owner = NULL, "
                        "lease_expires_at = NULL WHERE run_id = ?",
                        (info.run_id,),
                    )
                    continue
                taken = self._take_lease(conn, info, owner, lease_s, now)
                if taken is not None:
                    claimed.append(taken)
            return claimed

        return await self._write(op)

    async def set_status(self, run_id: str, status: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            if (
                conn.execute(
                    "UPDATE runs SET status = ? WHERE run_id = ?", (status, run_id)
                ).rowcount
                == 0
            ):
                raise RunNotFound(run_id)

        await self._write(op)
