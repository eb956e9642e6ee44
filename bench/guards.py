"""The safety guards' figures: PII detection quality and speed, the injection suite with and
without the defence, and what the full guard stack (without a critic) adds to each step.

(a) PII: F1, precision and recall of the regex tier on the synthetic labelled corpus
    (tests/guards/data/pii_snippets.jsonl, made by bench/pii_dataset.py); p50/p95 ms to
    scan 10,000 characters.
(b) Injection: the 54 attack cases and 5 legitimate tasks of ``autonomic.guards.attacks``
    with a model that obeys any instruction it reads: unauthorised side-effecting calls
    with the defence off and on, and legitimate tasks that got their side effect.
(c) Overhead: one agent making N tool round-trips (ScriptedModel, a no-op tool, in-memory
    store) with no guards and with Budget + PIIGuard + InjectionGuard + LoopGuard; the
    difference in CPU time per round-trip (median of alternating trials). CPU time, since
    on a shared machine wall time mostly measures the neighbours.

Prints one JSON object. Usage: python bench/guards.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path

from autonomic import Agent, Runtime, ScriptedModel, tool, tool_call
from autonomic.guards import Budget, InjectionGuard, LoopGuard, PIIGuard, RegexDetector
from autonomic.guards.attacks import run_suite
from autonomic.guards.base import Guard

DATA = Path(__file__).resolve().parent.parent / "tests" / "guards" / "data" / "pii_snippets.jsonl"


def pii_figures(trials: int) -> dict[str, object]:
    rows = [json.loads(line) for line in DATA.read_text().splitlines()]
    detector = RegexDetector()
    tp = fp = fn = 0
    for row in rows:
        gold = {tuple(s) for s in row["spans"]}
        found = {(d.start, d.end, d.entity_type) for d in detector.analyze(row["text"])}
        tp, fp, fn = tp + len(gold & found), fp + len(found - gold), fn + len(gold - found)
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    corpus = " ".join(row["text"] for row in rows)
    texts = [corpus[i * 10_000 : (i + 1) * 10_000] for i in range(len(corpus) // 10_000)]
    times, cpu = [], []
    for n in range(trials):
        text = texts[n % len(texts)]
        started, cpu_started = time.perf_counter(), time.thread_time()
        detector.analyze(text)
        cpu.append((time.thread_time() - cpu_started) * 1000)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    cpu.sort()
    return {
        "pii_snippets": len(rows),
        "pii_entities": tp + fn,
        "pii_f1": round(2 * precision * recall / (precision + recall), 4),
        "pii_precision": round(precision, 4),
        "pii_recall": round(recall, 4),
        "pii_p50_ms_per_10k_chars": round(times[len(times) // 2], 3),
        "pii_p95_ms_per_10k_chars": round(times[int(len(times) * 0.95)], 3),
        "pii_p95_cpu_ms_per_10k_chars": round(cpu[int(len(cpu) * 0.95)], 3),
    }


async def injection_figures() -> dict[str, object]:
    off = await run_suite(defended=False)
    on = await run_suite(defended=True)
    return {
        "injection_attacks": on.attacks,
        "unauthorised_calls_undefended": off.unauthorised_calls,
        "unauthorised_calls_defended": on.unauthorised_calls,
        "legitimate_tasks": on.legitimate,
        "legitimate_succeeded_undefended": off.legitimate_succeeded,
        "legitimate_succeeded_defended": on.legitimate_succeeded,
    }


@tool
async def noop(i: int) -> str:
    "Do nothing."
    return "ok"


def stack() -> list[Guard]:
    return [
        Budget(cost_usd=1000.0),
        PIIGuard(key=os.urandom(32)),
        InjectionGuard(),
        LoopGuard(),
    ]


async def timed_run(runtime: Runtime, steps: int, guards: list[Guard], name: str) -> float:
    script: list[object] = [tool_call("noop", i=i) for i in range(steps)] + ["done"]
    agent = Agent(
        name=name,
        model=ScriptedModel(script),
        tools=[noop],
        guards=guards,
        max_steps=steps + 2,
    )
    started = time.process_time()
    result = await (await runtime.start(agent, "loop over the items")).wait()
    elapsed = time.process_time() - started
    assert result.status == "completed", result
    return elapsed * 1000 / steps


async def overhead_figures(steps: int, trials: int) -> dict[str, object]:
    bare, guarded = [], []
    async with Runtime("memory://") as runtime:
        await timed_run(runtime, 5, stack(), "warm-guarded")
        await timed_run(runtime, 5, [], "warm-bare")
        for n in range(trials):
            bare.append(await timed_run(runtime, steps, [], f"bare-{n}"))
            guarded.append(await timed_run(runtime, steps, stack(), f"guarded-{n}"))
    base, full = statistics.median(bare), statistics.median(guarded)
    return {
        "overhead_steps": steps,
        "cpu_ms_per_step_no_guards": round(base, 4),
        "cpu_ms_per_step_guard_stack": round(full, 4),
        "guard_overhead_cpu_ms_per_step": round(full - base, 4),
        "guard_stack": ["budget", "pii", "injection", "loops"],
    }


async def main(quick: bool) -> None:
    figures: dict[str, object] = {}
    figures.update(pii_figures(200 if quick else 2000))
    figures.update(await injection_figures())
    figures.update(await overhead_figures(50 if quick else 200, 3 if quick else 7))
    print(json.dumps(figures))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer trials")
    asyncio.run(main(parser.parse_args().quick))
