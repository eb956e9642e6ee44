"""The knowledge graph (L4): (subject, relation, object) facts, bi-temporal, with provenance.

Each fact says when it held in the world (``valid_from``/``valid_to``) and when the store
learned and retired it (``recorded_at``/``expired_at``). Asserting a fact of a
single-valued relation (``single=True``: a preference, an address) closes the facts it
supersedes, so queries return the current fact by default and the old one ``as_of`` a
moment when it held. ``provenance`` names the events a fact came from (``run_id:seq``);
``derived_from`` the episodic memories the dreamer abstracted it from.

``traverse(start, depth)`` walks outgoing edges with a recursive SQL query (depth 3 over
100,000 edges: a few milliseconds; see ``bench/memory.py``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from autonomic.errors import ConfigError
from autonomic.memory._sql import connect

__all__ = ["Fact", "KnowledgeGraph"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kg_facts (
    id INTEGER PRIMARY KEY,
    namespace TEXT NOT NULL,
    subject TEXT NOT NULL,
    relation TEXT NOT NULL,
    object TEXT NOT NULL,
    valid_from REAL NOT NULL,
    valid_to REAL,
    recorded_at REAL NOT NULL,
    expired_at REAL,
    provenance TEXT NOT NULL DEFAULT '[]',
    derived_from TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS kg_by_subject ON kg_facts (namespace, subject, relation);
CREATE INDEX IF NOT EXISTS kg_by_object ON kg_facts (namespace, object);
CREATE TABLE IF NOT EXISTS kg_derived (
    fact_id INTEGER NOT NULL,
    memory_id INTEGER NOT NULL,
    PRIMARY KEY (memory_id, fact_id)
);
"""

_COLUMNS = (
    "id, namespace, subject, relation, object, valid_from, valid_to, recorded_at, "
    "expired_at, provenance, derived_from"
)
_CURRENT = "valid_to IS NULL AND expired_at IS NULL"
_AS_OF = (
    "valid_from <= :t AND (valid_to IS NULL OR valid_to > :t) "
    "AND recorded_at <= :t AND (expired_at IS NULL OR expired_at > :t)"
)


@dataclass(frozen=True, slots=True)
class Fact:
    id: int
    namespace: str
    subject: str
    relation: str
    object: str
    valid_from: float
    valid_to: float | None = None
    recorded_at: float = 0.0
    expired_at: float | None = None
    provenance: tuple[str, ...] = ()
    derived_from: tuple[int, ...] = ()

    @property
    def triple(self) -> tuple[str, str, str]:
        return (self.subject, self.relation, self.object)


def _prefixed(condition: str) -> str:
    """``condition`` on the columns of the table aliased ``f``."""
    for column in ("valid_from", "valid_to", "recorded_at", "expired_at"):
        condition = condition.replace(column, f"f.{column}")
    return condition


def _fact(row: Sequence[object]) -> Fact:
    values = list(row)
    values[9] = tuple(json.loads(str(values[9])))
    values[10] = tuple(json.loads(str(values[10])))
    return Fact(*values)  # type: ignore[arg-type]


class KnowledgeGraph:
    """L4 memory in a SQLite file (the same file as episodic memory is fine) or in
    PostgreSQL (``postgresql://...?schema=NAME``)."""

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self._db = connect(path)
        self._db.script(_SCHEMA)
        self._clock = clock
        self._lock = threading.RLock()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> KnowledgeGraph:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def assert_fact(
        self,
        subject: str,
        relation: str,
        obj: str,
        *,
        namespace: str = "shared",
        single: bool = False,
        valid_from: float | None = None,
        provenance: Sequence[str] = (),
        derived_from: Sequence[int] = (),
    ) -> tuple[Fact, tuple[Fact, ...]]:
        """Record a fact; returns it and the facts it superseded (``single`` relations).

        Asserting a fact that is already current changes nothing and returns it.
        """
        if not (subject.strip() and relation.strip() and obj.strip()):
            raise ConfigError("a fact needs a non-empty subject, relation and object")
        now = self._clock()
        start = now if valid_from is None else valid_from
        with self._lock:
            self._db.begin()
            try:
                same = self._db.execute(
                    f"SELECT {_COLUMNS} FROM kg_facts WHERE namespace = ? AND subject = ? "
                    f"AND relation = ? AND object = ? AND {_CURRENT}",
                    (namespace, subject, relation, obj),
                ).fetchone()
                if same is not None:
                    fact = _fact(same)
                    self._link(fact.id, derived_from)
                    self._db.commit()
                    return fact, ()
                closed: tuple[Fact, ...] = ()
                if single:
                    closed = tuple(
                        _fact(r)
                        for r in self._db.execute(
                            f"SELECT {_COLUMNS} FROM kg_facts WHERE namespace = ? AND "
                            f"subject = ? AND relation = ? AND {_CURRENT}",
                            (namespace, subject, relation),
                        )
                    )
                    self._db.executemany(
                        "UPDATE kg_facts SET valid_to = ?, expired_at = ? WHERE id = ?",
                        [(start, now, f.id) for f in closed],
                    )
                fid = self._db.insert(
                    "INSERT INTO kg_facts (namespace, subject, relation, object, valid_from, "
                    "recorded_at, provenance, derived_from) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        namespace,
                        subject,
                        relation,
                        obj,
                        start,
                        now,
                        json.dumps(list(provenance)),
                        json.dumps(list(derived_from)),
                    ),
                )
                self._link(fid, derived_from)
                self._db.commit()
            except BaseException:
                self._db.rollback()
                raise
        fact = Fact(
            fid,
            namespace,
            subject,
            relation,
            obj,
            start,
            None,
            now,
            None,
            tuple(provenance),
            tuple(derived_from),
        )
        return fact, closed

    def _link(self, fact_id: int, memories: Sequence[int]) -> None:
        self._db.executemany(
            "INSERT OR IGNORE INTO kg_derived (fact_id, memory_id) VALUES (?, ?)",
            [(fact_id, m) for m in memories],
        )

    def retract(self, fact_id: int, *, at: float | None = None) -> bool:
        """End a current fact (it stays, answering ``as_of`` earlier times)."""
        now = self._clock()
        with self._lock:
            cursor = self._db.execute(
                f"UPDATE kg_facts SET valid_to = ?, expired_at = ? WHERE id = ? AND {_CURRENT}",
                (now if at is None else at, now, fact_id),
            )
        return bool(cursor.rowcount > 0)

    def get(self, fact_id: int) -> Fact:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM kg_facts WHERE id = ?", (fact_id,)
            ).fetchone()
        if row is None:
            raise ConfigError(f"no fact with id {fact_id}")
        return _fact(row)

    def facts(
        self,
        subject: str | None = None,
        relation: str | None = None,
        obj: str | None = None,
        *,
        namespace: str = "shared",
        as_of: float | None = None,
    ) -> list[Fact]:
        """Facts matching the given parts: current ones, or those that held ``as_of``."""
        where = ["namespace = :ns", _CURRENT if as_of is None else _AS_OF]
        params: dict[str, object] = {"ns": namespace, "t": as_of}
        for name, value in (("subject", subject), ("relation", relation), ("object", obj)):
            if value is not None:
                where.append(f"{name} = :{name}")
                params[name] = value
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM kg_facts WHERE {' AND '.join(where)} ORDER BY id",
                params,
            ).fetchall()
        return [_fact(r) for r in rows]

    def traverse(
        self,
        start: str,
        depth: int = 2,
        *,
        namespace: str = "shared",
        relations: Sequence[str] | None = None,
        as_of: float | None = None,
        limit: int = 1000,
    ) -> list[tuple[Fact, int]]:
        """Facts reachable from ``start`` along outgoing edges, each with its hop (1..depth)."""
        if not 1 <= depth <= 10:
            raise ConfigError("traverse: depth must be between 1 and 10")
        live = _CURRENT if as_of is None else _AS_OF
        only = ""
        params: dict[str, object] = {
            "start": start,
            "depth": depth,
            "ns": namespace,
            "t": as_of,
            "limit": limit,
        }
        if relations:
            names = [f":r{i}" for i in range(len(relations))]
            only = f" AND relation IN ({', '.join(names)})"
            params.update({f"r{i}": r for i, r in enumerate(relations)})
        columns = ", ".join("f." + c.strip() for c in _COLUMNS.split(","))
        # edges first found at each hop, then their rows by primary key: every step is an
        # index lookup, whatever the size of the graph
        query = f"""
            WITH RECURSIVE walk(id, node, hop) AS (
                SELECT id, object, 1 FROM kg_facts
                WHERE namespace = :ns AND subject = CAST(:start AS TEXT) AND {live}{only}
                UNION
                SELECT f.id, f.object, walk.hop + 1 FROM walk JOIN kg_facts AS f
                ON f.subject = walk.node
                WHERE walk.hop < :depth AND f.namespace = :ns AND {_prefixed(live)}{only}
            )
            SELECT {columns}, MIN(walk.hop) FROM walk JOIN kg_facts AS f ON f.id = walk.id
            GROUP BY f.id ORDER BY MIN(walk.hop), f.id LIMIT :limit
        """
        with self._lock:
            rows = self._db.execute(query, params).fetchall()
        return [(_fact(r[:-1]), int(r[-1])) for r in rows]

    def derived_memories(self) -> set[int]:
        """Ids of the episodic memories some fact was derived from."""
        with self._lock:
            return {m for (m,) in self._db.execute("SELECT memory_id FROM kg_derived")}

    def count(self, *, namespace: str = "shared") -> int:
        with self._lock:
            (n,) = self._db.execute(
                "SELECT COUNT(*) FROM kg_facts WHERE namespace = ?", (namespace,)
            ).fetchone()
        return int(n)
