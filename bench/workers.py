"""Worker processes on PostgreSQL and SQLite: steps/s and runs/s with 1, 2 and 4 workers,
and how fast a hint crosses processes on the PostgreSQL bus.

Each run makes ``--steps`` model turns (a ScriptedModel answering after 50 ms, as a fast
real model would; every turn but the last calls a tool), so a step is one model turn and
its commits. Workers are ``autonomic worker`` processes started here and ready before the
clock starts; the runs are submitted (``Runtime.submit``, as ``run --detach`` does) once
the clock runs, and the clock stops when all have ended. The design's target load is 1M
agents x 10 turns a day = 116 steps/s *sustained*; ``target_load_headroom`` is the best
PostgreSQL figure over it (target >= 40x). So the default is 4,000 runs (about 8 s a row):
with a few hundred, a row lasts about a second and measures mostly the ramp up and the
tail. A run spends most of its time waiting for its model, so a worker holds 400 at once
by default (``autonomic worker --concurrency 400``); ``--concurrency 200`` shows how
much of the figure is that choice. Bus latency: publish in this process -> received by a
subscriber in another process, through LISTEN/NOTIFY (p50/p99).

The machine's load blurs wall-clock figures, so each row also gives the workers' CPU time
per step and, on PostgreSQL, the server's (the CPU, while the clock ran, of the backends
of the bench's connections, told apart by their ``application_name``, and of the server's
own processes); ``cpu_bound_headroom`` is what the machine's cores would carry at that
CPU per step were nothing else running.

Usage: python bench/workers.py [--runs 4000] [--steps 10] [--concurrency 400]
       [--workers 1,2,4] [--pg postgresql://postgres@127.0.0.1/postgres]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bus import latency_across  # bench/bus.py: one way to time a hint across processes

HERE = Path(__file__).parent
TARGET_STEPS_PER_S = 1_000_000 * 10 / 86_400
APP = "autonomic-bench-workers"  # the application_name of the bench's connections
AGENTS = """
import os
from autonomic import Agent, ScriptedModel, tool, tool_call

STEPS = int(os.environ.get("BENCH_STEPS", "10"))


@tool(idempotent=True)
async def tick(i: int) -> str:
    "Advance."
    return f"tick {i}"


stepper = Agent(
    name="stepper",
    model=ScriptedModel(
        [tool_call("tick", i=k) for k in range(STEPS - 1)] + ["done"], latency=0.05
    ),
    tools=[tick],
    max_steps=STEPS + 2,
)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _healthy(port: int) -> bool:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.write(b"GET /health HTTP/1.1\r\n\r\n")
    data = await reader.read()
    writer.close()
    return data.startswith(b"HTTP/1.1 200")


def _drop_schema(base: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


async def _ended(store: Any) -> int:
    runs = await store.list_runs(limit=100_000)
    return sum(r.status in ("completed", "failed", "dead", "cancelled") for r in runs)


def _cpu_s(procs: list[subprocess.Popen[bytes]]) -> float:
    """CPU seconds (user and system) the processes have used so far."""
    total = 0
    for proc in procs:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


def _server_cpu(pg: str, app: str) -> dict[int, float]:
    """CPU seconds so far of the PostgreSQL server's processes that work for this bench:
    the backends of connections named ``app`` (the workers' and this process's) and the
    server's own (WAL writer, checkpointer...). Other clients of the server are left out
    (their backends come and go, which would blur the figure either way)."""
    import psycopg

    with psycopg.connect(pg, autocommit=True) as conn:
        pids = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s "
            "OR backend_type <> 'client backend'",
            (app,),
        ).fetchall()
    cpu = {}
    for (pid,) in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        cpu[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return cpu


def _spawn(
    url: str, ports: list[int], concurrency: int, env: dict[str, str], log: Path
) -> tuple[Any, list[subprocess.Popen[bytes]]]:
    """Start a worker process per health port, ready when its /health answers."""
    logs = open(log, "ab")  # noqa: SIM115 (closed by the caller)
    command = [sys.executable, "-m", "autonomic", "worker", "--store", url]
    command += ["--agents", "bench_agents", "--concurrency", str(concurrency)]
    command += ["--poll-s", "0.2", "--drain-s", "0"]
    procs = [
        subprocess.Popen([*command, "--health-port", str(port)], env=env, stdout=logs, stderr=logs)
        for port in ports
    ]
    return logs, procs


async def measure(
    url: str, workers: int, args: argparse.Namespace, agents_dir: Path
) -> dict[str, Any]:
    from autonomic import Runtime
    from autonomic.worker import load_agents

    env = {
        **os.environ,
        "BENCH_STEPS": str(args.steps),
        "PYTHONPATH": os.pathsep.join([str(agents_dir), *sys.path]),
    }
    ports = [_free_port() for _ in range(workers)]
    logs, procs = _spawn(url, ports, args.concurrency, env, agents_dir / f"workers-{workers}.log")
    try:
        async with asyncio.timeout(120):
            for port in ports:
                while not await _healthy(port):  # noqa: ASYNC110 (another process)
                    await asyncio.sleep(0.05)
        sys.path.insert(0, str(agents_dir))
        os.environ["BENCH_STEPS"] = str(args.steps)
        (agent,) = load_agents(["bench_agents:stepper"])
        async with Runtime(url, wake=False) as client:
            cpu_before = _cpu_s(procs)
            server_before = _server_cpu(args.pg, APP) if url.startswith("postgresql") else {}
            started = time.perf_counter()
            for first in range(0, args.runs, 50):  # as many clients submitting at once
                await asyncio.gather(
                    *(
                        client.submit(agent, f"job {i}")
                        for i in range(first, min(first + 50, args.runs))
                    )
                )
            submitted = time.perf_counter() - started
            async with asyncio.timeout(args.deadline_s):
                while await _ended(client.store) < args.runs:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - started
            cpu = _cpu_s(procs) - cpu_before
            server_after = _server_cpu(args.pg, APP) if url.startswith("postgresql") else {}
            server = sum(t - server_before.get(pid, 0.0) for pid, t in server_after.items())
            statuses = {r.status for r in await client.list_runs(limit=args.runs + 10)}
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=30)
        logs.close()
    return {
        "workers": workers,
        "runs": args.runs,
        "seconds": round(elapsed, 2),
        "submit_seconds": round(submitted, 2),
        "runs_per_s": round(args.runs / elapsed, 1),
        "steps_per_s": round(args.runs * args.steps / elapsed, 1),
        # what the machine's load cannot blur: the workers' own CPU per step while the
        # clock ran (the server's is not counted)
        "worker_cpu_ms_per_step": round(cpu * 1000 / (args.runs * args.steps), 2),
        # the PostgreSQL server's CPU per step (for the workers and this process)
        **(
            {"server_cpu_ms_per_step": round(server * 1000 / (args.runs * args.steps), 2)}
            if url.startswith("postgresql")
            else {}
        ),
        "statuses": sorted(statuses),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=4000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=400)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--deadline-s", type=float, default=600)
    parser.add_argument(
        "--pg",
        default=os.environ.get(
            "AUTONOMIC_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="autonomic-bench-workers-"))
    (tmp / "bench_agents.py").write_text(AGENTS)
    result: dict[str, Any] = {
        "machine_cpus": os.cpu_count(),
        "steps_per_run": args.steps,
        "model_latency_s": 0.05,
        "concurrency_per_worker": args.concurrency,
        "postgresql": [],
        "sqlite": [],
    }
    for workers in map(int, args.workers.split(",")):
        schema = "bench_" + secrets.token_hex(4)
        try:
            url = f"{args.pg}?schema={schema}&application_name={APP}"
            row = await measure(url, workers, args, tmp)
        finally:
            _drop_schema(args.pg, schema)
        result["postgresql"].append(row)
        db = tmp / f"bench-{workers}.db"
        result["sqlite"].append(await measure(f"sqlite:///{db}", workers, args, tmp))
    schema = "bench_" + secrets.token_hex(4)
    try:
        from autonomic.store.postgres import PostgresStore

        async with PostgresStore(f"{args.pg}?schema={schema}"):
            pass
        result["postgres_bus_wake"] = await latency_across(f"{args.pg}?schema={schema}", 400)
    finally:
        _drop_schema(args.pg, schema)
    best = max(row["steps_per_s"] for row in result["postgresql"])
    result["target_steps_per_s"] = round(TARGET_STEPS_PER_S, 1)
    result["target_load_headroom"] = round(best / TARGET_STEPS_PER_S, 1)
    result["target_load_headroom_goal"] = 40
    # what these cores would carry were they ours alone: CPU per step, workers and server
    cpu_ms = min(
        row["worker_cpu_ms_per_step"] + row["server_cpu_ms_per_step"]
        for row in result["postgresql"]
    )
    result["cpu_bound_steps_per_s"] = round((os.cpu_count() or 1) * 1000 / cpu_ms, 1)
    result["cpu_bound_headroom"] = round(result["cpu_bound_steps_per_s"] / TARGET_STEPS_PER_S, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
