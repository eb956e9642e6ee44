"""The embedded model driving a real agent through the durable runtime, end to end.

A 135M model is a toy: assert structure (every call it makes is valid and ran, the run
ends within its step budget, the log replays), never a particular answer.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from autonomic import Agent, Runtime, tool
from autonomic.events import ActionCompleted, ActionFailed, ActionRequested, ModelResponded
from autonomic.loader import read_events

from .model_fakes import smallest_bundled

pytest.importorskip("xllamacpp", reason='needs pip install "autonomic[local]"')

pytestmark = pytest.mark.slow


@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first number
        b: the second number
    """
    return a + b


@tool
def weather(city: str) -> str:
    """Tell the weather in a city.

    Args:
        city: the city's name
    """
    return f"sunny in {city}"


@pytest.mark.parametrize("goal", ["What is 17 plus 25?", "What is the weather in Paris?"])
async def test_the_embedded_model_runs_an_agent_durably(tmp_path: Path, goal: str) -> None:
    agent = Agent(
        name="local-demo",
        instructions="Use a tool when it helps, then answer in one sentence.",
        model=f"local:{smallest_bundled()}",
        tools=[add, weather],
        max_steps=4,
    )
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    async with Runtime(url) as runtime:
        run = await runtime.start(agent, goal)
        result = await run.wait(check=False)
        events = [s.event for s in await read_events(runtime.store, run.run_id)]
        replayed = await runtime.replay(run.run_id, agent=agent)

    assert result.status in ("completed", "failed")
    assert result.model_calls <= agent.max_steps
    if result.status == "failed":
        assert "step limit reached" in (result.error or "")
    else:
        assert result.answer and result.answer.strip()
    responses = [e for e in events if isinstance(e, ModelResponded)]
    assert len(responses) == result.model_calls
    assert all(r.usage.input_tokens > 0 and r.cost == 0.0 for r in responses)
    for call in (c for r in responses for c in r.tool_calls):
        assert call.error is None and call.name in ("add", "weather")
    requested = {e.action_id for e in events if isinstance(e, ActionRequested)}
    settled = {e.action_id for e in events if isinstance(e, ActionCompleted | ActionFailed)}
    assert requested == settled
    assert not any(isinstance(e, ActionFailed) for e in events), "constrained calls are valid"
    assert replayed.seq == len(events) and replayed.status == result.status
