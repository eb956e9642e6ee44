"""The PostgreSQL store: every role of the Store protocol on a real server, many processes
on many machines sharing one database.

``postgresql://user@host:5432/db?schema=name`` (``schema`` defaults to ``public``; it is
created when missing). psycopg 3, async, over a connection pool: each operation is one
transaction on a pooled connection. Plain commits, run creations and reads of logs made
while a batch of their kind is on its way go together in the next (``_Batches``: one
statement or transaction for many, one WAL flush).

- A commit locks its run's row (``FOR UPDATE``) and checks, under that lock, that the log
  ends where the caller expects and that its lease (owner and epoch) is the run's current
  one: a stalled process whose run was taken over can never write (fencing).
- Claiming ready runs takes their rows with ``FOR UPDATE SKIP LOCKED``: concurrent
  claimers, in this process or any other, never wait for each other nor take one run twice.
- Within this process, writes to one run keep the order they were made in (a per-run
  lock), as the SQLite store's group commit does.
- Deadlocks and serialization failures (two commits delivering to each other's runs)
  are retried; the server rolled them back whole.

The schema is numbered migrations (``_postgres_schema``), the same numbers as SQLite's;
``self.bus`` is a LISTEN/NOTIFY bus over the same database (``autonomic.bus.postgres``).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import (
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

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
from autonomic.store._postgres_schema import ensure_schema
from autonomic.store._rows import (
    RUN_COLUMNS,
    check_rows,
    decode_wait,
    int64,
    refused,
    run_info,
    seconds,
)
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

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg_pool import AsyncConnectionPool

    from autonomic.bus.postgres import PostgresBus

__all__ = ["PostgresStore", "import_psycopg"]

T = TypeVar("T")
Item = TypeVar("Item")
R = TypeVar("R")
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_RETRIES = 8
"""Tries of a transaction the server rolled back for a deadlock or a serialization failure."""
_RETRY_STATES = ("40001", "40P01")

_SELECT_RUN = f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = %s"
_INSERT_RUN = f"INSERT INTO runs ({RUN_COLUMNS}) VALUES ({', '.join(['%s'] * 21)})"
_INSERT_EVENTS = (
    "INSERT INTO events (run_id, seq, type, version, ts, body) SELECT * FROM "
    "unnest(%b::text[], %b::bigint[], %b::text[], %b::bigint[], %b::float8[], %b::bytea[])"
)
_INSERT_BLOBS = (
    "INSERT INTO blobs (digest, data) SELECT * FROM unnest(%b::text[], %b::bytea[]) "
    "ON CONFLICT DO NOTHING"
)
_HEADS = (
    "SELECT run_id, status, last_seq, lease_owner, lease_epoch, inbox_last FROM runs "
    "WHERE run_id = ANY(%s) ORDER BY run_id FOR UPDATE"
)
_APPEND_MANY = """
UPDATE runs SET last_seq = v.last_seq, updated_at = %s, status = v.status, wait = NULL,
    wake_at = NULL, lease_owner = v.owner,
    lease_expires_at = CASE WHEN v.owner IS NULL THEN NULL ELSE lease_expires_at END
FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::text[]) AS v(run_id, last_seq, status, owner)
WHERE runs.run_id = v.run_id"""
_APPEND = f"""
WITH v AS (
    SELECT * FROM unnest(%(ids)b::text[], %(expected)b::bigint[], %(owners)b::text[],
        %(epochs)b::bigint[], %(statuses)b::text[], %(releases)b::bool[], %(counts)b::bigint[])
        AS v(run_id, expected, owner, epoch, status, release, count)
), fit AS (
    SELECT r.run_id FROM runs r JOIN v ON r.run_id = v.run_id
    WHERE r.last_seq = v.expected AND r.lease_owner = v.owner AND r.lease_epoch = v.epoch
        AND r.status NOT IN ({", ".join(f"'{s}'" for s in TERMINAL_STATUSES)})
        AND coalesce(v.status, r.status) <> 'waiting'
    ORDER BY r.run_id FOR UPDATE OF r
), written AS (
    UPDATE runs SET last_seq = v.expected + v.count, updated_at = %(now)b,
        status = coalesce(v.status, runs.status), wait = NULL, wake_at = NULL,
        lease_owner = CASE WHEN v.release THEN NULL ELSE runs.lease_owner END,
        lease_expires_at = CASE WHEN v.release THEN NULL ELSE runs.lease_expires_at END
    FROM fit JOIN v ON v.run_id = fit.run_id WHERE runs.run_id = fit.run_id
    RETURNING runs.run_id, runs.inbox_last
), logged AS (
    INSERT INTO events (run_id, seq, type, version, ts, body)
    SELECT e.* FROM unnest(%(e_ids)b::text[], %(e_seqs)b::bigint[], %(e_types)b::text[],
        %(e_versions)b::bigint[], %(e_ts)b::float8[], %(e_bodies)b::bytea[])
        AS e(run_id, seq, type, version, ts, body)
    WHERE e.run_id IN (SELECT run_id FROM written)
), stored AS (
    INSERT INTO blobs (digest, data) SELECT * FROM unnest(%(digests)b::text[], %(data)b::bytea[])
    ON CONFLICT DO NOTHING
)
SELECT run_id, inbox_last FROM written"""
"""Plain commits in one statement (one round trip, no BEGIN nor COMMIT): each run's row
is locked (in one order) if the commit fits it (the log ends where the commit expects,
its lease is the current one, the run has not ended nor would be left waiting), then
updated, and the events of the runs written are inserted. The runs it did not write are
those refused (or missing): ``_append_checked`` says why. Its values go in binary, which
psycopg makes several times faster than text for arrays."""
_EVENT_COLUMNS = ("e_ids", "e_seqs", "e_types", "e_versions", "e_ts", "e_bodies")
_HEAD = (
    "SELECT status, last_seq, lease_owner, lease_epoch, inbox_last "
    "FROM runs WHERE run_id = %s FOR UPDATE"
)
_SET_RUN = """
UPDATE runs SET last_seq = %s, updated_at = %s, status = %s, wait = %s, wake_at = %s,
    lease_owner = CASE WHEN %s THEN NULL ELSE lease_owner END,
    lease_expires_at = CASE WHEN %s THEN NULL ELSE lease_expires_at END
WHERE run_id = %s RETURNING inbox_last"""
_READY = """
    WHERE ((status = 'waiting' AND wake_at <= %(now)s
            AND (coalesce(lease_owner, '') = '' OR coalesce(lease_expires_at, 0) <= %(now)s))
        OR (status = 'running' AND coalesce(wake_at, 0) <= %(now)s
            AND (lease_owner IS NULL
                 OR (%(orphans)s AND coalesce(lease_expires_at, 0) <= %(now)s))))
        AND (%(any_agent)s OR agent = ANY(%(agents)s))
        AND (tenant IS NULL OR NOT tenant = ANY(%(tenants)s))
        AND NOT agent = ANY(%(full_agents)s)
    ORDER BY priority DESC, created_at, n LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED"""
"""Ready runs (``Leases.claim_runs``), in claim order, locked: others skip them."""
_CLAIM_TAIL = f"""
UPDATE runs SET lease_owner = %(owner)s, lease_expires_at = %(expires)s,
    lease_epoch = runs.lease_epoch + 1,
    recoveries = runs.recoveries
        + CASE WHEN picked.old_owner IS NOT NULL AND picked.old_owner <> %(owner)s
          THEN 1 ELSE 0 END
FROM picked WHERE runs.run_id = picked.run_id
RETURNING {", ".join("runs." + c.strip() for c in RUN_COLUMNS.split(","))},
    picked.old_owner, runs.n"""
_CLAIM = (
    f"WITH picked AS (SELECT run_id, lease_owner AS old_owner FROM runs {_READY}) {_CLAIM_TAIL}"
)
_CANDIDATES = f"SELECT {RUN_COLUMNS} FROM runs {_READY}"
_CLAIM_PICKED = (
    "WITH picked AS (SELECT run_id, lease_owner AS old_owner FROM runs "
    f"WHERE run_id = ANY(%(ids)s)) {_CLAIM_TAIL}"
)
_READ_MANY = """
SELECT v.i, r.last_seq, r.forked_from, e.* FROM unnest(%(ids)b::text[], %(after)b::bigint[],
    %(limits)b::bigint[]) WITH ORDINALITY AS v(run_id, after, lim, i)
JOIN runs r ON r.run_id = v.run_id LEFT JOIN LATERAL (
    SELECT seq, type, version, ts, body FROM events
    WHERE events.run_id = r.run_id AND r.forked_from IS NULL AND seq > v.after ORDER BY seq
    LIMIT greatest(least(r.last_seq - v.after, v.lim), 0) + 1
) e ON true ORDER BY v.i, e.seq"""
"""Runs' events after ``after`` in one statement (one state of the database), but a fork's
(its lineage is read in a transaction), with each row's ``last_seq``; one event more than
the row says, to notice a log that goes on past it."""
_LEASED = """
SELECT agent, tenant, count(*) FROM runs
WHERE status IN ('running', 'waiting') AND lease_owner IS NOT NULL AND lease_expires_at > %s
GROUP BY agent, tenant"""
"""What live leases hold now, by agent and tenant (for concurrency limits)."""


def import_psycopg() -> Any:
    """psycopg, or a one-line error naming the extra that brings it."""
    try:
        import psycopg
        import psycopg_pool  # noqa: F401
    except ImportError as e:
        raise ConfigError(
            'the PostgreSQL store needs psycopg: pip install "autonomic[postgres]"'
        ) from e
    return psycopg


def _split_url(url: str) -> tuple[str, str, str, str]:
    """(conninfo for libpq, schema, libpq ``options`` given, the URL without its password
    for messages)."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError(f"{url!r} is not a PostgreSQL URL: use postgresql://host/db")
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), "public")
    if not _SCHEMA_NAME.match(schema):
        raise ConfigError(
            f"schema {schema!r} in the store URL is not a plain name: use letters, digits "
            "and underscores"
        )
    options = next((v for k, v in query if k == "options"), "")
    rest = urlencode([(k, v) for k, v in query if k not in ("schema", "options")])
    conninfo = urlunsplit((parts.scheme, parts.netloc, parts.path, rest, ""))
    netloc = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username + "@" if parts.username else ""
    shown = urlunsplit((parts.scheme, user + netloc, parts.path, "", ""))
    return conninfo, schema, options, f"{shown} (schema {schema})"


def _is_plain(c: Commit) -> bool:
    """A commit of events, perhaps with a new status or a release: the common case, which
    is written in batches."""
    return (
        c.wait is None and c.status != "waiting" and not (c.consumed or c.deliveries or c.children)
    )


_NewRunItem = tuple[NewRun, Sequence[NewEvent], "str | None", float]
"""A run to create: the run, its first events, its owner and lease length."""


_PARALLEL = 2
"""Batches in flight at once: one more takes what comes while another is written, so that
a write waits for the server, not for a batch before its own."""
_ReadItem = tuple[str, int, "int | None"]
"""A log to read: the run, after which event, at most how many."""


class _Batches(Generic[Item, R]):
    """Group commit: writes made while a batch is being written wait and go together in
    the next one: one transaction, a few statements and one WAL flush for many writes
    (and reads alike: one statement for many).

    ``write_many`` returns a result or an exception for each item (a refusal: the others
    are written all the same). A batch that fails as a whole because of one item (a
    damaged log, an id taken meanwhile) is written again one item at a time, so that only
    that one fails (with ``alone(item, error)``); one that fails because the server is
    unreachable fails every item in it.
    """

    def __init__(
        self,
        write_many: Callable[[list[Item]], Awaitable[list[Any]]],
        alone: Callable[[Item, AutonomicError], AutonomicError],
        *,
        parallel: int = _PARALLEL,
    ) -> None:
        self.write_many, self.alone, self.parallel = write_many, alone, parallel
        self._queue: list[tuple[Item, asyncio.Future[R]]] = []
        self._flushers: set[asyncio.Task[None]] = set()
        """Flushers that may still take the queue: a flusher leaves the set in the same
        step as it finds the queue empty, so that a write queued after it sees it gone."""
        self._pending: asyncio.Task[None] | None = None  # one not started yet

    async def put(self, item: Item) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._pending is None and len(self._flushers) < self.parallel:
            flusher = self._pending = asyncio.ensure_future(self._flush())
            self._flushers.add(flusher)
            flusher.add_done_callback(self._gone)  # (cancelled before it started)
        return await future

    def _gone(self, flusher: asyncio.Task[None]) -> None:
        self._flushers.discard(flusher)
        if self._pending is flusher:
            self._pending = None

    async def drain(self) -> None:
        while self._flushers:
            await asyncio.wait(self._flushers)

    async def _flush(self) -> None:
        me = asyncio.current_task()
        self._pending = None
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                batch = [(item, f) for item, f in batch if not f.done()]
                if batch:
                    await self._write(batch)
        finally:
            self._flushers.discard(me)

    async def _write(self, batch: list[tuple[Item, asyncio.Future[R]]]) -> None:
        items = [item for item, _ in batch]
        results: list[Any]
        try:
            results = await self.write_many(items)
        except (StoreCorrupt, ConfigError) as e:
            if len(batch) > 1:  # one item spoilt the batch: find it
                for one in batch:
                    await self._write([one])
                return
            results = [self.alone(items[0], e)]
        except Exception as e:  # the server is unreachable: every write failed
            results = [e] * len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)


def _commit_alone(c: Commit, error: AutonomicError) -> AutonomicError:
    if isinstance(error, StoreCorrupt):  # its events collided with ones already there
        return StoreCorrupt(
            f"run {c.run_id}: its log already holds events after event {c.expected_seq}, "
            "where its row says it ends (the store is damaged)"
        )
    return error


def _create_alone(item: _NewRunItem, error: AutonomicError) -> AutonomicError:
    if isinstance(error, StoreCorrupt):  # created meanwhile by another process
        return ConfigError(f"a run with id {item[0].run_id!r} already exists")
    return error


def _records(rows: Iterable[Sequence[Any]]) -> list[EventRecord]:
    return [EventRecord(row[0], row[1], row[2], row[3], bytes(row[4])) for row in rows]


class _Ordered:
    """``PostgresStore._ordered``: a lock per run with writes in flight, kept in ``order``
    with how many use it (a class, not a generator: it is on every write's path)."""

    __slots__ = ("lock", "order", "run_id")

    def __init__(self, order: dict[str, tuple[asyncio.Lock, int]], run_id: str) -> None:
        self.order, self.run_id = order, run_id

    async def __aenter__(self) -> None:
        lock, users = self.order.get(self.run_id) or (asyncio.Lock(), 0)
        self.order[self.run_id] = (lock, users + 1)
        self.lock = lock
        try:
            await lock.acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self.lock.release()
        self._leave()

    def _leave(self) -> None:
        lock, users = self.order[self.run_id]
        if users == 1:
            del self.order[self.run_id]
        else:
            self.order[self.run_id] = (lock, users - 1)


class PostgresStore(SharedResource):
    """``postgresql://host:port/db?schema=name``; ``pool_size`` connections at most.

    Commits are durable when they return (the server's ``synchronous_commit``)."""

    def __init__(self, url: str, *, create: bool = True, pool_size: int = 10) -> None:
        self.url = url
        self.create = create
        self.conninfo, self.schema, self._options, self.where = _split_url(url)
        if pool_size < 1:
            raise ConfigError("pool_size must be 1 or more")
        self.pool_size = pool_size
        self._pool: AsyncConnectionPool[Any] | None = None
        self._order: dict[str, tuple[asyncio.Lock, int]] = {}
        self._bus: PostgresBus | None = None
        self._checking: asyncio.Future[None] | None = None
        self._plain = _Batches[Commit, Committed](self._append_many, _commit_alone)
        self._creates = _Batches[_NewRunItem, RunInfo](self._create_many, _create_alone)
        self._reads = _Batches[_ReadItem, "list[EventRecord] | None"](
            self._read_many, lambda _, error: error
        )

    @property
    def bus(self) -> PostgresBus:
        """A LISTEN/NOTIFY bus on this database: hints reach every process using it (a
        runtime on this store uses it unless given another; it opens and closes it)."""
        if self._bus is None:
            from autonomic.bus.postgres import PostgresBus

            self._bus = PostgresBus(self.conninfo, self.schema)
        return self._bus

    # -- lifecycle ---------------------------------------------------------------------

    def connect_kwargs(self) -> dict[str, Any]:
        """How every connection is made: autocommit, in the store's schema, with the
        URL's ``options`` (``?options=-c%20synchronous_commit%3Doff`` trades the last
        moments of commits on a server crash for speed, as SQLite's default does)."""
        options = f"{self._options} -c search_path={self.schema}".strip()
        return {"autocommit": True, "options": options}

    async def _open(self) -> None:
        psycopg = import_psycopg()
        from psycopg_pool import AsyncConnectionPool

        try:
            async with await psycopg.AsyncConnection.connect(
                self.conninfo, autocommit=True, connect_timeout=10
            ) as conn:
                exists = await (
                    await conn.execute(
                        "SELECT 1 FROM information_schema.tables "
                        "WHERE table_schema = %s AND table_name = 'autonomic_meta'",
                        (self.schema,),
                    )
                ).fetchone()
                if not exists and not self.create:
                    raise StoreError(
                        f"no store at {self.where}: start a run first, or point "
                        "--store/AUTONOMIC_STORE at an existing store"
                    )
                await ensure_schema(conn, self.schema, self.where)
        except psycopg.Error as e:
            raise self._failure("open", e) from e
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            self.conninfo,
            kwargs=self.connect_kwargs(),
            min_size=1,
            max_size=self.pool_size,
            open=False,
            name=f"autonomic-{self.schema}",
        )
        try:
            await pool.open(wait=True, timeout=10)
        except Exception as e:
            await pool.close()
            raise self._failure("open", e) from e
        self._pool = pool

    async def _close(self) -> None:
        await self._plain.drain()
        await self._creates.drain()
        await self._reads.drain()
        if self._checking is not None:
            await asyncio.wait([self._checking])
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    # -- plumbing ----------------------------------------------------------------------

    def _failure(self, doing: str, error: BaseException) -> AutonomicError:
        """The one-line error a caller sees for ``error``."""
        if isinstance(error, AutonomicError):
            return error
        detail = " ".join(str(error).split()) or type(error).__name__
        state = getattr(error, "sqlstate", None) or ""
        if state.startswith("22"):  # data exceptions: a number out of range, a NUL in text
            return ConfigError(f"the store refused a value: {detail}")
        if state == "23505":
            return StoreCorrupt(f"could not {doing} {self.where}: a duplicate row ({detail})")
        return StoreError(f"could not {doing} {self.where}: {detail}")

    def _ordered(self, run_id: str) -> _Ordered:
        """Writes to one run, in this process, in the order they were made. Enter it
        before any other await (an uncontended lock is taken without suspending)."""
        return _Ordered(self._order, run_id)

    async def _tx(
        self,
        op: Callable[[AsyncConnection[Any]], Awaitable[T]],
        doing: str,
        *,
        pipeline: bool = False,
        transaction: bool = True,
    ) -> T:
        """Run ``op`` in one transaction, retried when the server rolled it back for a
        deadlock or a serialization failure. With ``pipeline``, statements whose results
        are not read go to the server together (with the COMMIT): fewer round trips, but
        their errors surface only when the transaction ends. Without ``transaction`` (for
        an ``op`` of one statement, atomic by itself) no BEGIN and COMMIT are sent."""
        psycopg = import_psycopg()
        if self._pool is None:
            raise StoreError("the store is not open: use 'async with' or await store.open()")
        for attempt in range(_RETRIES):
            try:
                async with self._pool.connection() as conn:
                    if not transaction:
                        return await op(conn)
                    if not pipeline:
                        async with conn.transaction():
                            return await op(conn)
                    async with conn.pipeline(), conn.transaction():
                        return await op(conn)
            except AutonomicError:
                raise
            except psycopg.Error as e:
                if getattr(e, "sqlstate", None) in _RETRY_STATES and attempt < _RETRIES - 1:
                    await asyncio.sleep(0.001 * 2**attempt)
                    continue
                if isinstance(e, psycopg.OperationalError):
                    self._check_pool()
                raise self._failure(doing, e) from e
            except Exception as e:
                raise self._failure(doing, e) from e
        raise AssertionError("unreachable")

    def _check_pool(self) -> None:
        """A connection broke (the server restarted): have the pool test its idle ones and
        replace the broken, in the background, so that the next operations do not fail."""
        if self._pool is not None and self._checking is None:
            self._checking = asyncio.ensure_future(self._pool.check())
            self._checking.add_done_callback(self._checked)

    def _checked(self, task: asyncio.Future[None]) -> None:
        self._checking = None
        if not task.cancelled():
            task.exception()  # a server still down: the next operation reports it

    async def _get_run(
        self, conn: AsyncConnection[Any], run_id: str, lock: bool = False
    ) -> RunInfo:
        cursor = await conn.execute(_SELECT_RUN + (" FOR UPDATE" if lock else ""), (run_id,))
        row = await cursor.fetchone()
        if row is None:
            raise RunNotFound(run_id)
        return run_info(row)

    # -- writing -----------------------------------------------------------------------

    async def _insert_blobs(self, conn: AsyncConnection[Any], blobs: dict[str, bytes]) -> None:
        if blobs:  # in one order everywhere, so that concurrent inserts cannot deadlock
            digests = sorted(blobs)
            await conn.execute(_INSERT_BLOBS, (digests, [blobs[d] for d in digests]))

    async def _insert_events(
        self, conn: AsyncConnection[Any], run_id: str, first_seq: int, events: Sequence[NewEvent]
    ) -> None:
        rows = [
            (run_id, first_seq + i, e.type, e.version, e.ts, e.body) for i, e in enumerate(events)
        ]
        await self._insert_rows(
            conn,
            rows,
            f"run {run_id}: its log already holds events after "
            f"event {first_seq - 1}, where its row says it ends",
        )
        blobs: dict[str, bytes] = {}
        for event in events:
            blobs.update(event.blobs)
        await self._insert_blobs(conn, blobs)

    async def _insert_rows(
        self, conn: AsyncConnection[Any], rows: Sequence[tuple[Any, ...]], taken: str
    ) -> None:
        """Insert event rows in one statement; ``taken`` says what a duplicate means."""
        if not rows:
            return
        psycopg = import_psycopg()
        try:
            await conn.execute(_INSERT_EVENTS, [list(column) for column in zip(*rows, strict=True)])
        except psycopg.errors.UniqueViolation as error:
            raise StoreCorrupt(f"{taken} (the store is damaged)") from error

    async def _check_new(self, conn: AsyncConnection[Any], runs: Sequence[NewRun]) -> None:
        """Refuse ids that are taken (before anything is written)."""
        ids = [run.run_id for run in runs]
        if not ids:
            return
        cursor = await conn.execute("SELECT run_id FROM runs WHERE run_id = ANY(%s)", (ids,))
        taken = {row[0] for row in await cursor.fetchall()}
        seen: set[str] = set()
        for run_id in ids:
            if run_id in taken or run_id in seen:
                raise ConfigError(f"a run with id {run_id!r} already exists")
            seen.add(run_id)

    async def _insert_runs(
        self, conn: AsyncConnection[Any], runs: Sequence[tuple[RunInfo, Sequence[NewEvent]]]
    ) -> None:
        psycopg = import_psycopg()
        try:
            async with conn.cursor() as cursor:
                await cursor.executemany(
                    _INSERT_RUN, [msgspec.structs.astuple(info) for info, _ in runs]
                )
        except psycopg.errors.UniqueViolation as e:  # created meanwhile by another process
            raise ConfigError(
                f"a run with id {runs[0][0].run_id!r} (or one created with it) already exists"
            ) from e
        rows = [
            (info.run_id, seq, e.type, e.version, e.ts, e.body)
            for info, events in runs
            for seq, e in enumerate(events, info.last_seq - len(events) + 1)
        ]
        await self._insert_rows(  # every log in one statement
            conn, rows, f"run {runs[0][0].run_id} (or one created with it) already has events"
        )
        await self._insert_blobs(
            conn, {d: b for _, events in runs for e in events for d, b in e.blobs.items()}
        )

    async def _new_run(
        self,
        conn: AsyncConnection[Any],
        run: NewRun,
        events: Sequence[NewEvent],
        first_seq: int,
        owner: str | None,
        lease_s: float,
        forked_from: str | None = None,
    ) -> RunInfo:
        await self._check_new(conn, [run])
        info = new_run_info(
            run,
            first_seq,
            len(events),
            owner=owner,
            lease_s=lease_s,
            forked_from=forked_from,
            now=time.time(),
        )
        await self._insert_runs(conn, [(info, events)])
        return info

    async def create_run(
        self, run: NewRun, events: Sequence[NewEvent], *, owner: str | None, lease_s: float
    ) -> RunInfo:
        int64("depth", run.depth)
        seconds("lease_s", lease_s)
        async with self._ordered(run.run_id):
            return await self._creates.put((run, events, owner, lease_s))

    async def _create_many(self, items: list[_NewRunItem]) -> list[Any]:
        """Create runs in one transaction; an id that is taken is refused alone."""

        async def op(conn: AsyncConnection[Any]) -> list[Any]:
            return await self._create_in(conn, items)

        return await self._tx(op, "write to", pipeline=True)

    async def _create_in(self, conn: AsyncConnection[Any], items: list[_NewRunItem]) -> list[Any]:
        ids = [run.run_id for run, *_ in items]
        cursor = await conn.execute("SELECT run_id FROM runs WHERE run_id = ANY(%s)", (ids,))
        taken = {row[0] for row in await cursor.fetchall()}
        results: list[Any] = []
        rows: list[tuple[RunInfo, Sequence[NewEvent]]] = []
        now = time.time()
        for run, events, owner, lease_s in items:
            if run.run_id in taken:
                results.append(ConfigError(f"a run with id {run.run_id!r} already exists"))
                continue
            taken.add(run.run_id)
            info = new_run_info(
                run, 1, len(events), owner=owner, lease_s=lease_s, forked_from=None, now=now
            )
            rows.append((info, events))
            results.append(info)
        if rows:
            await self._insert_runs(conn, rows)
        return results

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

        async def op(conn: AsyncConnection[Any]) -> RunInfo:
            source = await self._get_run(conn, source_id)
            if not 1 <= at_seq <= source.last_seq:
                raise ConfigError(
                    f"run {source_id} has events 1..{source.last_seq}; cannot fork at {at_seq}"
                )
            return await self._new_run(conn, run, events, at_seq + 1, owner, lease_s, source_id)

        async with self._ordered(run.run_id):
            return await self._tx(op, "write to")

    async def commit(self, commit: Commit) -> Committed:
        int64("expected_seq", commit.expected_seq)
        int64("consumed", commit.consumed)
        int64("the lease epoch", commit.lease.epoch)
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

        async def op(conn: AsyncConnection[Any]) -> Committed:
            return await self._commit(conn, commit, wait)

        async with self._ordered(commit.run_id):
            if _is_plain(commit):
                return await self._plain.put(commit)
            return await self._tx(op, "write to")

    async def _append_many(self, commits: list[Commit]) -> list[Any]:
        """Write plain commits in one statement (``_APPEND``); a commit it did not write
        is checked again in a transaction of its own, which says why it is refused (or
        writes it, if its run changed meanwhile so that it fits)."""
        ids = [c.run_id for c in commits]
        if len(set(ids)) < len(ids):  # (a run's writes are ordered: never in one batch)
            return await self._tx(partial(self._append_checked, commits), "write to")
        rows = [
            (c.run_id, seq, e.type, e.version, e.ts, e.body)
            for c in commits
            for seq, e in enumerate(c.events, c.expected_seq + 1)
        ]
        blobs = {d: data for c in commits for e in c.events for d, data in e.blobs.items()}
        digests = sorted(blobs)  # in one order everywhere: concurrent inserts cannot deadlock
        columns = [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * 6
        params = {
            "ids": ids,
            "expected": [c.expected_seq for c in commits],
            "owners": [c.lease.owner for c in commits],
            "epochs": [c.lease.epoch for c in commits],
            "statuses": [c.status for c in commits],
            "releases": [c.release for c in commits],
            "counts": [len(c.events) for c in commits],
            "now": time.time(),
            **dict(zip(_EVENT_COLUMNS, columns, strict=True)),
            "digests": digests,
            "data": [blobs[d] for d in digests],
        }

        async def op(conn: AsyncConnection[Any]) -> dict[str, int]:
            psycopg = import_psycopg()
            try:
                cursor = await conn.execute(_APPEND, params)
            except psycopg.errors.UniqueViolation as error:
                raise StoreCorrupt(
                    "a log already holds events past where its run's row says it ends "
                    "(the store is damaged)"
                ) from error
            return {row[0]: row[1] for row in await cursor.fetchall()}

        written = await self._tx(op, "write to", transaction=False)
        results: list[Any] = [
            Committed(c.expected_seq + len(c.events), written[c.run_id])
            if c.run_id in written
            else None
            for c in commits
        ]
        left = [c for c, result in zip(commits, results, strict=True) if result is None]
        if left:
            again = iter(await self._tx(partial(self._append_checked, left), "write to"))
            results = [next(again) if result is None else result for result in results]
        return results

    async def _append_checked(
        self, commits: Sequence[Commit], conn: AsyncConnection[Any]
    ) -> list[Any]:
        """Write plain commits in one transaction: lock their rows (in one order), check
        each in turn against them, then insert every event in one statement and update
        every row in another. A refused commit is reported, the others are written."""
        cursor = await conn.execute(_HEADS, (sorted({c.run_id for c in commits}),))
        heads = {row[0]: list(row[1:]) for row in await cursor.fetchall()}
        results: list[Any] = []
        rows: list[tuple[Any, ...]] = []
        blobs: dict[str, bytes] = {}
        written: dict[str, list[Any]] = {}
        for c in commits:
            head = heads.get(c.run_id)
            if head is None:
                results.append(RunNotFound(c.run_id))
                continue
            status, last, owner, epoch, inbox_last = head
            refusal = refused(c, status, last, owner, epoch)
            if refusal:
                results.append(refusal)
                continue
            for e in c.events:
                last += 1
                rows.append((c.run_id, last, e.type, e.version, e.ts, e.body))
                blobs.update(e.blobs)
            head[:3] = c.status or status, last, None if c.release else owner
            written[c.run_id] = head
            results.append(Committed(last, inbox_last))
        await self._insert_rows(
            conn, rows, "a log already holds events past where its run's row says it ends"
        )
        await self._insert_blobs(conn, blobs)
        if written:
            ids = list(written)
            await conn.execute(
                _APPEND_MANY,
                (
                    time.time(),
                    ids,
                    [written[i][1] for i in ids],
                    [written[i][0] for i in ids],
                    [written[i][2] for i in ids],
                ),
            )
        return results

    async def _commit(
        self, conn: AsyncConnection[Any], c: Commit, wait_text: str | None
    ) -> Committed:
        row = await (await conn.execute(_HEAD, (c.run_id,))).fetchone()
        if row is None:
            raise RunNotFound(c.run_id)
        status, last, owner, epoch, inbox_last = row
        refusal = refused(c, status, last, owner, epoch)
        if refusal:
            raise refusal
        await self._check_new(conn, [child for child, _ in c.children])
        now = time.time()
        await self._insert_events(conn, c.run_id, last + 1, c.events)
        last += len(c.events)
        status = c.status or status
        if c.consumed:
            await conn.execute(
                "DELETE FROM inbox WHERE run_id = %s AND id <= %s", (c.run_id, c.consumed)
            )
        wait, wake_at = (c.wait, c.wait.wake_at) if c.wait and status == "waiting" else (None, None)
        ready = status == "waiting" and wait_is_over(wait, await self._arrived(conn, c.run_id), now)
        if ready:
            wake_at = now
        values = (
            last,
            now,
            status,
            wait_text if wait else None,
            wake_at,
            c.release,
            c.release,
            c.run_id,
        )
        await conn.execute(_SET_RUN, values)
        if c.children:
            lease_owner = c.lease.owner if c.children_lease_s is not None else None
            await self._insert_runs(
                conn,
                [
                    (
                        new_run_info(
                            child,
                            1,
                            len(events),
                            owner=lease_owner,
                            lease_s=c.children_lease_s or 0.0,
                            forked_from=None,
                            now=now,
                        ),
                        events,
                    )
                    for child, events in c.children
                ],
            )
        for delivery in c.deliveries:
            await self._deliver(conn, delivery, now, skip_ended=True)
        return Committed(last, inbox_last, ready)

    async def _arrived(self, conn: AsyncConnection[Any], run_id: str) -> set[str]:
        cursor = await conn.execute("SELECT key FROM inbox WHERE run_id = %s", (run_id,))
        return {row[0] for row in await cursor.fetchall()}

    async def _deliver(
        self,
        conn: AsyncConnection[Any],
        d: Delivery,
        now: float,
        *,
        skip_ended: bool = False,
        unique: bool = False,
    ) -> int | None:
        """Put ``d`` in its run's inbox (the run's row locked first, so that its items are
        numbered in the order they arrive); wake the run if that ends its wait."""
        cursor = await conn.execute(
            "SELECT status, wait FROM runs WHERE run_id = %s FOR UPDATE", (d.run_id,)
        )
        row = await cursor.fetchone()
        if row is None:
            if skip_ended:
                return None
            raise RunNotFound(d.run_id)
        status, wait_text = row
        if status in TERMINAL_STATUSES:
            if skip_ended:
                return None
            raise RunEnded(d.run_id, status)
        arrived = await self._arrived(conn, d.run_id)
        if unique and d.key in arrived:
            return None
        e = d.event
        cursor = await conn.execute(
            "INSERT INTO inbox (run_id, key, type, version, ts, body) "
            "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            (d.run_id, d.key, e.type, e.version, e.ts, e.body),
        )
        item = await cursor.fetchone()
        assert item is not None
        item_id: int = item[0]
        await self._insert_blobs(conn, e.blobs)
        arrived.add(d.key)
        wait: Wait | None = decode_wait(d.run_id, wait_text)
        woke = status == "waiting" and wait_is_over(wait, arrived, now)
        await conn.execute(
            "UPDATE runs SET inbox_last = %s, wake_at = CASE WHEN %s THEN %s ELSE wake_at END "
            "WHERE run_id = %s",
            (item_id, woke, now, d.run_id),
        )
        return item_id

    async def deliver(self, delivery: Delivery, *, unique: bool = False) -> int | None:
        async def op(conn: AsyncConnection[Any]) -> int | None:
            return await self._deliver(conn, delivery, time.time(), unique=unique)

        async with self._ordered(delivery.run_id):
            return await self._tx(op, "write to")

    async def put_snapshot(
        self, run_id: str, seq: int, body: bytes, blobs: dict[str, bytes]
    ) -> None:
        int64("seq", seq)

        async def op(conn: AsyncConnection[Any]) -> None:
            await self._insert_blobs(conn, blobs)
            await conn.execute(
                "INSERT INTO snapshots (run_id, seq, body) VALUES (%s, %s, %s) "
                "ON CONFLICT (run_id) DO UPDATE SET seq = excluded.seq, body = excluded.body",
                (run_id, seq, body),
            )

        await self._tx(op, "write to")

    # -- tenant budgets ------------------------------------------------------------------

    @staticmethod
    async def _tenant(conn: AsyncConnection[Any], tenant: str) -> TenantBudget | None:
        """The tenant's budget, its row locked until the transaction ends."""
        cursor = await conn.execute(
            "SELECT budget FROM tenant_budgets WHERE tenant = %s FOR UPDATE", (tenant,)
        )
        row = await cursor.fetchone()
        return None if row is None else msgspec.json.decode(row[0], type=TenantBudget)

    @staticmethod
    async def _put_tenant(conn: AsyncConnection[Any], budget: TenantBudget) -> TenantBudget:
        await conn.execute(
            "INSERT INTO tenant_budgets (tenant, budget) VALUES (%s, %s) "
            "ON CONFLICT (tenant) DO UPDATE SET budget = excluded.budget",
            (budget.tenant, msgspec.json.encode(budget).decode()),
        )
        return budget

    async def set_tenant_budget(
        self, tenant: str, limits: Mapping[str, float], run_share: float
    ) -> TenantBudget:
        async def op(conn: AsyncConnection[Any]) -> TenantBudget:
            await conn.execute(
                "INSERT INTO tenant_budgets (tenant, budget) VALUES (%s, %s) "
                "ON CONFLICT DO NOTHING",
                (tenant, msgspec.json.encode(TenantBudget(tenant, {})).decode()),
            )
            known = await self._tenant(conn, tenant) or TenantBudget(tenant, {})
            budget = msgspec.structs.replace(known, limits=dict(limits), run_share=run_share)
            return await self._put_tenant(conn, budget)

        return await self._tx(op, "write to")

    async def topup_tenant(self, tenant: str, amounts: Mapping[str, float]) -> TenantBudget:
        async def op(conn: AsyncConnection[Any]) -> TenantBudget:
            budget = await self._tenant(conn, tenant)
            if budget is None:
                raise ConfigError(f"tenant {tenant!r} has no budget to top up: set one first")
            limits = {k: v + amounts.get(k, 0.0) for k, v in budget.limits.items()}
            return await self._put_tenant(conn, msgspec.structs.replace(budget, limits=limits))

        return await self._tx(op, "write to")

    async def get_tenant_budget(self, tenant: str) -> TenantBudget | None:
        async def op(conn: AsyncConnection[Any]) -> TenantBudget | None:
            cursor = await conn.execute(
                "SELECT budget FROM tenant_budgets WHERE tenant = %s", (tenant,)
            )
            row = await cursor.fetchone()
            return None if row is None else msgspec.json.decode(row[0], type=TenantBudget)

        return await self._tx(op, "read")

    async def hold_tenant_budget(self, tenant: str, run_id: str) -> dict[str, float] | None:
        async def op(conn: AsyncConnection[Any]) -> dict[str, float] | None:
            budget = await self._tenant(conn, tenant)
            if budget is None:
                return None
            grant = budget.grant()
            held = {**budget.held, run_id: grant}
            await self._put_tenant(conn, msgspec.structs.replace(budget, held=held))
            return grant

        return await self._tx(op, "write to")

    async def settle_tenant_budget(
        self, tenant: str, run_id: str, spent: Mapping[str, float]
    ) -> bool:
        async def op(conn: AsyncConnection[Any]) -> bool:
            budget = await self._tenant(conn, tenant)
            if budget is None or run_id not in budget.held:
                return False
            held = {k: v for k, v in budget.held.items() if k != run_id}
            total = {k: budget.spent.get(k, 0.0) + spent.get(k, 0.0) for k in budget.limits}
            await self._put_tenant(conn, msgspec.structs.replace(budget, held=held, spent=total))
            return True

        return await self._tx(op, "write to")

    # -- the vault -----------------------------------------------------------------------

    async def put_vault(self, vault_id: str, entries: Mapping[str, bytes]) -> list[str]:
        items = list(entries.items())

        async def op(conn: AsyncConnection[Any]) -> list[str]:
            taken = []
            for name, secret in items:
                cursor = await conn.execute(
                    "INSERT INTO vault (vault_id, name, secret) VALUES (%s, %s, %s) "
                    "ON CONFLICT DO NOTHING",
                    (vault_id, name, secret),
                )
                if cursor.rowcount == 0:
                    taken.append(name)
            return taken

        return await self._tx(op, "write to")

    async def get_vault(self, vault_id: str) -> dict[str, bytes]:
        async def op(conn: AsyncConnection[Any]) -> dict[str, bytes]:
            cursor = await conn.execute(
                "SELECT name, secret FROM vault WHERE vault_id = %s", (vault_id,)
            )
            return {name: bytes(secret) for name, secret in await cursor.fetchall()}

        return await self._tx(op, "read")

    # -- blackboards -------------------------------------------------------------------

    async def board_entries(self, scope: str) -> dict[str, BoardEntry]:
        async def op(conn: AsyncConnection[Any]) -> dict[str, BoardEntry]:
            cursor = await conn.execute(
                "SELECT key, value, version, writer, ts FROM board WHERE scope = %s", (scope,)
            )
            rows = await cursor.fetchall()
            return {r[0]: BoardEntry(r[0], bytes(r[1]), r[2], r[3], r[4]) for r in rows}

        return await self._tx(op, "read")

    async def board_put(
        self, scope: str, key: str, value: bytes, writer: str, expected: int | None, ts: float
    ) -> tuple[bool, int]:
        async def op(conn: AsyncConnection[Any]) -> tuple[bool, int]:
            # a new key is inserted, or the row is locked: no other writer gets between
            # reading its version and writing the next
            cursor = await conn.execute(
                "INSERT INTO board (scope, key, value, version, writer, ts) "
                "VALUES (%s, %s, %s, 0, %s, %s) ON CONFLICT DO NOTHING",
                (scope, key, value, writer, ts),
            )
            cursor = await conn.execute(
                "SELECT version FROM board WHERE scope = %s AND key = %s FOR UPDATE",
                (scope, key),
            )
            row = await cursor.fetchone()
            current = row[0] if row else 0
            if expected is not None and expected != current:
                if current == 0:  # undo the placeholder row this transaction inserted
                    await conn.execute(
                        "DELETE FROM board WHERE scope = %s AND key = %s AND version = 0",
                        (scope, key),
                    )
                return False, current
            await conn.execute(
                "UPDATE board SET value = %s, version = %s, writer = %s, ts = %s "
                "WHERE scope = %s AND key = %s",
                (value, current + 1, writer, ts, scope, key),
            )
            return True, current + 1

        return await self._tx(op, "write to")

    async def board_watch(self, scope: str, key: str, run_id: str) -> None:
        async def op(conn: AsyncConnection[Any]) -> None:
            await conn.execute(
                "INSERT INTO board_watch (scope, key, run_id) VALUES (%s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                (scope, key, run_id),
            )

        await self._tx(op, "write to")

    async def board_watchers(self, scope: str, key: str) -> list[str]:
        async def op(conn: AsyncConnection[Any]) -> list[str]:
            cursor = await conn.execute(
                "SELECT run_id FROM board_watch WHERE scope = %s AND key = %s ORDER BY run_id",
                (scope, key),
            )
            return [r[0] for r in await cursor.fetchall()]

        return await self._tx(op, "read")

    # -- leases ------------------------------------------------------------------------

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

        async def op(conn: AsyncConnection[Any]) -> Claim | None:
            info = await self._get_run(conn, run_id, lock=True)
            check_claimable(info, revive)
            now = time.time()
            if not lease_is_free(info, owner, now, steal_from):
                return None
            took_over = info.lease_owner not in (None, owner)
            taken = msgspec.structs.replace(
                info,
                lease_owner=owner,
                lease_expires_at=now + lease_s,
                lease_epoch=info.lease_epoch + 1,
                recoveries=info.recoveries + took_over,
            )
            await conn.execute(
                "UPDATE runs SET lease_owner = %s, lease_expires_at = %s, lease_epoch = %s, "
                "recoveries = %s WHERE run_id = %s",
                (owner, taken.lease_expires_at, taken.lease_epoch, taken.recoveries, run_id),
            )
            return Claim(Lease(owner, taken.lease_epoch), taken, took_over)

        async with self._ordered(run_id):
            return await self._tx(op, "write to")

    async def claim_runs(
        self,
        owner: str,
        lease_s: float,
        limit: int,
        filter: ClaimFilter = ANY_READY,
    ) -> list[Claim]:
        check_limit(int64("limit", limit))
        seconds("lease_s", lease_s)
        if limit == 0:
            return []
        agents = filter.agents

        def params(now: float) -> dict[str, Any]:
            return {
                "now": now,
                "expires": now + lease_s,
                "orphans": filter.orphans,
                "any_agent": agents is None,
                "agents": sorted(agents) if agents is not None else [],
                "tenants": sorted(filter.exclude_tenants),
                "full_agents": [],
                "limit": limit,
                "owner": owner,
            }

        def claims(rows: list[Any]) -> list[Claim]:
            rows.sort(key=lambda row: (-row[20], row[4], row[-1]))
            return [
                Claim(
                    Lease(owner, row[15]),
                    run_info(row[:21]),
                    took_over=row[21] not in (None, owner),
                )
                for row in rows
            ]

        async def op(conn: AsyncConnection[Any]) -> list[Claim]:
            cursor = await conn.execute(_CLAIM, params(time.time()))
            return claims(await cursor.fetchall())

        async def op_limited(conn: AsyncConnection[Any]) -> list[Claim]:
            # claimers with limits queue on one lock per schema, so that each counts the
            # leases the others took before it: the count and the claim are one step
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", ("autonomic-claims:" + self.schema,)
            )
            now = time.time()
            leased = await (await conn.execute(_LEASED, (now,))).fetchall()
            full_agents, full_tenants = full_under_limits(leased, filter)
            values = params(now)
            values["full_agents"] = full_agents
            values["tenants"] = sorted({*filter.exclude_tenants, *full_tenants})
            ready = [
                run_info(row) for row in await (await conn.execute(_CANDIDATES, values)).fetchall()
            ]
            picked = within_limits(ready, leased, limit, filter)
            if not picked:
                return []
            values["ids"] = [info.run_id for info in picked]
            return claims(await (await conn.execute(_CLAIM_PICKED, values)).fetchall())

        if filter.limited:
            return await self._tx(op_limited, "write to")
        return await self._tx(op, "write to", transaction=False)

    async def renew_leases(
        self, leases: Sequence[tuple[str, Lease]], lease_s: float
    ) -> tuple[set[str], dict[str, int]]:
        seconds("lease_s", lease_s)
        for _, lease in leases:
            int64("the lease epoch", lease.epoch)
        if not leases:
            return set(), {}
        leases = sorted(leases, key=lambda held: held[0])  # rows locked in one order

        async def op(conn: AsyncConnection[Any]) -> tuple[set[str], dict[str, int]]:
            cursor = await conn.execute(
                "UPDATE runs SET lease_expires_at = %s "
                "FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS held(run_id, owner, epoch) "
                "WHERE runs.run_id = held.run_id AND runs.lease_owner = held.owner "
                "AND runs.lease_epoch = held.epoch RETURNING runs.run_id, runs.inbox_last",
                (
                    time.time() + lease_s,
                    [run_id for run_id, _ in leases],
                    [lease.owner for _, lease in leases],
                    [lease.epoch for _, lease in leases],
                ),
            )
            mail: dict[str, int] = {row[0]: row[1] for row in await cursor.fetchall()}
            return {run_id for run_id, _ in leases} - mail.keys(), mail

        return await self._tx(op, "write to", transaction=False)

    async def release_lease(
        self, run_id: str, lease: Lease, *, failed_start: bool = False, retry_at: float = 0.0
    ) -> None:
        int64("the lease epoch", lease.epoch)
        seconds("retry_at", retry_at)

        async def op(conn: AsyncConnection[Any]) -> None:
            await conn.execute(
                "UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL, "
                "recoveries = recoveries + %s, wake_at = CASE WHEN %s THEN %s ELSE wake_at END "
                "WHERE run_id = %s AND lease_owner = %s AND lease_epoch = %s",
                (int(failed_start), failed_start, retry_at, run_id, lease.owner, lease.epoch),
            )

        async with self._ordered(run_id):
            await self._tx(op, "write to", transaction=False)

    # -- reading -----------------------------------------------------------------------

    async def _read(self, op: Callable[[AsyncConnection[Any]], Awaitable[T]]) -> T:
        """Run reads in one transaction that sees one state of the database (pipelined:
        BEGIN and SET TRANSACTION go with the first read, COMMIT with nothing to wait
        for, so that a read of two statements costs two round trips, not five)."""

        async def snapshot(conn: AsyncConnection[Any]) -> T:
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            return await op(conn)

        return await self._tx(snapshot, "read", pipeline=True)

    async def _chain(self, conn: AsyncConnection[Any], run_id: str) -> list[RunInfo]:
        """The run and its fork ancestors, the run first."""
        chain = [await self._get_run(conn, run_id)]
        while (source := chain[-1].forked_from) is not None:
            if any(info.run_id == source for info in chain):
                raise StoreCorrupt(f"run {run_id}: its fork ancestry loops through {source}")
            try:
                chain.append(await self._get_run(conn, source))
            except RunNotFound:
                raise StoreCorrupt(
                    f"run {chain[-1].run_id} is forked from {source}, which is not in the store"
                ) from None
        return chain

    async def read(
        self, run_id: str, after_seq: int = 0, limit: int | None = None
    ) -> list[EventRecord]:
        int64("after_seq", after_seq)
        if limit is not None:
            check_limit(int64("limit", limit))

        async def op(conn: AsyncConnection[Any]) -> list[EventRecord]:
            records: list[EventRecord] = []
            chain = await self._chain(conn, run_id)
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
                cursor = await conn.execute(
                    "SELECT seq, type, version, ts, body FROM events "
                    "WHERE run_id = %s AND seq > %s AND seq <= %s ORDER BY seq LIMIT %s",
                    (rid, start, 2**62 if own else high, want + 1 if own else want),
                )
                rows = await cursor.fetchall()
                check_rows(rid, rows, start, want, high, last_seqs[rid])
                records.extend(_records(rows[:want]))
            return records

        records = await self._reads.put((run_id, after_seq, limit))
        return await self._read(op) if records is None else records

    async def _read_many(self, items: list[_ReadItem]) -> list[Any]:
        """The logs of many runs in one statement (``_READ_MANY``); None for a fork."""
        values = {
            "ids": [run_id for run_id, _, _ in items],
            "after": [after for _, after, _ in items],
            "limits": [2**62 if limit is None else limit for _, _, limit in items],
        }

        async def op(conn: AsyncConnection[Any]) -> list[Any]:
            return await (await conn.execute(_READ_MANY, values)).fetchall()

        found: dict[int, list[Any]] = {}
        for row in await self._tx(op, "read", transaction=False):
            found.setdefault(row[0], []).append(row)
        results: list[Any] = []
        for i, (run_id, after, limit) in enumerate(items, 1):
            rows = found.get(i)
            if rows is None:
                results.append(RunNotFound(run_id))
                continue
            last_seq, forked_from = rows[0][1], rows[0][2]
            want = last_seq - after if limit is None else min(last_seq - after, limit)
            events = [row[3:] for row in rows if row[3] is not None]
            try:
                if forked_from is not None:  # its log goes on from its source's
                    results.append(None)
                elif want <= 0:
                    results.append([])
                else:
                    check_rows(run_id, events, after, want, last_seq, last_seq)
                    results.append(_records(events[:want]))
            except StoreCorrupt as e:
                results.append(e)
        return results

    async def get_blobs(self, digests: Iterable[str]) -> dict[str, bytes]:
        wanted = list(dict.fromkeys(digests))
        if not wanted:
            return {}

        async def op(conn: AsyncConnection[Any]) -> dict[str, bytes]:
            cursor = await conn.execute(
                "SELECT digest, data FROM blobs WHERE digest = ANY(%s)", (wanted,)
            )
            return {row[0]: bytes(row[1]) for row in await cursor.fetchall()}

        return await self._tx(op, "read", transaction=False)

    async def latest_snapshot(self, run_id: str) -> tuple[int, bytes] | None:
        async def op(conn: AsyncConnection[Any]) -> tuple[int, bytes] | None:
            cursor = await conn.execute(
                "SELECT seq, body FROM snapshots WHERE run_id = %s", (run_id,)
            )
            row = await cursor.fetchone()
            return (row[0], bytes(row[1])) if row else None

        return await self._tx(op, "read", transaction=False)

    async def get_run(self, run_id: str) -> RunInfo:
        async def op(conn: AsyncConnection[Any]) -> RunInfo:
            return await self._get_run(conn, run_id)

        return await self._tx(op, "read", transaction=False)

    async def _runs(self, sql: str, params: Sequence[Any]) -> list[RunInfo]:
        async def op(conn: AsyncConnection[Any]) -> list[RunInfo]:
            cursor = await conn.execute(sql, params)
            return [run_info(row) for row in await cursor.fetchall()]

        return await self._tx(op, "read", transaction=False)

    async def find_runs(self, prefix: str, limit: int = 2) -> list[RunInfo]:
        check_limit(int64("limit", limit))
        return await self._runs(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE starts_with(run_id, %s) "
            "ORDER BY created_at, n LIMIT %s",
            (prefix, limit),
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
        where = [f"{column} = %s" for column, value in equal if value is not None]
        params: list[object] = [value for _, value in equal if value is not None]
        if since is not None:
            where.append("created_at >= %s")
            params.append(since)
        if before is not None:
            where.append("(created_at, run_id) < (%s, %s)")
            params += [before[0], before[1]]
        return await self._runs(
            f"SELECT {RUN_COLUMNS} FROM runs "
            + (f"WHERE {' AND '.join(where)} " if where else "")
            + "ORDER BY created_at DESC, run_id DESC LIMIT %s",
            (*params, limit),
        )

    # -- the inbox ---------------------------------------------------------------------

    async def read_inbox(self, run_id: str, after_id: int = 0) -> list[InboxItem]:
        int64("after_id", after_id)

        async def op(conn: AsyncConnection[Any]) -> list[InboxItem]:
            # one statement (one round trip): the run's row, joined to its items if any
            cursor = await conn.execute(
                "SELECT i.id, i.key, i.type, i.version, i.ts, i.body FROM runs r "
                "LEFT JOIN inbox i ON i.run_id = r.run_id AND i.id > %s "
                "WHERE r.run_id = %s ORDER BY i.id",
                (after_id, run_id),
            )
            rows = await cursor.fetchall()
            if not rows:
                raise RunNotFound(run_id)
            return [
                InboxItem(row[0], row[1], EventRecord(0, row[2], row[3], row[4], bytes(row[5])))
                for row in rows
                if row[0] is not None
            ]

        return await self._tx(op, "read", transaction=False)
