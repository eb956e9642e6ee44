"""Start-up latency of a sandboxed ``print(1)``: bare interpreter, cold sandbox, warm pool.

Each of the ``--runs`` rounds runs the three side by side, so drift on the machine hits
all three alike. Bare is ``python3 -c 'print(1)'`` as a plain subprocess (the same
interpreter the sandbox uses). Cold starts a fresh bwrap guest per execution; warm takes
a pre-started one, after waiting for the pool to be refilled (as it is between an
agent's tool calls). Each time is until the result is in hand. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from autonomic.sandbox import BwrapSandbox, SandboxResult
from autonomic.sandbox.interpreter import find_interpreter

SETTLE = 0.05
"""Seconds between samples, for the last one's teardown and the pool's refill to finish."""


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return round(statistics.median(ordered), 2), round(p95, 2)


async def _bare(python: str) -> float:
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        python, "-c", "print(1)", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    elapsed = time.perf_counter() - started
    assert out == b"1\n", out
    return elapsed * 1000


async def _timed(sandbox: BwrapSandbox) -> float:
    started = time.perf_counter()
    result: SandboxResult = await sandbox.run_python("print(1)")
    elapsed = time.perf_counter() - started
    assert result.ok and result.stdout == "1\n", result
    return elapsed * 1000


async def main(runs: int) -> dict[str, float]:
    bare: list[float] = []
    cold: list[float] = []
    warm: list[float] = []
    python = find_interpreter(None, None).path
    async with BwrapSandbox(warm=0) as cold_box, BwrapSandbox(warm=2) as warm_box:
        await _timed(cold_box)  # compiles the seccomp filter once, outside the samples
        for _ in range(runs):
            await warm_box.warm_up()
            await asyncio.sleep(SETTLE)
            bare.append(await _bare(python))
            await asyncio.sleep(SETTLE)
            cold.append(await _timed(cold_box))
            await asyncio.sleep(SETTLE)
            warm.append(await _timed(warm_box))
    report: dict[str, float] = {}
    for name, samples in (("bare", bare), ("cold", cold), ("warm", warm)):
        report[f"{name}_p50_ms"], report[f"{name}_p95_ms"] = _percentiles(samples)
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    print(json.dumps(asyncio.run(main(parser.parse_args().runs))))
