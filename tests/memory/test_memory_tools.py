"""Memory as tools in a real run: what the agent stored and found is in the log and trace."""

from __future__ import annotations

from autonomic import Agent, Runtime
from autonomic.loader import read_events
from autonomic.memory.embedders import MiniLMEmbedder
from autonomic.memory.episodic import EpisodicMemory
from autonomic.memory.knowledge import KnowledgeGraph
from autonomic.memory.tools import FactAsserted, Recalled, Remembered, memory_tools
from autonomic.models.testing import ScriptedModel, tool_call
from autonomic.store.base import Store
from autonomic.views import render_trace


async def test_an_agent_remembers_recalls_and_asserts(
    store: Store, embedder: MiniLMEmbedder
) -> None:
    episodic = EpisodicMemory(":memory:", embedder)
    graph = KnowledgeGraph(":memory:")
    await episodic.remember("The shared printer is on floor 3.", "shared")
    model = ScriptedModel(
        [
            tool_call("remember", text="The user's name is Dana.", metadata={"topic": "name"}),
            tool_call("recall", query="what is the user called?", k=2),
            tool_call(
                "assert_fact", subject="dana", relation="lives_in", object="Oslo", single=True
            ),
            tool_call(
                "assert_fact", subject="dana", relation="lives_in", object="Bergen", single=True
            ),
            tool_call("query_graph", subject="dana"),
            "Dana lives in Bergen.",
        ]
    )
    agent = Agent(
        "keeper",
        model=model,
        tools=memory_tools(episodic=episodic, graph=graph, namespace="user:dana", read=("shared",)),
    )
    async with Runtime(store) as rt:
        run = await rt.start(agent, "Get to know the user.")
        result = await run.wait()
        assert result.status == "completed"
        events = [e.event async for e in run.events(follow=False)]
    remembered = [e for e in events if isinstance(e, Remembered)]
    assert [(e.namespace, e.text, e.merged) for e in remembered] == [
        ("user:dana", "The user's name is Dana.", False)
    ]
    assert episodic.get(remembered[0].memory_id).metadata["topic"] == "name"
    (recalled,) = [e for e in events if isinstance(e, Recalled)]
    assert recalled.namespaces == ("user:dana", "shared")
    assert recalled.memory_ids[0] == remembered[0].memory_id
    asserted = [e for e in events if isinstance(e, FactAsserted)]
    assert asserted[1].superseded == (asserted[0].fact_id,)
    assert [f.object for f in graph.facts("dana", "lives_in", namespace="user:dana")] == ["Bergen"]
    observations = [getattr(e, "observation", "") for e in events]
    assert any('"Bergen"' in o for o in observations)
    assert not any('"Oslo"' in o for o in observations)
    trace = render_trace(await read_events(store, run.run_id))
    assert "✎ remembered (stored as" in trace and "◇ fact" in trace and "⟲ recalled" in trace
