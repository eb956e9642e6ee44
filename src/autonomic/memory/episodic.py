"""Episodic memory (L3): what an agent saw and was told, embedded, recalled by meaning.

``remember(text, namespace, metadata)`` stores a memory; an exact duplicate (same text
up to case and spacing) or a near duplicate of a live memory in the same namespace is
merged into it instead (its count and importance grow). A near duplicate needs both a
cosine >= ``dedup_threshold`` and the same words once case, punctuation, plural ``s``
and a few meaning-free fillers (articles, "again", "also", "really"...) are set aside:
embeddings put "costs 40 dollars" and "costs 45 dollars", "is" and "is not", "Alice"
and "Bob" within a few hundredths of each other, and merging those would lose a fact.
``recall(query, namespace, k, as_of=)`` ranks live memories by

    score = similarity × (1 - recency_weight + recency_weight × 0.5 ** (age / half_life))
                       × (1 + frequency_weight × ln(1 + times recalled)) × importance

(``Scoring`` holds the weights). ``as_of`` answers as of a past moment: memories written
later, or pruned before, are left out. Namespaces separate agents (``agent:NAME``), users
(``user:ID``) and what all share (``shared``); a recall may search several.

Rows live in SQLite (vectors as float32 blobs in the file) or PostgreSQL; each
namespace's vectors are also kept in memory as one matrix, so a recall is one exact
matrix product, linear in the count (``bench/memory.py`` measures it at 100,000).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from autonomic.errors import ConfigError
from autonomic.memory._sql import connect
from autonomic.memory.embedders import Embedder, Vectors

__all__ = ["EpisodicMemory", "Memory", "Recollection", "Scoring"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS episodic_memories (
    id INTEGER PRIMARY KEY,
    namespace TEXT NOT NULL,
    text TEXT NOT NULL,
    digest TEXT NOT NULL,
    embedder TEXT NOT NULL,
    vector BLOB NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    importance REAL NOT NULL DEFAULT 1.0,
    created_at REAL NOT NULL,
    pruned_at REAL,
    access_count INTEGER NOT NULL DEFAULT 0,
    accessed_at REAL NOT NULL,
    merged INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS episodic_by_namespace ON episodic_memories (namespace, digest);
"""

_SPACES = re.compile(r"\s+")
_NEAR_CANDIDATES = 8
_WORDS = re.compile(r"[\w']+")
_FILLERS = frozenset(
    "a an the again also just really very please actually indeed quite too so".split()  # noqa: SIM905
)


def _wording(text: str) -> tuple[str, ...]:
    """The words that carry meaning, in order: lower-cased, without punctuation, fillers,
    possessive ``'s`` or plural ``s`` (numbers, names and negations are all kept)."""
    words = []
    for word in _WORDS.findall(text.lower()):
        word = word.removesuffix("'s")
        if word in _FILLERS:
            continue
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        words.append(word)
    return tuple(words)


def _digest(text: str) -> str:
    normal = _SPACES.sub(" ", text.strip().lower()).rstrip(".!?")
    return hashlib.sha256(normal.encode()).hexdigest()


@dataclass(frozen=True)
class Scoring:
    """How recall ranks memories (see the module docstring).

    ``half_life_days``: age at which the recency factor is halved. ``recency_weight`` in
    [0, 1]: 0 ignores age. ``frequency_weight`` >= 0: how much being recalled often helps.
    ``candidates``: how many of the most similar memories are re-ranked.
    """

    half_life_days: float = 30.0
    recency_weight: float = 0.3
    frequency_weight: float = 0.1
    candidates: int = 200

    def __post_init__(self) -> None:
        if self.half_life_days <= 0 or not 0 <= self.recency_weight <= 1:
            raise ConfigError("Scoring: half_life_days must be > 0 and recency_weight in [0, 1]")
        if self.frequency_weight < 0 or self.candidates < 1:
            raise ConfigError("Scoring: frequency_weight must be >= 0 and candidates >= 1")


@dataclass(frozen=True, slots=True)
class Memory:
    """A stored memory (``merged`` counts the duplicates folded into it)."""

    id: int
    namespace: str
    text: str
    metadata: dict[str, Any]
    importance: float
    created_at: float
    access_count: int = 0
    merged: int = 0


@dataclass(frozen=True, slots=True)
class Recollection:
    memory: Memory
    score: float
    similarity: float


@dataclass
class _Index:
    """One namespace's live and pruned memories as arrays (row i is memory ids[i])."""

    dim: int
    size: int = 0
    ids: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    vectors: Vectors = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    created: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    pruned: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    importance: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    access: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    alive: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, bool))
    rows: dict[int, int] = field(default_factory=dict)

    def add(self, mid: int, vector: Vectors, created: float, importance: float) -> None:
        if self.size == len(self.ids):
            grow = max(64, self.size)
            self.ids = np.concatenate([self.ids, np.zeros(grow, np.int64)])
            self.vectors = np.concatenate(
                [self.vectors.reshape(-1, self.dim), np.zeros((grow, self.dim), np.float32)]
            )
            self.created = np.concatenate([self.created, np.zeros(grow)])
            self.pruned = np.concatenate([self.pruned, np.zeros(grow)])
            self.importance = np.concatenate([self.importance, np.zeros(grow)])
            self.access = np.concatenate([self.access, np.zeros(grow)])
            self.alive = np.concatenate([self.alive, np.zeros(grow, bool)])
        i = self.size
        self.ids[i], self.vectors[i], self.created[i] = mid, vector, created
        self.pruned[i], self.importance[i], self.access[i] = math.inf, importance, 0
        self.alive[i] = True
        self.rows[mid] = i
        self.size += 1

    def live(self, as_of: float | None) -> npt.NDArray[np.bool_]:
        n = self.size
        if as_of is None:
            return self.alive[:n]
        return (self.created[:n] <= as_of) & (self.pruned[:n] > as_of)


class EpisodicMemory:
    """L3 memory in a SQLite file (``":memory:"`` for a private, temporary one) or in
    PostgreSQL (``postgresql://...``; vectors as ``bytea``, searched in process)."""

    def __init__(
        self,
        path: str | Path,
        embedder: Embedder,
        *,
        scoring: Scoring | None = None,
        dedup_threshold: float = 0.94,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 < dedup_threshold <= 1:
            raise ConfigError("dedup_threshold must be in (0, 1]")
        self.embedder, self.scoring = embedder, scoring or Scoring()
        self.dedup_threshold, self._clock = dedup_threshold, clock
        self._db = connect(path)
        self._db.script(_SCHEMA)
        self._lock = threading.RLock()
        self._indexes: dict[str, _Index] = {}

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> EpisodicMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------------

    async def remember(
        self,
        text: str,
        namespace: str = "shared",
        metadata: dict[str, Any] | None = None,
        *,
        importance: float = 1.0,
        at: float | None = None,
    ) -> tuple[Memory, bool]:
        """Store ``text``; returns the memory and whether it was merged into an old one."""
        (result,) = await self.remember_many(
            [text], namespace, [metadata or {}], at=at, importance=importance
        )
        return result

    async def remember_many(
        self,
        texts: Sequence[str],
        namespace: str = "shared",
        metadata: Sequence[dict[str, Any]] | None = None,
        *,
        importance: float = 1.0,
        at: float | None = None,
    ) -> list[tuple[Memory, bool]]:
        """``remember`` for many texts with one embedding batch (duplicates among them merge)."""
        if not namespace:
            raise ConfigError("a memory needs a namespace (e.g. 'shared', 'user:42')")
        if any(not t.strip() for t in texts):
            raise ConfigError("cannot remember an empty text")
        vectors = await self.embedder.embed(texts)
        metas = list(metadata) if metadata is not None else [{} for _ in texts]
        now = self._clock() if at is None else at
        return await asyncio.to_thread(
            self._write_all, texts, vectors, namespace, metas, importance, now
        )

    def _write_all(
        self,
        texts: Sequence[str],
        vectors: Vectors,
        namespace: str,
        metas: list[dict[str, Any]],
        importance: float,
        now: float,
    ) -> list[tuple[Memory, bool]]:
        with self._lock:
            index = self._index(namespace)
            before = index.size
            # one matrix product against what was stored before the batch; each text is
            # then compared with the batch's own new memories only
            known = index.vectors[:before] @ np.asarray(vectors, np.float32).T
            self._db.begin()
            try:
                results = [
                    self._write(t, v, known[:, j], namespace, m, importance, now)
                    for j, (t, v, m) in enumerate(zip(texts, vectors, metas, strict=True))
                ]
                self._db.commit()
            except BaseException:
                self._db.rollback()
                self._indexes.pop(namespace, None)  # reload what the file holds
                raise
            return results

    def _write(
        self,
        text: str,
        vector: Vectors,
        known: Vectors,
        namespace: str,
        metadata: dict[str, Any],
        importance: float,
        now: float,
    ) -> tuple[Memory, bool]:
        digest = _digest(text)
        index = self._index(namespace)
        same = self._db.execute(
            "SELECT id FROM episodic_memories WHERE namespace = ? AND digest = ? "
            "AND pruned_at IS NULL",
            (namespace, digest),
        ).fetchone()
        target = same[0] if same else self._near(index, text, vector, known)
        if target is not None:
            self._db.execute(
                "UPDATE episodic_memories SET merged = merged + 1, importance = CASE WHEN "
                "importance < 9.9 THEN importance + 0.1 ELSE 10.0 END, accessed_at = ? "
                "WHERE id = ?",
                (now, target),
            )
            row = index.rows[target]
            index.importance[row] = min(index.importance[row] + 0.1, 10.0)
            return self._get(target), True
        mid = self._db.insert(
            "INSERT INTO episodic_memories (namespace, text, digest, embedder, vector, "
            "metadata, importance, created_at, accessed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                namespace,
                text,
                digest,
                self.embedder.name,
                np.asarray(vector, np.float32).tobytes(),
                json.dumps(metadata, default=str),
                importance,
                now,
                now,
            ),
        )
        index.add(mid, vector, now, importance)
        return Memory(mid, namespace, text, metadata, importance, now), False

    def _near(self, index: _Index, text: str, vector: Vectors, known: Vectors) -> int | None:
        """The most similar live memory that is a near duplicate of ``text`` (see the
        module docstring), if any; ``known`` holds the similarities to the first
        ``len(known)`` rows, computed for the whole batch."""
        if not index.size:
            return None
        added = index.vectors[len(known) : index.size] @ vector
        sims = np.concatenate([known, added])
        sims[~index.alive[: index.size]] = -1.0
        close = np.flatnonzero(sims >= self.dedup_threshold)
        if not len(close):
            return None
        close = close[np.argsort(-sims[close], kind="stable")][:_NEAR_CANDIDATES]
        ids = [int(index.ids[i]) for i in close]
        marks = ",".join("?" * len(ids))
        texts = dict(
            self._db.execute(f"SELECT id, text FROM episodic_memories WHERE id IN ({marks})", ids)
        )
        wording = _wording(text)
        return next((mid for mid in ids if _wording(texts[mid]) == wording), None)

    def prune(self, ids: Iterable[int], *, at: float | None = None) -> int:
        """Retire memories (they stay in the file and answer ``as_of`` earlier times)."""
        now = self._clock() if at is None else at
        count = 0
        with self._lock:
            for mid in ids:
                row = self._db.execute(
                    "SELECT namespace FROM episodic_memories WHERE id = ? AND pruned_at IS NULL",
                    (mid,),
                ).fetchone()
                if row is None:
                    continue
                self._db.execute(
                    "UPDATE episodic_memories SET pruned_at = ? WHERE id = ?", (now, mid)
                )
                index = self._index(row[0])
                index.pruned[index.rows[mid]] = now
                index.alive[index.rows[mid]] = False
                count += 1
        return count

    # -- reading -------------------------------------------------------------------------

    async def recall(
        self,
        query: str,
        namespace: str | Sequence[str] = "shared",
        k: int = 5,
        *,
        as_of: float | None = None,
    ) -> list[Recollection]:
        """The ``k`` best memories for ``query``, best first (see the module docstring)."""
        if k < 1:
            raise ConfigError("recall needs k >= 1")
        (vector,) = await self.embedder.embed([query])
        return await asyncio.to_thread(self.recall_vector, vector, namespace, k, as_of=as_of)

    def recall_vector(
        self,
        vector: Vectors,
        namespace: str | Sequence[str] = "shared",
        k: int = 5,
        *,
        as_of: float | None = None,
    ) -> list[Recollection]:
        """``recall`` for a query already embedded."""
        spaces = [namespace] if isinstance(namespace, str) else list(namespace)
        now = self._clock() if as_of is None else as_of
        s = self.scoring
        scored: list[tuple[float, float, int, _Index, int]] = []
        with self._lock:
            for space in spaces:
                index = self._index(space)
                if not index.size:
                    continue
                sims = index.vectors[: index.size] @ vector
                live = index.live(as_of)
                sims[~live] = -np.inf
                top = min(s.candidates, int(np.count_nonzero(live)))
                if top == 0:
                    continue
                rows = np.argpartition(-sims, top - 1)[:top]
                age_days = np.maximum(now - index.created[rows], 0) / 86400
                recency = (
                    1 - s.recency_weight + s.recency_weight * 0.5 ** (age_days / s.half_life_days)
                )
                frequency = 1 + s.frequency_weight * np.log1p(index.access[rows])
                scores = np.maximum(sims[rows], 0) * recency * frequency * index.importance[rows]
                scored.extend(
                    (float(scores[j]), float(sims[r]), int(index.ids[r]), index, int(r))
                    for j, r in enumerate(rows)
                )
            scored.sort(key=lambda item: (-item[0], item[2]))
            best = scored[:k]
            if as_of is None:
                for _, _, _, index, row in best:
                    index.access[row] += 1
                self._db.executemany(
                    "UPDATE episodic_memories SET access_count = access_count + 1, "
                    "accessed_at = ? WHERE id = ?",
                    [(now, mid) for _, _, mid, _, _ in best],
                )
            return [Recollection(self._get(mid), score, sim) for score, sim, mid, _, _ in best]

    def get(self, mid: int) -> Memory:
        with self._lock:
            return self._get(mid)

    def memories(self, namespace: str) -> list[tuple[Memory, Vectors]]:
        """Every live memory of ``namespace`` with its vector, oldest first."""
        with self._lock:
            index = self._index(namespace)
            live = index.live(None)
            return [
                (self._get(int(index.ids[i])), index.vectors[i].copy())
                for i in range(index.size)
                if live[i]
            ]

    def count(self, namespace: str, *, live: bool = True) -> int:
        query = "SELECT COUNT(*) FROM episodic_memories WHERE namespace = ?"
        if live:
            query += " AND pruned_at IS NULL"
        with self._lock:
            (n,) = self._db.execute(query, (namespace,)).fetchone()
        return int(n)

    def _get(self, mid: int) -> Memory:
        row = self._db.execute(
            "SELECT id, namespace, text, metadata, importance, created_at, access_count, merged "
            "FROM episodic_memories WHERE id = ?",
            (mid,),
        ).fetchone()
        if row is None:
            raise ConfigError(f"no memory with id {mid}")
        return Memory(row[0], row[1], row[2], json.loads(row[3]), *row[4:])

    def _index(self, namespace: str) -> _Index:
        index = self._indexes.get(namespace)
        if index is not None:
            return index
        dim = self.embedder.dim
        index = _Index(dim, vectors=np.zeros((0, dim), np.float32))
        rows = self._db.execute(
            "SELECT id, vector, created_at, pruned_at, importance, access_count, embedder "
            "FROM episodic_memories WHERE namespace = ? ORDER BY id",
            (namespace,),
        )
        for mid, blob, created, pruned, importance, access, embedder in rows:
            if embedder != self.embedder.name:
                raise ConfigError(
                    f"namespace {namespace!r} holds vectors of {embedder!r}, not of "
                    f"{self.embedder.name!r}: open it with that embedder or use another namespace"
                )
            index.add(mid, np.frombuffer(blob, np.float32), created, importance)
            i = index.rows[mid]
            index.pruned[i] = math.inf if pruned is None else pruned
            index.alive[i] = pruned is None
            index.access[i] = access
        self._indexes[namespace] = index
        return index
