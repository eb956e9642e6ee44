"""One small SQL connection for memory's tables, on SQLite or PostgreSQL.

Memory's queries are written once, in SQLite's dialect (``?`` and ``:name`` parameters);
on PostgreSQL they are translated (``%s``, ``%(name)s``) and the schema's types mapped.
A location is a file path, ``":memory:"``, ``sqlite:///path`` or ``postgresql://...``
(``?schema=NAME`` keeps the tables in a schema of their own, created when missing;
``pip install "autonomic[postgres]"``).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from autonomic.errors import ConfigError, MissingExtra

__all__ = ["Db", "connect"]

Params = Sequence[Any] | Mapping[str, Any]

_NAMED = re.compile(r"(?<![:\w]):([a-z_]\w*)")
_PG_TYPES = (
    ("INTEGER PRIMARY KEY", "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"),
    ("REAL", "DOUBLE PRECISION"),
    ("BLOB", "BYTEA"),
)


class Db:
    """A connection in autocommit mode; ``begin``/``commit``/``rollback`` group writes."""

    def __init__(self, conn: Any, postgres: bool) -> None:
        self._conn, self.postgres = conn, postgres

    def _sql(self, sql: str) -> str:
        if not self.postgres:
            return sql
        sql = sql.replace("%", "%%").replace("?", "%s")
        sql = _NAMED.sub(r"%(\1)s", sql)
        return sql.replace("INSERT OR IGNORE", "INSERT")

    def execute(self, sql: str, params: Params = ()) -> Any:
        if self.postgres and sql.startswith("INSERT OR IGNORE"):
            sql += " ON CONFLICT DO NOTHING"
        return self._conn.execute(self._sql(sql), params)

    def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        rows = list(rows)
        if not rows:
            return
        if self.postgres and sql.startswith("INSERT OR IGNORE"):
            sql += " ON CONFLICT DO NOTHING"
        if self.postgres:
            with self._conn.cursor() as cursor:
                cursor.executemany(self._sql(sql), rows)
        else:
            self._conn.executemany(sql, rows)

    def insert(self, sql: str, params: Params) -> int:
        """Run an INSERT and return the new row's id."""
        if self.postgres:
            (new_id,) = self._conn.execute(self._sql(sql) + " RETURNING id", params).fetchone()
            return int(new_id)
        return int(self._conn.execute(sql, params).lastrowid or 0)

    def script(self, schema: str) -> None:
        if not self.postgres:
            self._conn.executescript(schema)
            return
        for old, new in _PG_TYPES:
            schema = schema.replace(old, new)
        for statement in filter(str.strip, schema.split(";")):
            self._conn.execute(statement)

    def begin(self) -> None:
        self._conn.execute("BEGIN" if self.postgres else "BEGIN IMMEDIATE")

    def commit(self) -> None:
        self._conn.execute("COMMIT")

    def rollback(self) -> None:
        self._conn.execute("ROLLBACK")

    def close(self) -> None:
        self._conn.close()


def connect(location: str | Path) -> Db:
    text = str(location)
    if text.startswith(("postgresql://", "postgres://")):
        return _postgres(text)
    if text.startswith("sqlite:///"):
        text = text[len("sqlite:///") :]
    elif "://" in text:
        raise ConfigError(
            f"memory location {text!r}: use a file path, ':memory:', sqlite:///path "
            "or postgresql://..."
        )
    conn = sqlite3.connect(text, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # survives a killed process
    return Db(conn, postgres=False)


def _postgres(url: str) -> Db:
    try:
        import psycopg
    except ImportError as e:
        raise MissingExtra("postgres", "memory on PostgreSQL") from e
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    schema = (query.pop("schema", [""]) or [""])[0]
    if schema and not re.fullmatch(r"[a-z_][a-z0-9_]*", schema):
        raise ConfigError(f"schema {schema!r}: use lower-case letters, digits and _")
    plain = urlunsplit(parts._replace(query=urlencode(query, doseq=True)))
    conn = psycopg.connect(plain, autocommit=True)
    if schema:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        conn.execute(f"SET search_path TO {schema}")
    return Db(conn, postgres=True)
