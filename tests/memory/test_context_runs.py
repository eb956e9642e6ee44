"""The context manager in real runs: compaction is recorded, every request fits, replay
rebuilds the same requests, and recall_events brings back what was compacted away."""

from __future__ import annotations

import json

from autonomic import Agent, Runtime, tool
from autonomic.events import (
    ActionCompleted,
    ActionRequested,
    Event,
    ModelCalled,
    ModelResponded,
    RunStarted,
)
from autonomic.memory import ContextManaged, ContextWindow, MemoryCompacted, recall_tool
from autonomic.memory.context import ContextSlot, Fitted, fit_request
from autonomic.memory.tokens import request_tokens
from autonomic.messages import Message, ModelRequest, ToolCall, ToolSpec
from autonomic.models.testing import FunctionModel, ScriptItem, tool_call
from autonomic.state import RunState
from autonomic.steps import ModelCall, Record
from autonomic.store.base import Store
from autonomic.strategies import AgentView, ReAct
from autonomic.tools.base import ToolContext
from autonomic.views import render_trace

WINDOW = ContextWindow(max_tokens=1500, reserve_output=200, tool_output_tokens=150)


@tool
def read_page(n: int) -> str:
    """Read page n of the report."""
    return f"page {n}: " + " ".join(f"row{n}-{i}=value{i * n}" for i in range(300))


def brain(pages: int, seen: list[ModelRequest]) -> FunctionModel:
    def decide(request: ModelRequest) -> ScriptItem:
        seen.append(request)
        if request.purpose == "compact":
            return f"summary of {request.messages[1].content.count('page ')} pages"
        asked = sum(1 for r in seen if r.purpose == "act")
        if asked > pages:
            return "all pages read"
        return tool_call("read_page", n=asked)

    return FunctionModel(decide)


async def test_a_long_run_compacts_and_never_exceeds_the_window(store: Store) -> None:
    seen: list[ModelRequest] = []
    agent = Agent(
        "reader",
        model=brain(30, seen),
        tools=[read_page, recall_tool(store)],
        strategy=ContextManaged(ReAct(), WINDOW),
        max_steps=100,
    )
    async with Runtime(store) as rt:
        run = await rt.start(agent, "Read the report pages one by one.")
        result = await run.wait()
        assert result.status == "completed", result
        events = [e async for e in run.events(follow=False)]
        compactions = [e.event for e in events if isinstance(e.event, MemoryCompacted)]
        assert len(compactions) >= 2
        covers = [c.covers for c in compactions]
        assert all(a <= b for a, b in covers) and covers == sorted(covers)
        for request in seen:
            assert request_tokens(request.messages, request.tools, WINDOW.counter) <= WINDOW.budget
        assert "⊟ compacted events " in render_trace(events)
        purposes = [e.event.purpose for e in events if isinstance(e.event, ModelCalled)]
        assert purposes.count("compact") == len(compactions)
        # replay re-derives every request, compaction included, from the log alone
        replayed = await rt.replay(run.run_id, agent=agent)
        assert replayed.status == "completed"
        assert replayed.slot(ContextSlot).compactions == len(compactions)

        # the first page's output was compacted away; recall_events returns it verbatim
        first_result = next(e for e in events if isinstance(e.event, ActionCompleted))
        assert first_result.seq <= compactions[-1].covers[1]
        recall = recall_tool(store)
        text = await recall.invoke({"seq": first_result.seq}, ToolContext(run.run_id, "x"))
        back = json.loads(text)
        assert back["seq"] == first_result.seq
        assert back["observation"].startswith("page 1: row1-0=value0")
        found = await recall.invoke({"query": "row1-299"}, ToolContext(run.run_id, "x"))
        assert found.startswith(f"seq {first_result.seq} (ActionCompleted): …")
        line = found.splitlines()[0]
        assert "row1-299=value299" in line and len(line) < 1000


def test_a_compaction_response_is_recorded_once_then_the_summary_is_used() -> None:
    state = RunState(run_id="r")
    seq = 0

    def apply(event: Event) -> None:
        nonlocal seq
        seq += 1
        state.apply(event, seq, float(seq))

    apply(RunStarted(goal="go", agent="a"))
    for i in range(12):
        apply(ModelResponded(tool_calls=(ToolCall(f"c{i}", "read_page", {"n": i}),)))
        apply(ActionRequested(f"a{i}", f"c{i}", "read_page"))
        apply(ActionCompleted(f"a{i}", read_page.fn(i)))
    strategy = ContextManaged(ReAct(), WINDOW)
    view = AgentView(instructions="Read.", tools=())
    first = strategy.next_step(state, view)
    assert isinstance(first, ModelCall) and first.request.purpose == "compact"
    apply(ModelResponded(text="pages 0-9 read", purpose="compact"))
    second = strategy.next_step(state, view)
    assert isinstance(second, Record)
    (event,) = second.events
    assert isinstance(event, MemoryCompacted) and event.summary == "pages 0-9 read"
    assert event.covers[0] == 2
    apply(event)
    third = strategy.next_step(state, view)
    assert isinstance(third, ModelCall) and third.request.purpose == "act"
    contents = [m.content for m in third.request.messages]
    assert any("pages 0-9 read" in c for c in contents)
    assert request_tokens(third.request.messages, (), WINDOW.counter) <= WINDOW.budget


def test_tool_specs_larger_than_the_window_fail_with_a_clear_reason() -> None:
    huge = ToolSpec("t", "x" * 10_000, {"type": "object"})
    request = ModelRequest(messages=(Message(role="user", content="hi"),), tools=(huge,))
    fitted = fit_request(request, request.messages, ContextSlot(), WINDOW)
    assert isinstance(fitted, str) and "tool specs alone" in fitted
    small = ModelRequest(messages=(Message(role="user", content="hi"),))
    ok = fit_request(small, small.messages, ContextSlot(), WINDOW)
    assert isinstance(ok, Fitted) and ok.stage == "whole" and ok.request == small
