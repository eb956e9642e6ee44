"""Per-tenant budgets: each root run of a tenant is given a share of what the tenant has
left, held until it ends; kept in the store (in memory and SQLite)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from autonomic import Agent, FunctionModel, ModelRequest, Runtime, tool
from autonomic.errors import ConfigError
from autonomic.events import Suspended
from autonomic.guards.budget import Budget, BudgetLedger
from autonomic.messages import ModelResponse, ToolCall, Usage
from autonomic.models.pricing import register_price
from autonomic.store import open_store
from autonomic.store.base import Store, TenantBudgets

register_price("tenant-test", input=100.0, output=200.0)
COST = (90 * 100 + 10 * 200) / 1e6


@tool
def work(n: int) -> str:
    "A step of work."
    return f"worked {n}"


def busy(request: ModelRequest) -> ModelResponse:
    """Works forever (until its budget says stop); sums up when tools are disabled."""
    done = sum(1 for m in request.messages if m.role == "tool")
    usage = Usage(90, 10)
    if not request.tools:
        return ModelResponse(text=f"did {done}", usage=usage, cost=COST)
    call = ToolCall(f"w{done}", "work", {"n": done})
    return ModelResponse(tool_calls=(call,), usage=usage, cost=COST)


# no Budget of its own: its tenant's share is what limits it
worker = Agent(
    name="tenant-worker",
    model=FunctionModel(busy, name="tenant-test"),
    tools=[work],
    max_steps=200,
)


async def test_store_holds_grants_settles_and_tops_up(store: Store) -> None:
    assert isinstance(store, TenantBudgets)
    assert await store.get_tenant_budget("acme") is None
    assert await store.hold_tenant_budget("acme", "r1") is None
    await store.set_tenant_budget("acme", {"cost_usd": 1.0, "tokens": 1000}, 0.5)
    assert await store.hold_tenant_budget("acme", "r1") == {"cost_usd": 0.5, "tokens": 500}
    assert await store.hold_tenant_budget("acme", "r2") == {"cost_usd": 0.25, "tokens": 250}
    assert await store.settle_tenant_budget("acme", "r1", {"cost_usd": 0.1, "tokens": 40})
    assert not await store.settle_tenant_budget("acme", "r1", {"cost_usd": 0.1})  # once only
    budget = await store.get_tenant_budget("acme")
    assert budget is not None
    assert budget.spent == {"cost_usd": 0.1, "tokens": 40}
    assert list(budget.held) == ["r2"]
    assert budget.remaining() == {"cost_usd": 0.65, "tokens": 710}
    budget = await store.topup_tenant("acme", {"cost_usd": 1.0})
    assert budget.limits == {"cost_usd": 2.0, "tokens": 1000}
    with pytest.raises(ConfigError, match="no budget"):
        await store.topup_tenant("nobody", {"cost_usd": 1.0})


async def test_tenant_budgets_survive_reopening_the_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    async with open_store(url) as store:
        assert isinstance(store, TenantBudgets)
        await store.set_tenant_budget("acme", {"cost_usd": 2.0}, 1.0)
        await store.hold_tenant_budget("acme", "r1")
    async with open_store(url) as store:
        assert isinstance(store, TenantBudgets)
        budget = await store.get_tenant_budget("acme")
    assert budget is not None and budget.held == {"r1": {"cost_usd": 2.0}}


async def test_runs_of_a_tenant_share_its_budget_and_give_back_the_rest(db_url: str) -> None:
    async with Runtime(db_url) as runtime:
        await runtime.set_tenant_budget("acme", cost_usd=0.2, run_share=0.5)
        first = await runtime.start(worker, "work", tenant="acme")
        waiting = await first.wait_until_waiting()
        assert waiting.waiting_for is not None and waiting.waiting_for.startswith("budget: ")
        assert waiting.cost <= 0.1 + 1e-9  # its share: half of what the tenant had
        held = await runtime.tenant_budget("acme")
        assert held is not None and held.held[first.run_id] == {"cost_usd": 0.1}
        await first.cancel()
        settled = await runtime.tenant_budget("acme")
        assert settled is not None and not settled.held
        assert settled.spent["cost_usd"] == pytest.approx(waiting.cost)
        # the next run is given half of what is left now, not of what was held
        second = await runtime.start(worker, "work", tenant="acme")
        await second.wait_until_waiting()
        now = await runtime.tenant_budget("acme")
        assert now is not None
        assert now.held[second.run_id]["cost_usd"] == pytest.approx((0.2 - waiting.cost) / 2)
        raised = await runtime.topup_tenant("acme", cost_usd=1.0)
        assert raised.limits == {"cost_usd": 1.2}
        # a run of another tenant, or of none, is not limited by acme's budget
        other = await runtime.start(worker, "work", tenant="globex")
        assert (await other.state()).slot(BudgetLedger).inherited is None
        await other.cancel()


async def test_bad_tenant_budgets_are_refused(db_url: str) -> None:
    async with Runtime(db_url) as runtime:
        with pytest.raises(ConfigError, match="limit"):
            await runtime.set_tenant_budget("acme")
        with pytest.raises(ConfigError, match=">= 0"):
            await runtime.set_tenant_budget("acme", cost_usd=-1)
        with pytest.raises(ConfigError, match="run_share"):
            await runtime.set_tenant_budget("acme", cost_usd=1, run_share=2)
        with pytest.raises(ConfigError, match="no budget"):
            await runtime.topup_tenant("acme", cost_usd=1)


# reserves little per call (100 output tokens at most), so a small share goes a few calls
thrifty = dataclasses.replace(worker, name="tenant-thrifty", guards=[Budget(max_tokens=100)])


async def test_topping_up_a_tenant_wakes_its_runs_that_wait_for_budget(db_url: str) -> None:
    async with Runtime(db_url) as runtime:
        await runtime.set_tenant_budget("initech", cost_usd=0.2, run_share=0.5)
        run = await runtime.start(thrifty, "work", tenant="initech")
        first = await run.wait_until_waiting()
        assert first.waiting_for is not None and first.waiting_for.startswith("budget: ")
        assert 0 < first.cost <= 0.1 + 1e-9
        await runtime.topup_tenant("initech", cost_usd=0.2)
        held = await runtime.tenant_budget("initech")
        assert held is not None and set(held.held) == {run.run_id, f"{run.run_id}#topup-1"}
        # half of what is left: 0.4 less the first share
        assert held.held[f"{run.run_id}#topup-1"] == {"cost_usd": pytest.approx(0.15)}
        async with asyncio.timeout(10):  # it works on with its new share, then waits again
            async for stored in runtime.events(run.run_id, after_seq=first.events):
                if isinstance(stored.event, Suspended):
                    break
        again = await run.wait_until_waiting()
        assert first.cost < again.cost <= 0.25 + 1e-9
        assert again.waiting_for is not None and again.waiting_for.startswith("budget: ")
        await run.cancel()
        settled = await runtime.tenant_budget("initech")
        assert settled is not None and not settled.held
        assert settled.spent["cost_usd"] == pytest.approx(again.cost)
