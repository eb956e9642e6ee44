"""Opening SQLite files: new ones, ones written by the previous release (upgraded in place),
and files that are not stores we can read."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from pathlib import Path

import pytest

from autonomic.errors import StoreCorrupt, StoreError
from autonomic.events import NewEvent
from autonomic.store._sqlite_schema import MIGRATIONS, SCHEMA_VERSION
from autonomic.store.base import ClaimFilter, Commit, Delivery, NewRun
from autonomic.store.sqlite import SQLiteStore

# The schema as the first release (schema version 1) wrote it, copied here on purpose:
# the migrations must keep upgrading exactly this, whatever becomes of them.
V1_SCHEMA = """
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
INSERT INTO autonomic_meta VALUES ('schema_version', '1');
"""


def write_v1_store(path: Path) -> None:
    """A store as the previous release left it: a finished run, a fork of it, a crashed run."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA page_size = 1024")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(V1_SCHEMA)
    now = time.time()
    runs = [
        ("done", "a", "first goal", "completed", now - 30, now - 20, 3, None, None, None, None),
        ("fork", "a", "first goal", "running", now - 10, now - 10, 3, None, "done", 2, None),
        ("crashed", "b", "other goal", "running", now - 5, now - 5, 1, None, None, None, "gone"),
    ]
    conn.executemany(
        "INSERT INTO runs (run_id, agent, goal, status, created_at, updated_at, last_seq, "
        "parent_run_id, forked_from, forked_at, lease_owner, lease_expires_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(*r[:10], r[10], now - 1 if r[10] else None) for r in runs],
    )
    events = [
        ("done", 1, "RunStarted", b'{"goal":"first goal"}'),
        ("done", 2, "Thought", b'{"rationale":"$blob:d1"}'),
        ("done", 3, "RunCompleted", b'{"answer":"42"}'),
        ("fork", 3, "Thought", b'{"rationale":"forked"}'),
        ("crashed", 1, "RunStarted", b'{"goal":"other goal"}'),
    ]
    conn.executemany(
        "INSERT INTO events (run_id, seq, type, version, ts, body) VALUES (?, ?, ?, 1, ?, ?)",
        [(rid, seq, kind, now, body) for rid, seq, kind, body in events],
    )
    conn.execute("INSERT INTO blobs VALUES ('d1', ?)", (b"a long thought",))
    conn.execute("INSERT INTO snapshots VALUES ('done', 3, ?)", (b"snapshot",))
    conn.commit()
    conn.close()


def schema_of(path: Path) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name"
        )
        return [(kind, name, " ".join(sql.split())) for kind, name, sql in rows]
    finally:
        conn.close()


def version_of(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT value FROM autonomic_meta").fetchone()[0]  # type: ignore[no-any-return]
    finally:
        conn.close()


def event(text: str) -> NewEvent:
    return NewEvent("Thought", 1, time.time(), text.encode())


async def test_a_store_of_the_previous_release_is_upgraded_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    write_v1_store(path)
    async with SQLiteStore(f"sqlite:///{path}") as store:
        done = await store.get_run("done")
        assert (done.status, done.last_seq, done.root_run_id, done.depth) == (
            "completed",
            3,
            "done",
            0,
        )
        assert (done.lease_epoch, done.wait, done.wake_at, done.inbox_last) == (0, None, None, 0)
        records = await store.read("done")
        assert [(r.seq, r.type) for r in records] == [
            (1, "RunStarted"),
            (2, "Thought"),
            (3, "RunCompleted"),
        ]
        fork = await store.read("fork", after_seq=1)
        assert [r.body for r in fork] == [b'{"rationale":"$blob:d1"}', b'{"rationale":"forked"}']
        assert await store.get_blobs(["d1"]) == {"d1": b"a long thought"}
        assert await store.latest_snapshot("done") == (3, b"snapshot")
        # and the new features work on the old runs
        await store.deliver(Delivery("fork", "signal:go", event("go")))
        claims = await store.claim_runs("me", 30, 10, ClaimFilter(orphans=True))
        assert {c.info.run_id for c in claims} == {"fork", "crashed"}
        crashed = next(c for c in claims if c.info.run_id == "crashed")
        assert crashed.took_over and crashed.lease.epoch == 1
        await store.commit(Commit("crashed", 1, [event("resumed")], crashed.lease))
        assert [r.seq for r in await store.read("crashed")] == [1, 2]
    assert version_of(path) == str(SCHEMA_VERSION)
    fresh = tmp_path / "new.db"
    async with SQLiteStore(f"sqlite:///{fresh}"):
        pass
    assert schema_of(path) == schema_of(fresh)


async def test_processes_opening_an_old_store_at_once_upgrade_it_once(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    write_v1_store(path)
    stores = [SQLiteStore(f"sqlite:///{path}") for _ in range(3)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        assert [(await s.get_run("done")).root_run_id for s in stores] == ["done"] * 3
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    assert version_of(path) == str(SCHEMA_VERSION)


async def test_an_upgrade_that_fails_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    write_v1_store(path)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE inbox (unexpected TEXT)")  # the upgrade's last step will fail
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=f"could not open {path}: .*inbox already exists"):
        await SQLiteStore(f"sqlite:///{path}").open()
    assert version_of(path) == "1"
    conn = sqlite3.connect(path)
    columns = [row[1] for row in conn.execute("PRAGMA table_info(runs)")]
    conn.close()
    assert "lease_epoch" not in columns and len(columns) == 13


def test_migrations_are_numbered_from_one() -> None:
    assert SCHEMA_VERSION == len(MIGRATIONS) == 6


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "9",
            "was written by a newer autonomic (schema version 9; this one reads up to "
            f"{SCHEMA_VERSION}): upgrade autonomic to open it",
        ),
        ("two", "has an unknown schema version ('two')"),
        ("0", "has an unknown schema version ('0')"),
    ],
    ids=["newer", "garbled", "zero"],
)
async def test_a_schema_version_we_cannot_read_is_refused(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "runs.db"
    write_v1_store(path)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE autonomic_meta SET value = ?", (content,))
    conn.commit()
    conn.close()
    with pytest.raises(StoreCorrupt, match="^" + re.escape(f"{path} {message}")):
        await SQLiteStore(f"sqlite:///{path}").open()


async def test_files_that_are_not_autonomic_stores_are_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a database at all" * 100)
    with pytest.raises(StoreCorrupt, match=f"{text} is not an autonomic store \\(not a SQLite"):
        await SQLiteStore(f"sqlite:///{text}").open()
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE people (name TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreCorrupt, match=f"{other} is a SQLite database but not an autonomic"):
        await SQLiteStore(f"sqlite:///{other}").open()
    with pytest.raises(StoreCorrupt, match="is a directory"):
        await SQLiteStore(f"sqlite:///{tmp_path}").open()
    with pytest.raises(StoreError, match="no store at"):
        await SQLiteStore(f"sqlite:///{tmp_path / 'missing.db'}", create=False).open()


async def test_a_new_store_is_created_at_the_latest_version(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    async with SQLiteStore(f"sqlite:///{path}") as store:
        await store.create_run(NewRun("r", "a", "g"), [event("hi")], owner=None, lease_s=1)
    assert version_of(path) == str(SCHEMA_VERSION)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA page_size").fetchone() == (1024,)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()
