"""Memory as tools, and the events they leave in the run's log.

``memory_tools(episodic=..., graph=..., namespace=...)`` gives an agent ``remember`` and
``recall`` (L3) and ``assert_fact``, ``retract_fact`` and ``query_graph`` (L4). Each call
records what it stored or found (``Remembered``, ``Recalled``, ``FactAsserted``,
``FactRetracted``), so the trace and a replay show what the agent knew at each step.
"""

from __future__ import annotations

import json

from autonomic.errors import ToolError
from autonomic.memory.episodic import EpisodicMemory
from autonomic.memory.events import FactAsserted, FactRetracted, Recalled, Remembered
from autonomic.memory.knowledge import Fact, KnowledgeGraph
from autonomic.tools.base import FunctionTool, ToolContext, tool

__all__ = ["FactAsserted", "FactRetracted", "Recalled", "Remembered", "memory_tools"]


def _fact_json(fact: Fact, hop: int | None = None) -> dict[str, object]:
    data: dict[str, object] = {"id": fact.id, "fact": list(fact.triple)}
    if hop is not None:
        data["hop"] = hop
    if fact.valid_to is not None:
        data["valid_to"] = fact.valid_to
    return data


def memory_tools(
    *,
    episodic: EpisodicMemory | None = None,
    graph: KnowledgeGraph | None = None,
    namespace: str = "shared",
    read: tuple[str, ...] = (),
) -> list[FunctionTool]:
    """Tools over ``episodic`` and/or ``graph``, writing to ``namespace`` and reading from
    it and ``read`` (e.g. ``namespace="user:42", read=("shared",)``)."""
    spaces = (namespace, *(r for r in read if r != namespace))
    tools: list[FunctionTool] = []
    if episodic is not None:
        memory = episodic

        @tool(name="remember")
        async def remember(
            context: ToolContext,
            text: str,
            importance: float = 1.0,
            metadata: dict[str, str] | None = None,
        ) -> str:
            """Store something worth recalling later (a fact, a preference, an outcome).

            Args:
                text: what to remember, as one self-contained sentence.
                importance: 0.1 to 10; higher is recalled first.
                metadata: labels to keep with it (source, topic...).
            """
            if not 0.1 <= importance <= 10:
                raise ToolError("importance must be between 0.1 and 10")
            labels = {**(metadata or {}), "run_id": context.run_id}
            stored, merged = await memory.remember(text, namespace, labels, importance=importance)
            context.record(Remembered(context.action_id, namespace, stored.id, text, merged))
            return f"{'merged into' if merged else 'stored as'} memory #{stored.id}"

        @tool(name="recall", idempotent=True)
        async def recall(
            context: ToolContext, query: str, k: int = 5, as_of: float | None = None
        ) -> str:
            """Recall the memories most relevant to a question, best first.

            Args:
                query: what you want to know.
                k: how many memories to return (1 to 20).
                as_of: a UNIX time: recall only what was known then.
            """
            found = await memory.recall(query, spaces, max(1, min(k, 20)), as_of=as_of)
            ids = tuple(r.memory.id for r in found)
            context.record(Recalled(context.action_id, query, spaces, ids, as_of))
            if not found:
                return "No memories."
            return "\n".join(f"#{r.memory.id} ({r.score:.2f}): {r.memory.text}" for r in found)

        tools += [remember, recall]
    if graph is not None:
        kg = graph

        @tool(name="assert_fact")
        async def assert_fact(
            context: ToolContext, subject: str, relation: str, object: str, single: bool = False
        ) -> str:
            """Record a fact (subject, relation, object) in the knowledge graph.

            Args:
                subject: who or what the fact is about.
                relation: the relation, e.g. lives_in, prefers, works_for.
                object: the value.
                single: true when the subject has one such value at a time (a new value
                    replaces the old one).
            """
            fact, closed = kg.assert_fact(
                subject,
                relation,
                object,
                namespace=namespace,
                single=single,
                provenance=(f"{context.run_id}:{context.action_id}",),
            )
            context.record(
                FactAsserted(
                    context.action_id,
                    fact.id,
                    subject,
                    relation,
                    object,
                    tuple(f.id for f in closed),
                )
            )
            return f"fact #{fact.id}" + (f"; superseded {len(closed)}" if closed else "")

        @tool(name="retract_fact")
        async def retract_fact(context: ToolContext, fact_id: int) -> str:
            """Mark a fact as no longer true.

            Args:
                fact_id: the fact's number.
            """
            if not kg.retract(fact_id):
                raise ToolError(f"no current fact #{fact_id}")
            context.record(FactRetracted(context.action_id, fact_id))
            return f"fact #{fact_id} retracted"

        @tool(name="query_graph", idempotent=True)
        async def query_graph(subject: str, depth: int = 1, relation: str = "") -> str:
            """Facts about a subject, following relations up to ``depth`` hops.

            Args:
                subject: where to start.
                depth: how many hops to follow (1 to 3).
                relation: only follow this relation (empty: all).
            """
            found = []
            for space in spaces:
                found += kg.traverse(
                    subject,
                    max(1, min(depth, 3)),
                    namespace=space,
                    relations=[relation] if relation else None,
                    limit=100,
                )
            if not found:
                return "No facts."
            return "\n".join(json.dumps(_fact_json(f, hop)) for f, hop in found)

        tools += [assert_fact, retract_fact, query_graph]
    return tools
