"""What watching runs costs them: the commit tap's overhead per step.

Runs the same scripted agents (each run: ``--steps`` tool calls, then an answer) on a
SQLite store twice, plain and with ``instrument(runtime)`` (metrics and live export to an
in-memory span exporter), alternating rounds, and reports the wall time per step (one
model call + one tool call) of each, the difference, the cost of one ``CommitTap.offer``
on the committing task, and how many batches the tap dropped.

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


async def one_round(db: str, runs: int, steps: int, instrumented: bool) -> dict[str, float]:
    script: list[object] = [tool_call("add", a=i, b=1) for i in range(steps)] + ["done"]
    async with Runtime(db) as rt:
        inst = instrument(rt, exporter=InMemorySpanExporter()) if instrumented else None
        started = time.perf_counter()
        handles = [
            await rt.start(Agent(name="calc", model=ScriptedModel(script), tools=[add]), "go")
            for _ in range(runs)
        ]
        for handle in handles:
            await handle.wait()
        elapsed = time.perf_counter() - started
        dropped = 0.0
        if inst is not None:
            await inst.tap.drain()
            dropped = inst.tap.dropped
    return {"us_per_step": elapsed / (runs * steps) * 1e6, "dropped": dropped}


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
    plain: list[float] = []
    tapped: list[float] = []
    dropped = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            for instrumented in (False, True):
                db = f"sqlite:///{Path(tmp) / f'r{i}{instrumented}.db'}"
                result = await one_round(db, args.runs, args.steps, instrumented)
                (tapped if instrumented else plain).append(result["us_per_step"])
                dropped += result["dropped"]
    p, t = statistics.median(plain), statistics.median(tapped)
    print(
        json.dumps(
            {
                "benchmark": "telemetry_tap_overhead",
                "runs": args.runs,
                "steps_per_run": args.steps,
                "rounds": args.rounds,
                "plain_us_per_step_median": round(p, 1),
                "instrumented_us_per_step_median": round(t, 1),
                "overhead_us_per_step": round(t - p, 1),
                "overhead_pct": round((t - p) / p * 100, 1),
                "offer_ns": round(await offer_cost(), 1),
                "dropped_batches": dropped,
                "python": platform.python_version(),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
