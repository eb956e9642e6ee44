"""The SQLite store's schema as numbered migrations, applied in order when a store opens.

``MIGRATIONS[n - 1]`` takes a store from schema version ``n - 1`` to ``n``. A new file goes
through every migration from the first, so an upgraded file and a new one are built by the
same statements. A PostgreSQL store keeps the same numbers for the same changes.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from autonomic.errors import StoreCorrupt

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "ensure_schema"]

MIGRATIONS: tuple[str, ...] = (
    # 1: the first release: runs, their events (a rowid table, so that concurrent runs
    # append at its end), content-addressed blobs, one snapshot per run
    """
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
    CREATE TABLE snapshots (run_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, body BLOB NOT NULL)
    """,
    # 2: lineage and tenants, fencing epochs, waits and timers, and the inbox. Inbox ids
    # never come back (AUTOINCREMENT): a run's inbox_last must only ever grow.
    """
    ALTER TABLE runs ADD COLUMN root_run_id TEXT;
    UPDATE runs SET root_run_id = run_id;
    ALTER TABLE runs ADD COLUMN depth INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN tenant TEXT;
    ALTER TABLE runs ADD COLUMN lease_epoch INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN wake_at REAL;
    ALTER TABLE runs ADD COLUMN wait TEXT;
    ALTER TABLE runs ADD COLUMN inbox_last INTEGER NOT NULL DEFAULT 0;
    DROP INDEX runs_by_status;
    CREATE INDEX runs_to_claim ON runs (status, wake_at);
    CREATE INDEX runs_by_parent ON runs (parent_run_id, created_at);
    CREATE TABLE inbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT NOT NULL,
        key TEXT NOT NULL,
        type TEXT NOT NULL,
        version INTEGER NOT NULL,
        ts REAL NOT NULL,
        body BLOB NOT NULL
    );
    CREATE INDEX inbox_by_run ON inbox (run_id)
    """,
    # 3: the PII vault: encrypted values by placeholder, per root run
    """
    CREATE TABLE vault (
        vault_id TEXT NOT NULL,
        name TEXT NOT NULL,
        secret BLOB NOT NULL,
        PRIMARY KEY (vault_id, name)
    ) WITHOUT ROWID
    """,
    # 4: blackboards: versioned JSON values by key per root run, and who watches a key
    """
    CREATE TABLE board (
        scope TEXT NOT NULL,
        key TEXT NOT NULL,
        value BLOB NOT NULL,
        version INTEGER NOT NULL,
        writer TEXT NOT NULL,
        ts REAL NOT NULL,
        PRIMARY KEY (scope, key)
    ) WITHOUT ROWID;
    CREATE TABLE board_watch (
        scope TEXT NOT NULL,
        key TEXT NOT NULL,
        run_id TEXT NOT NULL,
        PRIMARY KEY (scope, key, run_id)
    ) WITHOUT ROWID
    """,
    # 5: per-tenant budgets: limits, what ended runs spent and unfinished ones hold (JSON)
    """
    CREATE TABLE tenant_budgets (
        tenant TEXT PRIMARY KEY,
        budget TEXT NOT NULL
    ) WITHOUT ROWID
    """,
    # 6: run priorities: claims take the highest first
    """
    ALTER TABLE runs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)


def ensure_schema(conn: sqlite3.Connection, path: str) -> None:
    """Create or upgrade the schema (in one transaction), or refuse a file we cannot read.

    A store already at this version is not written to, so a read-only one still opens.
    """
    if _version(conn, path) == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        # read again under the write lock: another process may have just upgraded it
        for version in range(_version(conn, path), SCHEMA_VERSION):
            for statement in MIGRATIONS[version].split(";"):
                if statement.strip():
                    conn.execute(statement)
        conn.execute(
            "INSERT INTO autonomic_meta VALUES ('schema_version', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(SCHEMA_VERSION),),
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _version(conn: sqlite3.Connection, path: str) -> int:
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        return 0
    if "autonomic_meta" not in tables:
        raise StoreCorrupt(f"{path} is a SQLite database but not an autonomic store")
    row = conn.execute("SELECT value FROM autonomic_meta WHERE key = 'schema_version'").fetchone()
    value: Any = row[0] if row else None
    readable = isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 19
    version = int(value) if readable else 0
    if version < 1:
        raise StoreCorrupt(
            f"{path} has an unknown schema version ({str(value)[:40]!r}): it is damaged or "
            "was not written by autonomic"
        )
    if version > SCHEMA_VERSION:
        raise StoreCorrupt(
            f"{path} was written by a newer autonomic (schema version {version}; this one "
            f"reads up to {SCHEMA_VERSION}): upgrade autonomic to open it"
        )
    return version
