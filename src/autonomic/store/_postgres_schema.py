"""The PostgreSQL store's schema as numbered migrations, applied in order when a store opens.

The numbers are the SQLite store's (``_sqlite_schema``): migration ``n`` makes the same
change on both. Opening takes an advisory lock for the schema, so that processes starting
together upgrade it once.
"""

from __future__ import annotations

from typing import Any

from autonomic.errors import StoreCorrupt

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "ensure_schema"]

MIGRATIONS: tuple[str, ...] = (
    # 1: runs (numbered, so that runs created in the same instant keep their order),
    # their events, content-addressed blobs, one snapshot per run
    """
    CREATE TABLE autonomic_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE runs (
        n BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
        run_id TEXT PRIMARY KEY,
        agent TEXT NOT NULL,
        goal TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        last_seq BIGINT NOT NULL,
        parent_run_id TEXT,
        forked_from TEXT,
        forked_at BIGINT,
        lease_owner TEXT,
        lease_expires_at DOUBLE PRECISION,
        recoveries BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX runs_by_created ON runs (created_at, n);
    CREATE TABLE events (
        run_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        type TEXT NOT NULL,
        version BIGINT NOT NULL,
        ts DOUBLE PRECISION NOT NULL,
        body BYTEA NOT NULL,
        PRIMARY KEY (run_id, seq)
    );
    CREATE TABLE blobs (digest TEXT PRIMARY KEY, data BYTEA NOT NULL);
    CREATE TABLE snapshots (run_id TEXT PRIMARY KEY, seq BIGINT NOT NULL, body BYTEA NOT NULL)
    """,
    # 2: lineage and tenants, fencing epochs, waits and timers, and the inbox (its ids come
    # from a sequence: they never come back, so a run's inbox_last only ever grows)
    """
    ALTER TABLE runs ADD COLUMN root_run_id TEXT;
    UPDATE runs SET root_run_id = run_id;
    ALTER TABLE runs ADD COLUMN depth BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN tenant TEXT;
    ALTER TABLE runs ADD COLUMN lease_epoch BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN wake_at DOUBLE PRECISION;
    ALTER TABLE runs ADD COLUMN wait TEXT;
    ALTER TABLE runs ADD COLUMN inbox_last BIGINT NOT NULL DEFAULT 0;
    CREATE INDEX runs_to_claim ON runs (status, wake_at) WHERE status IN ('running', 'waiting');
    CREATE INDEX runs_by_parent ON runs (parent_run_id, created_at);
    CREATE TABLE inbox (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        run_id TEXT NOT NULL,
        key TEXT NOT NULL,
        type TEXT NOT NULL,
        version BIGINT NOT NULL,
        ts DOUBLE PRECISION NOT NULL,
        body BYTEA NOT NULL
    );
    CREATE INDEX inbox_by_run ON inbox (run_id, id)
    """,
    # 3: the PII vault: encrypted values by placeholder, per root run
    """
    CREATE TABLE vault (
        vault_id TEXT NOT NULL,
        name TEXT NOT NULL,
        secret BYTEA NOT NULL,
        PRIMARY KEY (vault_id, name)
    )
    """,
    # 4: blackboards: versioned JSON values by key per root run, and who watches a key
    """
    CREATE TABLE board (
        scope TEXT NOT NULL,
        key TEXT NOT NULL,
        value BYTEA NOT NULL,
        version BIGINT NOT NULL,
        writer TEXT NOT NULL,
        ts DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (scope, key)
    );
    CREATE TABLE board_watch (
        scope TEXT NOT NULL,
        key TEXT NOT NULL,
        run_id TEXT NOT NULL,
        PRIMARY KEY (scope, key, run_id)
    )
    """,
    # 5: per-tenant budgets: limits, what ended runs spent and unfinished ones hold (JSON)
    """
    CREATE TABLE tenant_budgets (
        tenant TEXT PRIMARY KEY,
        budget TEXT NOT NULL
    )
    """,
    # 6: run priorities: claims take the highest first
    """
    ALTER TABLE runs ADD COLUMN priority BIGINT NOT NULL DEFAULT 0
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)


async def ensure_schema(conn: Any, schema: str, where: str) -> None:
    """Create or upgrade ``schema`` (and make it the connection's ``search_path``) in one
    transaction, or refuse one we cannot read. ``conn`` is an autocommit psycopg
    ``AsyncConnection``; a store at this version is only read."""
    await conn.execute(f'SET search_path TO "{schema}"')
    if await _version(conn, schema, where) == SCHEMA_VERSION:
        return
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("autonomic:" + schema,))
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        # read again under the lock: another process may have just upgraded it
        for version in range(await _version(conn, schema, where), SCHEMA_VERSION):
            for statement in MIGRATIONS[version].split(";"):
                if statement.strip():
                    await conn.execute(statement)
        await conn.execute(
            "INSERT INTO autonomic_meta VALUES ('schema_version', %s) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(SCHEMA_VERSION),),
        )


async def _version(conn: Any, schema: str, where: str) -> int:
    cursor = await conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
    )
    tables = {row[0] for row in await cursor.fetchall()}
    if not tables:
        return 0
    if "autonomic_meta" not in tables:
        raise StoreCorrupt(f"{where} holds tables but is not an autonomic store")
    cursor = await conn.execute("SELECT value FROM autonomic_meta WHERE key = 'schema_version'")
    row = await cursor.fetchone()
    value: Any = row[0] if row else None
    readable = isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 19
    version = int(value) if readable else 0
    if version < 1:
        raise StoreCorrupt(f"{where} has an unknown schema version ({str(value)[:40]!r})")
    if version > SCHEMA_VERSION:
        raise StoreCorrupt(
            f"{where} was written by a newer autonomic (schema version {version}; this one "
            f"reads up to {SCHEMA_VERSION}): upgrade autonomic to open it"
        )
    return version
