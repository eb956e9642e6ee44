"""The dreamer: clusters become facts with lineage, members are pruned, twice is once."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from autonomic import Agent, Runtime
from autonomic.events import (
    ChildCompleted,
    ChildSpawned,
    GuardTripped,
    ModelCalled,
    ModelResponded,
)
from autonomic.guards.budget import Budget
from autonomic.memory.dreamer import DREAM_PURPOSE, Dreamer
from autonomic.memory.dreaming import Dreaming, dreamer_agent
from autonomic.memory.embedders import MiniLMEmbedder
from autonomic.memory.episodic import EpisodicMemory
from autonomic.memory.knowledge import KnowledgeGraph
from autonomic.memory.tools import FactAsserted, memory_tools
from autonomic.messages import ModelRequest
from autonomic.models.base import Model
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
        memories = next(m.content for m in request.messages if m.content.startswith("Memories:"))
        if "espresso" in memories:
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
    calls = [e for e in child_events if isinstance(e, ModelCalled)]
    assert calls and {e.purpose for e in calls} == {DREAM_PURPOSE}
    asserted = {
        (e.subject, e.relation, e.object) for e in child_events if isinstance(e, FactAsserted)
    }
    assert asserted <= {f.triple for f in graph.facts()}
    assert {f.triple for f in graph.facts()} >= {("user", "drinks", "espresso")}


async def test_the_dreamer_run_logs_each_model_call_and_resumes_after_a_crash(
    tmp_path: Path, embedder: MiniLMEmbedder
) -> None:
    episodic = EpisodicMemory(str(tmp_path / "mem.db"), embedder, dedup_threshold=0.99)
    graph = KnowledgeGraph(str(tmp_path / "kg.db"))
    await episodic.remember_many(COFFEE + TRAVEL + OTHER)
    seen: list[ModelRequest] = []
    hang, second_call = asyncio.Event(), asyncio.Event()

    class CrashesOnSecondCall:
        """Answers the first cluster, then hangs as a process that died would."""

        name = "crashy"

        async def complete(self, request: ModelRequest) -> object:
            seen.append(request)
            if len(seen) == 2:
                second_call.set()
                await hang.wait()
            return await extractor([]).complete(request)

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    crashy: Model = CrashesOnSecondCall()  # type: ignore[assignment]
    dreamer = Dreamer(episodic, graph, crashy, cluster_threshold=0.6, goal="travel")
    async with Runtime(url, lease_s=0.2) as rt:
        run = await rt.start(dreamer_agent(dreamer), "dream")
        await second_call.wait()
    # the first cluster (travel: the goal ranks it first) was consolidated before the crash
    assert {f.triple for f in graph.facts()} == {
        ("user", "travels_to", "Tokyo"),
        ("trip", "month", "October"),
    }
    first_cluster = seen[0].messages[-1].content

    resumed: list[ModelRequest] = []
    dreamer.model = extractor(resumed)
    await asyncio.sleep(0.25)
    async with Runtime(url, agents=[dreamer_agent(dreamer)]) as rt:
        result = await (await rt.resume(run.run_id)).wait()
        events = [e.event async for e in rt.events(run.run_id, follow=False)]
    assert result.status == "completed", result
    assert [r.messages[-1].content for r in resumed] == [seen[1].messages[-1].content]
    assert first_cluster not in {r.messages[-1].content for r in resumed}
    called = [e for e in events if isinstance(e, ModelCalled)]
    answered = [e for e in events if isinstance(e, ModelResponded)]
    assert [e.purpose for e in called] == [DREAM_PURPOSE] * 3  # one interrupted, re-asked
    assert [e.purpose for e in answered] == [DREAM_PURPOSE] * 2
    asserted = [e for e in events if isinstance(e, FactAsserted)]
    assert {(e.subject, e.relation, e.object) for e in asserted} == {
        f.triple for f in graph.facts()
    } and len(graph.facts()) == 3
    report = json.loads(result.answer or "")
    assert report["model_calls"] == 2 and len(report["pruned"]) == 4


async def test_the_dreamer_run_waits_for_budget_then_goes_on(
    store: Store, embedder: MiniLMEmbedder
) -> None:
    episodic = EpisodicMemory(":memory:", embedder, dedup_threshold=0.99)
    graph = KnowledgeGraph(":memory:")
    await episodic.remember_many(COFFEE + TRAVEL)
    requests: list[ModelRequest] = []
    dreamer = Dreamer(episodic, graph, extractor(requests), cluster_threshold=0.6)
    agent = dreamer_agent(dreamer, budget=Budget(model_calls=1))
    async with Runtime(store) as rt:
        run = await rt.start(agent, "dream")
        waiting = await run.wait_until_waiting()
        assert waiting.status == "waiting" and (waiting.waiting_for or "").startswith("budget")
        assert len(requests) == 1  # its one call was its wrap-up turn; the next one waits
        assert graph.facts() == []  # after a wrap-up turn every step waits for a top-up
        await rt.topup(run.run_id, model_calls=2)
        result = await run.wait()
        events = [e.event async for e in rt.events(run.run_id, follow=False)]
    assert result.status == "completed" and len(requests) == 2  # the answer paid for is kept
    assert any(isinstance(e, GuardTripped) and e.guard == "budget" for e in events)
    assert len(graph.facts()) == 3
