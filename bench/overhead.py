"""Runtime overhead per durable step, and throughput of many concurrent agents.

(a) one agent, N tool round-trips (ScriptedModel, a no-op tool, SQLite file on disk):
    ms per step and bytes written, for N = 50, 100, 500, to show the cost stays flat.
(b) 1000 agents x 5 round-trips at once, the model awaiting 50 ms per call:
    wall time, agent-steps per second, peak RSS.

Prints one JSON object per scenario. Usage: python bench/overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from autonomic import Agent, Runtime, ScriptedModel, tool, tool_call
from autonomic.store.sqlite import SQLiteStore


@tool
async def noop(i: int) -> str:
    "Do nothing."
    return "ok"


def agent_for(steps: int, latency: float = 0.0) -> Agent:
    script: list[object] = [tool_call("noop", i=i) for i in range(steps)] + ["done"]
    return Agent(
        name="bench",
        model=ScriptedModel(script, latency=latency),
        tools=[noop],
        max_steps=steps + 2,
    )


def process_write_bytes() -> int:
    """Bytes this process handed to write(2) so far (WAL frames included)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    return 0


def files_size(db: Path) -> int:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))


async def single_agent(steps: int, folder: Path) -> dict[str, object]:
    db = folder / f"single-{steps}.db"
    store = SQLiteStore(f"sqlite:///{db}")
    async with Runtime(store) as runtime:
        agent = agent_for(steps)
        await (await runtime.start(agent_for(3), "warm up")).wait()
        logical_before, wchar_before = store.bytes_written, process_write_bytes()
        started, cpu_started = time.perf_counter(), time.process_time()
        run = await runtime.start(agent, "loop")
        result = await run.wait()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        logical = store.bytes_written - logical_before
        physical = process_write_bytes() - wchar_before
    assert result.status == "completed", result
    return {
        "scenario": "single_agent",
        "steps": steps,
        "events": result.events,
        "ms_per_step": round(elapsed * 1000 / steps, 4),
        "cpu_ms_per_step": round(cpu * 1000 / steps, 4),
        "bytes_written": logical,
        "bytes_per_step": round(logical / steps, 1),
        "disk_bytes_written": physical,
        "disk_bytes_per_step": round(physical / steps, 1),
        "store_file_bytes": files_size(db),
    }


async def many_agents(
    agents: int, round_trips: int, latency: float, folder: Path
) -> dict[str, object]:
    db = folder / "many.db"
    async with Runtime(f"sqlite:///{db}") as runtime:
        agent = agent_for(round_trips, latency)
        started, cpu_started = time.perf_counter(), time.process_time()
        runs = await asyncio.gather(*(runtime.start(agent, f"goal {i}") for i in range(agents)))
        results = await asyncio.gather(*(run.wait() for run in runs))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    assert all(r.status == "completed" for r in results)
    steps = agents * round_trips
    model_calls = round_trips + 1
    return {
        "scenario": "many_agents",
        "agents": agents,
        "round_trips": round_trips,
        "model_latency_ms": latency * 1000,
        "wall_s": round(elapsed, 3),
        "cpu_s": round(cpu, 3),
        "ideal_wall_s": round(model_calls * latency, 3),
        "agent_steps": steps,
        "agent_steps_per_s": round(steps / elapsed, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


async def main(quick: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="autonomic-bench-") as tmp:
        folder = Path(tmp)
        for steps in (50, 100) if quick else (50, 100, 500):
            gc.collect()  # each scenario starts from a clean heap, not the last one's garbage
            print(json.dumps(await single_agent(steps, folder)), flush=True)
        agents = 100 if quick else 1000
        gc.collect()
        print(json.dumps(await many_agents(agents, 5, 0.05, folder)), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    asyncio.run(main(parser.parse_args().quick))
    sys.exit(0)
