"""Workers on PostgreSQL: runs submitted anywhere are driven by whichever worker claims
them; a worker reports its health, logs each run's transitions, and drains on SIGTERM,
leaving what it could not finish resumable by another."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autonomic import Runtime
from autonomic.errors import AgentNotFound, ConfigError
from autonomic.worker import Worker, load_agents
from worker_agents import paced, quick, slow

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def get_health(port: int) -> tuple[int, dict[str, object]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    data = await reader.read()
    writer.close()
    head, body = data.split(b"\r\n\r\n", 1)
    return int(head.split()[1]), json.loads(body)


async def until(predicate: object, within_s: float = 20.0) -> None:
    async with asyncio.timeout(within_s):
        while not await predicate():  # type: ignore[operator]  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_two_workers_drive_every_submitted_run_once(pg_url: str) -> None:
    port = free_port()
    workers = [
        Worker(pg_url, [quick], concurrency=4, lease_s=30, health_port=port),
        Worker(pg_url, [quick], concurrency=4, lease_s=30),
    ]
    serving = [asyncio.create_task(w.run()) for w in workers]
    try:
        async with Runtime(pg_url, wake=False) as client:
            ids = [(await client.submit(quick, f"job {i}")).run_id for i in range(12)]

            async def all_done() -> bool:
                runs = await client.list_runs(limit=50)
                return sum(r.status == "completed" for r in runs) == len(ids)

            await until(all_done)
            code, health = await get_health(port)
            for run_id in ids:  # each driven by one claim: no lease was ever taken over
                info = await client.get_run(run_id)
                assert (info.lease_epoch, info.recoveries, info.lease_owner) == (1, 0, None)
        assert code == 200 and health["status"] == "serving"
        assert health["agents"] == ["quick"] and health["concurrency"] == 4
        claimed = sum(w.counts["claimed"] for w in workers)
        completed = sum(w.counts["completed"] for w in workers)
        assert claimed == completed == 12
    finally:
        for w in workers:
            w.stop()
        await asyncio.gather(*serving)


async def test_a_draining_worker_releases_what_it_cannot_finish(pg_url: str) -> None:
    port = free_port()
    worker = Worker(pg_url, [slow], lease_s=30, drain_s=2.0, health_port=port)
    serving = asyncio.create_task(worker.run())
    async with Runtime(pg_url, wake=False) as client:
        run_id = (await client.submit(slow, "take your time")).run_id

        async def held() -> bool:
            return (await client.get_run(run_id)).lease_owner is not None

        await until(held)
        worker.stop()
        await asyncio.sleep(0.05)
        code, health = await get_health(port)
        assert code == 503 and health["status"] == "draining"
        started = time.monotonic()
        await serving
        assert time.monotonic() - started < 10
        info = await client.get_run(run_id)
        # released at once, not left for its 30 s lease to expire: claimable by any worker
        assert (info.status, info.lease_owner) == ("running", None)
        claims = await client.store.claim_runs("next-worker", 5, 10)
        assert [c.info.run_id for c in claims] == [run_id] and not claims[0].took_over


async def test_the_worker_command_drains_on_sigterm_and_logs_transitions(pg_url: str) -> None:
    async with Runtime(pg_url, wake=False) as client:
        run_id = (await client.submit(quick, "one job")).run_id
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "autonomic", "worker", "--store", pg_url,
        "--agents", "worker_agents", "--concurrency", "2", "--drain-s", "5",
        env=env, stderr=subprocess.PIPE,
    )  # fmt: skip
    async with Runtime(pg_url, wake=False) as client:

        async def done() -> bool:
            return (await client.get_run(run_id)).status == "completed"

        await until(done, 60)
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    text = err.decode()
    assert proc.returncode == 0, text
    assert f"run {run_id} claimed" in text and f"run {run_id} completed" in text
    assert "serving paced, quick, slow" in text and "draining: 0 run(s) held" in text


async def test_tenant_and_agent_limits_let_the_others_go_first(pg_url: str) -> None:
    worker = Worker(pg_url, [paced, quick], tenant_limit=1, agent_limits={"quick": 1})
    serving = asyncio.create_task(worker.run())
    try:
        async with Runtime(pg_url, wake=False) as client:
            acme = [(await client.submit(paced, "a", tenant="acme")).run_id for _ in range(3)]
            beta = (await client.submit(paced, "b", tenant="beta")).run_id
            quicks = [(await client.submit(quick, "q")).run_id for _ in range(2)]
            held_at_once: set[frozenset[str]] = set()

            async def all_done() -> bool:
                runs = await client.list_runs(limit=20)
                held_at_once.add(frozenset(r.run_id for r in runs if r.lease_owner))
                return all(r.status == "completed" for r in runs)

            await until(all_done, 30)
        for held in held_at_once:  # never two of acme's, nor two quick ones, at once
            assert len(held & set(acme)) <= 1 and len(held & set(quicks)) <= 1, held
        # beta's run did not wait behind acme's backlog: it ran beside acme's first
        assert any(beta in held and held & set(acme) for held in held_at_once)
    finally:
        worker.stop()
        await serving


def test_agents_are_found_by_module_or_path_or_refused_in_one_line() -> None:
    assert [a.name for a in load_agents(["worker_agents"])] == ["quick", "slow", "paced"]
    (agent,) = load_agents(["worker_agents:slow"])
    assert agent is slow and slow.path == "worker_agents:slow"
    with pytest.raises(AgentNotFound, match="cannot import 'no_such_module'"):
        load_agents(["no_such_module"])
    with pytest.raises(AgentNotFound, match=r"defines no autonomic\.Agent"):
        load_agents(["json"])
    with pytest.raises(ConfigError, match="needs agents"):
        Worker("memory://", [])
    bad = subprocess.run(
        [sys.executable, "-m", "autonomic", "worker", "--store", "memory://", "--agents", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "autonomic: error: cannot import 'nope' for its agents: No module named 'nope'"
    ]
