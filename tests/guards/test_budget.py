"""Budgets end to end: reserve before each call, warn, wrap up, wait, top up, go on."""

from __future__ import annotations

from pathlib import Path

import pytest

from autonomic import Agent, Budget, FunctionModel, ModelRequest, Runtime, tool
from autonomic.errors import AgentNotFound, ConfigError
from autonomic.events import (
    BudgetReserved,
    BudgetWarned,
    GuardTripped,
    ModelCalled,
    ModelResponded,
    Suspended,
)
from autonomic.guards.budget import conservative_tokens
from autonomic.loader import read_events
from autonomic.messages import ModelResponse, ToolCall, Usage
from autonomic.models.pricing import register_price

register_price("budget-test", input=100.0, output=200.0)
PRICED = (90 * 100 + 10 * 200) / 1e6
"""What one response of ``worker`` costs at that price."""


@tool
def step(n: int) -> str:
    "Do one step of the work."
    return f"step {n} done"


def worker(steps: int, *, cost: float = PRICED, tokens: int = 100) -> FunctionModel:
    """Calls ``step`` until ``steps`` are done, then answers; with tools disabled it sums up.
    Every response costs ``cost`` and ``tokens``."""

    def answer(request: ModelRequest) -> ModelResponse:
        done = sum(1 for m in request.messages if m.role == "tool")
        usage = Usage(tokens - 10, 10)
        if not request.tools:
            return ModelResponse(text=f"summary after {done} steps", usage=usage, cost=cost)
        if done >= steps:
            return ModelResponse(text=f"finished {done} steps", usage=usage, cost=cost)
        call = ToolCall(f"c{done}", "step", {"n": done})
        return ModelResponse(tool_calls=(call,), usage=usage, cost=cost)

    return FunctionModel(answer, name="budget-test")


def agent(budget: Budget, steps: int = 6, **kw: float) -> Agent:
    return Agent(
        name="worker", model=worker(steps, **kw), tools=[step], guards=[budget], max_steps=50
    )


async def test_wraps_up_then_waits_then_goes_on_after_a_topup(db_url: str) -> None:
    budget = Budget(cost_usd=0.06, max_tokens=50)
    worker_agent = agent(budget)
    async with Runtime(db_url) as runtime:
        run = await runtime.start(worker_agent, "do six steps")
        waiting = await run.wait_until_waiting()
        assert waiting.status == "waiting", waiting.error
        assert waiting.waiting_for is not None and waiting.waiting_for.startswith("budget: ")
        state = await run.state()
        events = [e.event for e in await read_events(runtime.store, run.run_id)]
        # one wrap-up turn, without tools, whose answer is kept in the transcript
        reserved = [e for e in events if isinstance(e, BudgetReserved)]
        assert len(reserved) == sum(isinstance(e, ModelCalled) for e in events)
        assert [r.wrap_up for r in reserved].count(True) == 1 and reserved[-1].wrap_up
        assert state.messages[-1].content.startswith("summary after")
        assert any(isinstance(e, BudgetWarned) for e in events)
        trips = [e for e in events if isinstance(e, GuardTripped)]
        assert [t.guard for t in trips] == ["budget", "budget"]
        assert "wrap-up turn" in trips[0].detail
        assert isinstance(events[-1], GuardTripped) or isinstance(events[-2], Suspended)
        spent = sum(e.cost or 0 for e in events if isinstance(e, ModelResponded))
        assert spent <= 0.06 + 1e-9

        await runtime.topup(run.run_id, cost_usd=0.50)
        result = await run.wait()
        assert result.answer == "finished 6 steps"
        # nothing was thrown away: every step ran once
        state = await run.state()
        assert [m.content for m in state.messages if m.role == "tool"] == [
            f"step {n} done" for n in range(6)
        ]
        # the warnings and the wrap-up turn are decided again, identically, on replay
        replayed = await runtime.replay(run.run_id, agent=worker_agent)
        assert replayed.answer == "finished 6 steps"


async def test_the_model_is_told_what_is_left_past_the_threshold(db_url: str) -> None:
    seen: list[str] = []
    inner = worker(3)

    async def spy(request: ModelRequest) -> ModelResponse:
        seen.append(request.messages[-1].content)
        return await inner.complete(request)

    model = FunctionModel(spy, name="budget-test")
    guarded = Agent(
        name="spy",
        model=model,
        tools=[step],
        guards=[Budget(model_calls=10, warn_at=0.3)],
    )
    async with Runtime(db_url) as runtime:
        result = await (await runtime.start(guarded, "three steps")).wait()
    assert result.answer == "finished 3 steps"
    notes = [s for s in seen if s.startswith("Budget:")]
    assert notes and "model-call" in notes[0] and "left" in notes[0]
    assert not seen[0].startswith("Budget:")


async def test_tool_call_limit_denies_extra_calls_then_wraps_up(db_url: str) -> None:
    async with Runtime(db_url) as runtime:
        run = await runtime.start(agent(Budget(tool_calls=2)), "six steps")
        waiting = await run.wait_until_waiting()
        state = await run.state()
    assert waiting.waiting_for is not None and "tool-call limit" in waiting.waiting_for
    tool_results = [m.content for m in state.messages if m.role == "tool"]
    assert tool_results[:2] == ["step 0 done", "step 1 done"]
    assert tool_results[2] == "Error: denied by budget: tool-call limit of 2 reached"


async def test_unpriced_responses_count_at_the_highest_price(db_url: str) -> None:
    def unpriced(request: ModelRequest) -> ModelResponse:
        return ModelResponse(text="hi", usage=Usage(1000, 1000), cost=None)

    guarded = Agent(
        name="unpriced",
        model=FunctionModel(unpriced, name="budget-test"),
        guards=[Budget(cost_usd=10.0, max_tokens=10)],
    )
    async with Runtime(db_url) as runtime:
        run = await runtime.start(guarded, "say hi")
        await run.wait()
        state = await run.state()
    budget = guarded.guards[0]
    assert isinstance(budget, Budget)
    # the price table's highest prices, not free
    assert budget.used(state)["cost_usd"] >= (1000 * 15 + 1000 * 75) / 1e6


def test_reservation_counts_prompt_and_max_tokens() -> None:
    budget = Budget(tokens=10_000, max_tokens=300)
    text = "x" * 300
    from autonomic.messages import Message

    request = ModelRequest(messages=(Message(role="user", content=text),))
    tokens, _ = budget._reserve(request, "budget-test")
    assert tokens == conservative_tokens(text) + 4 + 300
    counted = Budget(tokens=10_000, max_tokens=300, tokenizer=lambda s: len(s.split()))
    assert counted._reserve(request, "budget-test")[0] == 1 + 4 + 300


def test_bad_budgets_are_refused_with_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="cost_usd"):
        Budget(cost_usd=-1)
    with pytest.raises(ConfigError, match="warn_at"):
        Budget(warn_at=1.5)
    budget = Budget(cost_usd=1)
    with pytest.raises(AttributeError):
        budget.cost_usd = 100  # type: ignore[misc]


async def test_topup_refuses_nonsense(tmp_path: Path) -> None:
    async with Runtime(f"sqlite:///{tmp_path / 'r.db'}") as runtime:
        with pytest.raises(ConfigError, match="positive"):
            await runtime.topup("x", cost_usd=-1)
        with pytest.raises(ConfigError, match="say what to add"):
            await runtime.topup("x")


def test_counting_a_run_prompt_by_prompt_matches_counting_each_from_scratch() -> None:
    from autonomic.messages import Message

    def fresh(request: ModelRequest) -> int:
        return Budget()._reserve(request, "budget-test", "r")[0]

    budget = Budget()
    messages: list[Message] = [Message(role="system", content="be brief")]
    for n in range(12):
        messages.append(Message(role="user", content=f"turn {n} " * n))
        if n == 6:  # a strategy that rewrites an earlier message (a summary, say)
            messages[1] = Message(role="user", content="a summary of what happened " * 9)
        request = ModelRequest(messages=tuple(messages))
        assert budget._reserve(request, "budget-test", "r")[0] == fresh(request)


async def test_out_of_wall_time_the_run_wraps_up_and_waits(db_url: str) -> None:
    import asyncio

    inner = worker(50)

    async def slow(request: ModelRequest) -> ModelResponse:
        await asyncio.sleep(0.05)
        return await inner.complete(request)

    timed = Agent(
        name="timed",
        model=FunctionModel(slow, name="budget-test"),
        tools=[step],
        guards=[Budget(wall_s=0.12)],
        max_steps=100,
    )
    async with Runtime(db_url) as runtime:
        run = await runtime.start(timed, "many steps")
        waiting = await run.wait_until_waiting()
        state = await run.state()
    assert waiting.waiting_for is not None and "wall-time limit of 0.1s" in waiting.waiting_for
    assert state.messages[-1].content.startswith("summary after")
    assert 2 <= waiting.model_calls <= 5


async def test_a_process_that_cannot_load_the_agent_still_tops_it_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A top-up is the runtime's own data (amounts): it needs no guard to screen it, so an
    operator's process that does not know the agent can still raise its budget. Data a
    person sends is refused there instead, since its guards could not screen it."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    async with Runtime(url) as runtime:
        run = await runtime.start(agent(Budget(cost_usd=0.06, max_tokens=50)), "do six steps")
        assert (await run.wait_until_waiting()).status == "waiting"
    async with Runtime(url, wake=False) as operator:

        async def unknown(name: str, path: str | None, *, run_id: str = "") -> Agent:
            raise AgentNotFound(f"agent {name!r} is not importable here")

        monkeypatch.setattr(operator.registry, "load", unknown)
        await operator.topup(run.run_id, cost_usd=0.50)
        with pytest.raises(ConfigError, match="cannot screen the signal data"):
            await operator.signal(run.run_id, "note", {"text": "hello"})
        inbox = await operator.store.read_inbox(run.run_id)
    assert len(inbox) == 1
