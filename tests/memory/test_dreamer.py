"""The dreamer: clusters become facts with lineage, members are pruned, twice is once."""

from __future__ import annotations

import json

from autonomic import Agent, Runtime
from autonomic.events import ChildCompleted, ChildSpawned
from autonomic.memory.dreamer import DREAM_PURPOSE, Dreamer
from autonomic.memory.dreaming import Dreaming, dreamer_agent
from autonomic.memory.embedders import MiniLMEmbedder
from autonomic.memory.episodic import EpisodicMemory
from autonomic.memory.knowledge import KnowledgeGraph
from autonomic.memory.tools import FactAsserted, memory_tools
from autonomic.messages import ModelRequest
from autonomic.models.testing import FunctionModel, ScriptedModel, tool_call
from autonomic.store.base import Store
from autonomic.strategies import ReAct

COFFEE = [
    "The user drinks an espresso every morning.",
    "The user orders espresso coffee at breakfast.",
    "Every morning the user has an espresso coffee.",
]
TRAVEL = [
    "The user flies to Tokyo in October.",
    "In October the user travels to Tokyo by plane.",
    "The user's Tokyo flight is in October.",
]
OTHER = ["The printer on floor 3 is broken."]


def extractor(requests: list[ModelRequest]) -> FunctionModel:
    def answer(request: ModelRequest) -> str:
        requests.append(request)
        text = request.messages[-1].content
        if "espresso" in text:
            return json.dumps({"facts": [["user", "drinks", "espresso"]]})
        return json.dumps(
            {"facts": [["user", "travels_to", "Tokyo"], ["trip", "month", "October"]]}
        )

    return FunctionModel(answer)


async def test_a_pass_consolidates_clusters_and_a_second_changes_nothing(
    embedder: MiniLMEmbedder,
) -> None:
    episodic = EpisodicMemory(":memory:", embedder, dedup_threshold=0.99)
    graph = KnowledgeGraph(":memory:")
    await episodic.remember_many(COFFEE + TRAVEL + OTHER)
    requests: list[ModelRequest] = []
    dreamer = Dreamer(episodic, graph, extractor(requests), cluster_threshold=0.6, goal="travel")
    report = await dreamer.dream()
    assert report.considered == 7 and report.clusters == 2 and report.model_calls == 2
    assert {r.purpose for r in requests} == {DREAM_PURPOSE}
    assert len(report.facts) == 3 and len(report.pruned) == 4
    facts = {f.triple: f for f in graph.facts()}
    assert set(facts) == {
        ("user", "drinks", "espresso"),
        ("user", "travels_to", "Tokyo"),
        ("trip", "month", "October"),
    }
    coffee_ids = {m.id for m, _ in episodic.memories("shared") if "espresso" in m.text}
    assert set(facts[("user", "drinks", "espresso")].derived_from) >= coffee_ids
    live = [m.text for m, _ in episodic.memories("shared")]
    assert len(live) == 3 and OTHER[0] in live  # one survivor per cluster, and the loner
    assert episodic.count("shared", live=False) == 7  # raw memories are never deleted

    second = await dreamer.dream()
    assert (second.model_calls, second.facts, second.pruned, second.clusters) == (0, (), (), 0)
    assert len(graph.facts()) == 3 and len(episodic.memories("shared")) == 3


async def test_the_call_budget_leaves_the_rest_for_later(embedder: MiniLMEmbedder) -> None:
    episodic = EpisodicMemory(":memory:", embedder, dedup_threshold=0.99)
    graph = KnowledgeGraph(":memory:")
    await episodic.remember_many(COFFEE + TRAVEL)
    dreamer = Dreamer(episodic, graph, extractor([]), cluster_threshold=0.6, max_calls=1)
    first = await dreamer.dream()
    assert first.model_calls == 1 and first.left_for_later == 1
    second = await dreamer.dream()
    assert second.model_calls == 1 and second.left_for_later == 0
    assert len(graph.facts()) == 3


async def test_an_agent_starts_the_dreamer_as_a_durable_child_every_n_calls(
    store: Store, embedder: MiniLMEmbedder
) -> None:
    episodic = EpisodicMemory(":memory:", embedder, dedup_threshold=0.99)
    graph = KnowledgeGraph(":memory:")
    dreamer = Dreamer(episodic, graph, extractor([]), cluster_threshold=0.6)
    script = [tool_call("remember", text=t) for t in COFFEE + TRAVEL] + ["Done."]
    agent = Agent(
        "assistant",
        model=ScriptedModel(script),
        tools=memory_tools(episodic=episodic),
        strategy=Dreaming(ReAct(), every=3),
        subagents=[dreamer_agent(dreamer)],
        max_steps=20,
    )
    async with Runtime(store) as rt:
        run = await rt.start(agent, "Remember what I tell you.")
        result = await run.wait()
        assert result.status == "completed" and result.answer == "Done."
        events = [e async for e in run.events(follow=False)]
        spawned = [e.event for e in events if isinstance(e.event, ChildSpawned)]
        assert len(spawned) == 7 // 3 and {s.agent for s in spawned} == {"dreamer"}
        ended = [e.event for e in events if isinstance(e.event, ChildCompleted)]
        assert len(ended) == len(spawned) and {e.status for e in ended} == {"completed"}
        reports = [json.loads(e.answer) for e in ended]
        child_events = [e.event async for e in rt.events(spawned[-1].child_run_id, follow=False)]
    assert sum(len(r["facts"]) for r in reports) == 3  # each cluster consolidated once
    asserted = {
        (e.subject, e.relation, e.object) for e in child_events if isinstance(e, FactAsserted)
    }
    assert asserted <= {f.triple for f in graph.facts()}
    assert {f.triple for f in graph.facts()} >= {("user", "drinks", "espresso")}
