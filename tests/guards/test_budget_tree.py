"""Hierarchical budgets: a child is given a share of its parent's remainder, the unused
part comes back when it ends, and a tree of runs never spends more than its root was
given: also when the runtime is stopped in the middle of a model call (the log a kill -9
leaves) and the runs resumed by a new one, and when a process driving the tree is killed
with SIGKILL and another resumes it."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from autonomic import Runtime
from autonomic.events import ChildCompleted, ChildSpawned, RunStarted
from autonomic.guards.budget import BudgetLedger, ledger_spent
from autonomic.loader import read_events
from guards.budget_tree import Tree, agents, settle


async def grow(db: str, seed: int, budget: float, crash_at: int | None) -> tuple[Tree, float]:
    tree = Tree(seed, crash_at)
    made = agents(tree, budget)
    root = made[-1]
    async with Runtime(db, agents=made, poll_s=0.05, lease_s=2) as runtime:
        run = await runtime.start(root, "node 0", run_id="root")
        await settle(runtime, tree.crashed)
    if tree.crashed.is_set():
        async with Runtime(db, agents=made, poll_s=0.05, resume_incomplete=True) as runtime:
            await runtime.resume_incomplete()
            await settle(runtime)
            state = await runtime.state(run.run_id)
    else:
        async with Runtime(db, agents=made, wake=False) as runtime:
            state = await runtime.state(run.run_id)
    return tree, ledger_spent(state)["cost_usd"]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    seed=st.integers(0, 2**32),
    budget=st.floats(0.004, 0.3),
    crash_at=st.none() | st.integers(1, 12),
)
def test_a_tree_never_spends_more_than_its_root_was_given(
    seed: int, budget: float, crash_at: int | None
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{Path(tmp) / 'runs.db'}"
        tree, counted = asyncio.run(grow(db, seed, budget, crash_at))
    assert tree.charged <= budget + 1e-9
    # the root's ledger counts at least what was really charged (a call cut short by
    # the stop included), and never more than it was given
    assert tree.charged <= counted + 1e-9 <= budget + 2e-9


async def test_a_child_is_given_a_share_and_the_rest_comes_back(db_url: str) -> None:
    tree = Tree(seed=0, crash_at=None)
    made = agents(tree, 0.5)
    tree.node = lambda path: (1 if path == "0" else 0, random.Random(path))  # type: ignore[method-assign]
    async with Runtime(db_url, agents=made) as runtime:
        run = await runtime.start(made[-1], "node 0")
        result = await run.wait()
        assert result.answer == "0 done"
        events = [e.event for e in await read_events(runtime.store, run.run_id)]
        spawned = next(e for e in events if isinstance(e, ChildSpawned))
        ended = next(e for e in events if isinstance(e, ChildCompleted))
        child_start = (await read_events(runtime.store, spawned.child_run_id))[0].event
        state = await runtime.state(run.run_id)
    assert spawned.budget is not None and 0 < spawned.budget["cost_usd"] < 0.25
    assert isinstance(child_start, RunStarted) and child_start.budget == spawned.budget
    assert ended.spent is not None and 0 < ended.spent["cost_usd"] < spawned.budget["cost_usd"]
    ledger = state.slot(BudgetLedger)
    assert not ledger.held  # returned: only what the child spent is counted
    assert ledger.children_cost == ended.spent["cost_usd"]
    assert abs(ledger_spent(state)["cost_usd"] - tree.charged) < 1e-9


HERE = Path(__file__).parent


def kill_after(proc: subprocess.Popen[bytes], bill: Path, calls: int) -> None:
    """SIGKILL the process once the provider has billed ``calls`` calls."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        if bill.exists() and len(bill.read_text().split()) >= calls:
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.parametrize(("seed", "calls"), [(3, 2), (9, 5), (15, 9)])
def test_a_tree_killed_mid_run_and_resumed_stays_within_its_budget(
    tmp_path: Path, seed: int, calls: int
) -> None:
    budget = 0.3
    db, bill = f"sqlite:///{tmp_path / 'runs.db'}", tmp_path / "bill.txt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent.parent / "src")])}
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "budget_tree.py"), db, str(seed), str(budget), str(bill)],
        env=env,
    )
    kill_after(proc, bill, calls)
    billed_before = len(bill.read_text().split())
    assert billed_before >= calls  # killed mid-run, not after the tree settled

    async def resume() -> float:
        tree = Tree(seed, None, bill)
        made = agents(tree, budget)
        async with Runtime(
            db, agents=made, poll_s=0.05, lease_s=0.5, resume_incomplete=True
        ) as runtime:
            await settle(runtime)
            return ledger_spent(await runtime.state("root"))["cost_usd"]

    counted = asyncio.run(resume())
    charged = sum(float(line) for line in bill.read_text().split())
    assert len(bill.read_text().split()) > billed_before  # the tree went on after the kill
    assert charged <= counted + 1e-9 <= budget + 2e-9
