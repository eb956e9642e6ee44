"""The dreamer: consolidates episodic memories into knowledge-graph facts, in the background.

One pass (``Dreamer.dream``):

1. scores the live memories of a namespace not yet consolidated:
   ``recency × frequency × goal alignment`` (recency halves every ``half_life_days``;
   frequency is ``1 + ln(1 + times recalled + duplicates merged)``; alignment is the
   cosine with ``goal``, floored at 0.1, or 1 without a goal);
2. clusters them greedily, best first (members within ``cluster_threshold`` cosine of
   the cluster's seed); clusters smaller than ``min_cluster`` are left alone;
3. asks the model once per cluster (purpose ``dream``, at most ``max_calls`` calls) for
   the facts the cluster supports, and records them in the graph with ``derived_from``
   links to the memories;
4. prunes the cluster's members except its best one (pruned memories stay in the file,
   answering ``as_of`` queries; raw run events are never touched).

Consolidated memories are linked to their facts, so a second pass over unchanged
memories changes nothing. The three parts are separate (``plan``, ``dream_request`` and
``triples``, ``consolidate``) so that a durable run (``autonomic.memory.dreaming``) can
make each model call a step of its own, in its log and under its budget; ``dream`` chains
them in process, for scripts and tests.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from autonomic.errors import ConfigError
from autonomic.memory.embedders import Vectors
from autonomic.memory.episodic import EpisodicMemory, Memory
from autonomic.memory.knowledge import KnowledgeGraph
from autonomic.messages import Message, ModelRequest
from autonomic.models.base import Model

__all__ = ["DreamPlan", "DreamReport", "Dreamer", "dream_request", "triples"]

DREAM_PURPOSE = "dream"

_INSTRUCTIONS = (
    "You consolidate an agent's memories. From the memories below, extract the durable "
    "facts they support as (subject, relation, object) triples with short snake_case "
    "relations. Only facts the memories state. Answer with JSON: "
    '{"facts": [["subject", "relation", "object"], ...]}'
)
_SCHEMA = {
    "type": "object",
    "properties": {
        "facts": {
            "type": "array",
            "items": {"type": "array", "items": {"type": "string"}, "minItems": 3, "maxItems": 3},
        }
    },
    "required": ["facts"],
}


@dataclass(frozen=True, slots=True)
class DreamReport:
    """What one pass did."""

    considered: int
    clusters: int
    model_calls: int
    facts: tuple[int, ...]
    pruned: tuple[int, ...]
    left_for_later: int
    """Clusters not consolidated because the pass's ``max_calls`` ran out."""


@dataclass(frozen=True, slots=True)
class DreamPlan:
    """The clusters one pass will consolidate, each as its memories, best first."""

    considered: int
    clusters: tuple[tuple[Memory, ...], ...]
    left_for_later: int
    """Clusters not in this plan because the pass's ``max_calls`` ran out."""


def dream_request(texts: Sequence[str]) -> ModelRequest:
    """The one model call (purpose ``dream``) that turns a cluster into facts."""
    listing = "\n".join(f"- {t}" for t in texts)
    return ModelRequest(
        messages=(
            Message(role="system", content=_INSTRUCTIONS),
            Message(role="user", content=f"Memories:\n{listing}"),
        ),
        purpose=DREAM_PURPOSE,
        response_schema=_SCHEMA,
    )


def triples(text: str) -> list[tuple[str, str, str]]:
    """The (subject, relation, object) facts in a ``dream`` answer; [] if it has none."""
    try:
        data = json.loads(text)
    except ValueError:
        start, end = text.find("{"), text.rfind("}")
        if start < 0 or end <= start:
            return []
        try:
            data = json.loads(text[start : end + 1])
        except ValueError:
            return []
    facts = data.get("facts") if isinstance(data, dict) else None
    return [
        (str(f[0]).strip(), str(f[1]).strip(), str(f[2]).strip())
        for f in facts or []
        if isinstance(f, list) and len(f) == 3 and all(str(x).strip() for x in f)
    ]


class Dreamer:
    """Consolidates ``namespace`` of ``episodic`` into ``graph`` with ``model``."""

    def __init__(
        self,
        episodic: EpisodicMemory,
        graph: KnowledgeGraph,
        model: Model,
        *,
        namespace: str = "shared",
        goal: str = "",
        cluster_threshold: float = 0.75,
        min_cluster: int = 3,
        max_calls: int = 10,
        half_life_days: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 < cluster_threshold <= 1 or min_cluster < 2 or max_calls < 0:
            raise ConfigError(
                "Dreamer: cluster_threshold in (0, 1], min_cluster >= 2, max_calls >= 0"
            )
        self.episodic, self.graph, self.model = episodic, graph, model
        self.namespace, self.goal = namespace, goal
        self.cluster_threshold, self.min_cluster = cluster_threshold, min_cluster
        self.max_calls, self.half_life_days, self._clock = max_calls, half_life_days, clock

    async def scores(self, memories: Sequence[tuple[Memory, Vectors]]) -> list[float]:
        """recency × frequency × goal alignment of each memory."""
        now = self._clock()
        alignment = [1.0] * len(memories)
        if self.goal and memories:
            (goal,) = await self.episodic.embedder.embed([self.goal])
            sims = np.stack([v for _, v in memories]) @ goal
            alignment = [max(0.1, float(s)) for s in sims]
        return [
            0.5 ** (max(0.0, now - m.created_at) / 86400 / self.half_life_days)
            * (1 + math.log1p(m.access_count + m.merged))
            * a
            for (m, _), a in zip(memories, alignment, strict=True)
        ]

    def clusters(
        self, memories: Sequence[tuple[Memory, Vectors]], scores: Sequence[float]
    ) -> list[list[int]]:
        """Indexes into ``memories``, one list per cluster, best member first."""
        if not memories:
            return []
        order = sorted(range(len(memories)), key=lambda i: (-scores[i], memories[i][0].id))
        vectors = np.stack([v for _, v in memories])
        free = np.ones(len(memories), dtype=bool)
        found = []
        for seed in order:
            if not free[seed]:
                continue
            near = (vectors @ vectors[seed] >= self.cluster_threshold) & free
            members = [i for i in order if near[i]]
            free[members] = False
            if len(members) >= self.min_cluster:
                found.append(members)
        return found

    async def plan(self) -> DreamPlan:
        """Score and cluster the memories not yet consolidated; at most ``max_calls``."""
        done = self.graph.derived_memories()
        memories = [(m, v) for m, v in self.episodic.memories(self.namespace) if m.id not in done]
        clusters = self.clusters(memories, await self.scores(memories))
        return DreamPlan(
            considered=len(memories),
            clusters=tuple(
                tuple(memories[i][0] for i in members) for members in clusters[: self.max_calls]
            ),
            left_for_later=max(0, len(clusters) - self.max_calls),
        )

    def consolidate(
        self, ids: Sequence[int], facts: Sequence[tuple[str, str, str]]
    ) -> tuple[list[int], list[int]]:
        """Record a cluster's facts, linked to its memories ``ids`` (best first), and prune
        all but the best; returns (fact ids, pruned ids). Doing it twice changes nothing."""
        found = []
        for subject, relation, obj in facts:
            fact, _ = self.graph.assert_fact(
                subject,
                relation,
                obj,
                namespace=self.namespace,
                provenance=[f"memory:{i}" for i in ids],
                derived_from=list(ids),
            )
            found.append(fact.id)
        pruned = list(ids[1:]) if facts else []
        self.episodic.prune(pruned)
        return found, pruned

    async def dream(self) -> DreamReport:
        """One consolidation pass in process (see the module docstring)."""
        plan = await self.plan()
        facts, pruned = [], []
        for cluster in plan.clusters:
            response = await self.model.complete(dream_request([m.text for m in cluster]))
            found, gone = self.consolidate([m.id for m in cluster], triples(response.text))
            facts += found
            pruned += gone
        return DreamReport(
            considered=plan.considered,
            clusters=len(plan.clusters) + plan.left_for_later,
            model_calls=len(plan.clusters),
            facts=tuple(facts),
            pruned=tuple(pruned),
            left_for_later=plan.left_for_later,
        )
