"""Runs that wait: what waking one costs, what a waiting run weighs, how fast a long one resumes.

(a) wake latency: a run waits for a signal; the time from ``signal()`` to the run's next
    event in the store, in the same process (target p50 <= 5 ms);
(b) 10,000 suspended runs: RSS growth of the process that suspended them (target <= 20 MB,
    since a waiting run lives only in the store);
(c) resuming a suspended run with 1,000 events: from ``resume()`` to its first new event
    in the store (target <= 2 ms).

SQLite file on disk, scripted models. Prints one JSON object per scenario.
Usage: python bench/waits.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import tempfile
import time
from pathlib import Path

from autonomic import (
    Agent,
    AgentView,
    Await,
    Finish,
    Runtime,
    ScriptedModel,
    Signal,
    Step,
    tool,
    tool_call,
)
from autonomic.state import RunState


class WaitForGo:
    """Waits for a ``go`` signal, then answers."""

    name = "wait-for-go"

    def next_step(self, state: RunState, agent: AgentView) -> Step:
        return Finish("went") if state.signals.get("go") else Await(Signal("go"))


waiter = Agent(name="waiter", model=ScriptedModel([]), strategy=WaitForGo())


@tool
async def noop(i: int) -> str:
    "Do nothing."
    return "ok"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def wake_latency(folder: Path, runs: int) -> dict[str, object]:
    latencies: list[float] = []
    async with Runtime(f"sqlite:///{folder / 'wake.db'}", agents=[waiter]) as rt:
        for i in range(runs):
            run = await rt.start(waiter, f"wait {i}")
            await run.wait_until_waiting()
            before = (await rt.get_run(run.run_id)).last_seq
            async with rt.bus.subscribe(f"run:{run.run_id}") as changes:
                started = time.perf_counter()
                await rt.signal(run.run_id, "go")
                while (await rt.get_run(run.run_id)).last_seq == before:
                    await changes.next(1.0)
                latencies.append((time.perf_counter() - started) * 1000)
            await run.wait()
    return {
        "scenario": "wake_latency",
        "runs": runs,
        "p50_ms": round(statistics.median(latencies), 3),
        "p95_ms": round(percentile(latencies, 0.95), 3),
        "target_p50_ms": 5,
    }


async def suspended_runs(folder: Path, count: int) -> dict[str, object]:
    async with Runtime(f"sqlite:///{folder / 'many.db'}", agents=[waiter]) as rt:
        warm = await rt.start(waiter, "warm up")
        await warm.wait_until_waiting()
        gc.collect()
        before = rss_mb()
        started = time.perf_counter()
        for first in range(0, count, 500):
            handles = await asyncio.gather(
                *(rt.start(waiter, f"wait {i}") for i in range(first, min(count, first + 500)))
            )
            await asyncio.gather(*(h.wait_until_waiting() for h in handles))
        elapsed = time.perf_counter() - started
        gc.collect()
        after = rss_mb()
        waiting = len(await rt.list_runs(status="waiting", limit=count + 10))
        driving = len(rt.supervisor.tasks)
    return {
        "scenario": "suspended_runs",
        "runs": count,
        "waiting_in_store": waiting,
        "driver_tasks_left": driving,
        "suspend_s": round(elapsed, 2),
        "rss_before_mb": round(before, 1),
        "rss_after_mb": round(after, 1),
        "rss_growth_mb": round(after - before, 1),
        "target_growth_mb": 20,
    }


class LongThenWait:
    """Makes ``steps`` tool round-trips, then waits for a ``go`` signal."""

    name = "long-then-wait"

    def __init__(self, inner: object) -> None:
        self.inner = inner

    def next_step(self, state: RunState, agent: AgentView) -> Step:
        if state.signals.get("go"):
            return Finish("went")
        step = self.inner.next_step(state, agent)  # type: ignore[attr-defined]
        return Await(Signal("go")) if isinstance(step, Finish) else step


async def resume_long_run(folder: Path, rounds: int) -> dict[str, object]:
    from autonomic import ReAct

    script: list[object] = [tool_call("noop", i=i) for i in range(333)] + ["rest"]
    agent = Agent(
        name="long",
        model=ScriptedModel(script),
        tools=[noop],
        strategy=LongThenWait(ReAct()),
        max_steps=400,
    )
    url = f"sqlite:///{folder / 'long.db'}"
    times: list[float] = []
    events = 0
    # one runtime drives runs until they wait; another (a worker, say) wakes them later
    async with Runtime(url, wake=False) as first, Runtime(url, wake=False) as second:
        for i in range(rounds):
            run = await first.start(agent, f"long {i}")
            await run.wait_until_waiting()
            events = (await first.get_run(run.run_id)).last_seq
            await second.signal(run.run_id, "go")
            async with second.bus.subscribe(f"run:{run.run_id}") as changes:
                started = time.perf_counter()
                await second.resume(run.run_id, agent=agent)
                while (await second.get_run(run.run_id)).last_seq == events:
                    await changes.next(1.0)
                times.append((time.perf_counter() - started) * 1000)
            await second.handle(run.run_id).wait()
    return {
        "scenario": "resume_long_run",
        "events_before": events,
        "rounds": rounds,
        "p50_ms_to_first_new_event": round(statistics.median(times), 3),
        "min_ms": round(min(times), 3),
        "target_ms": 2,
    }


async def main(quick: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="autonomic-bench-") as tmp:
        folder = Path(tmp)
        print(json.dumps(await wake_latency(folder, 50 if quick else 300)), flush=True)
        print(json.dumps(await suspended_runs(folder, 1000 if quick else 10_000)), flush=True)
        print(json.dumps(await resume_long_run(folder, 3 if quick else 10)), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    asyncio.run(main(parser.parse_args().quick))
