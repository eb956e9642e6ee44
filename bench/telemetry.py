"""What watching runs costs them: the commit tap's overhead per step.

Runs the same scripted agents (each run: ``--steps`` tool calls, then an answer) on a
SQLite store plain, with ``instrument(runtime)`` counting metrics, and with metrics and
live export to an in-memory span exporter, in alternating rounds. Reports the wall and
CPU time per step (one model call + one tool call) of each and the difference to plain
(the tap's observers share the event loop with the runs), the cost of one
``CommitTap.offer`` on the committing task, and how many batches the tap dropped.

    PYTHONPATH=src python bench/telemetry.py [--runs 50] [--steps 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from autonomic import Agent, Runtime, ScriptedModel, tool, tool_call
from autonomic.events import RunStarted, encode_event
from autonomic.telemetry import CommitTap, instrument


@tool
def add(a: int, b: int) -> int:
    "Add two integers."
    return a + b


MODES = ("plain", "metrics", "metrics+export")


async def one_round(db: str, runs: int, steps: int, mode: str) -> dict[str, float]:
    script: list[object] = [tool_call("add", a=i, b=1) for i in range(steps)] + ["done"]
    async with Runtime(db) as rt:
        inst = None
        if mode != "plain":
            exporter = InMemorySpanExporter() if mode == "metrics+export" else None
            inst = instrument(rt, exporter=exporter)
        started, cpu = time.perf_counter(), time.process_time()
        handles = [
            await rt.start(Agent(name="calc", model=ScriptedModel(script), tools=[add]), "go")
            for _ in range(runs)
        ]
        for handle in handles:
            await handle.wait()
        dropped = 0.0
        if inst is not None:
            await inst.tap.drain()
            dropped = inst.tap.dropped
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    steps_done = runs * steps
    return {
        "us_per_step": elapsed / steps_done * 1e6,
        "cpu_us_per_step": cpu / steps_done * 1e6,
        "dropped": dropped,
    }


async def offer_cost(n: int = 100_000) -> float:
    """Nanoseconds per ``offer`` (what a commit pays), observers idle meanwhile."""
    tap = CommitTap(maxsize=n + 1)
    batch = [encode_event(RunStarted(goal="g", agent="a"), 1.0)]
    started = time.perf_counter()
    for _ in range(n):
        tap.offer("r", 1, batch)
    elapsed = time.perf_counter() - started
    await tap.stop()
    return elapsed / n * 1e9


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    cpu: dict[str, list[float]] = {mode: [] for mode in MODES}
    dropped = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            for mode in MODES:
                db = f"sqlite:///{Path(tmp) / f'r{i}-{mode}.db'}"
                result = await one_round(db, args.runs, args.steps, mode)
                times[mode].append(result["us_per_step"])
                cpu[mode].append(result["cpu_us_per_step"])
                dropped += result["dropped"]
    median = {mode: statistics.median(t) for mode, t in times.items()}
    plain = median["plain"]
    report: dict[str, object] = {
        "benchmark": "telemetry_tap_overhead",
        "runs": args.runs,
        "steps_per_run": args.steps,
        "rounds": args.rounds,
        "offer_ns": round(await offer_cost(), 1),
        "dropped_batches": dropped,
        "python": platform.python_version(),
    }
    plain_cpu = statistics.median(cpu["plain"])
    for mode, value in median.items():
        mode_cpu = statistics.median(cpu[mode])
        report[f"{mode}_wall_us_per_step"] = round(value, 1)
        report[f"{mode}_cpu_us_per_step"] = round(mode_cpu, 1)
        if mode != "plain":
            report[f"{mode}_wall_overhead_us_per_step"] = round(value - plain, 1)
            report[f"{mode}_cpu_overhead_us_per_step"] = round(mode_cpu - plain_cpu, 1)
    print(json.dumps(report))


if __name__ == "__main__":
    asyncio.run(main())
