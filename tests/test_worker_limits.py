"""Concurrency limits hold across the whole PostgreSQL store, not per worker: the claim
counts every process's live leases in the same transaction, so that workers racing each
other cannot go over an agent's or a tenant's limit; priorities order what is claimed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from autonomic import Runtime
from autonomic.events import NewEvent
from autonomic.store import open_store
from autonomic.store.base import ClaimFilter, NewRun
from autonomic.store.postgres import PostgresStore
from worker_agents import paced

HERE = Path(__file__).parent


async def test_racing_claimers_on_separate_connections_never_pass_a_limit(pg_url: str) -> None:
    stores = [open_store(pg_url) for _ in range(4)]
    for s in stores:
        assert isinstance(s, PostgresStore)
        await s.open()
    try:
        first = stores[0]
        for i in range(24):
            run = NewRun(f"r{i}", "x" if i % 2 else "y", "g", tenant="acme" if i < 12 else None)
            started = NewEvent("RunStarted", 1, time.time(), b"{}", {})
            await first.create_run(run, [started], owner=None, lease_s=30)
        limits = ClaimFilter(agent_limits={"x": 3}, tenant_limit=4)
        for _ in range(3):  # rounds: each time, eight claimers on four pools at once
            await asyncio.gather(
                *(s.claim_runs(f"w{n}", 30, 5, limits) for n in range(8) for s in [stores[n % 4]])
            )
        held = [r for r in await first.list_runs(limit=50) if r.lease_owner is not None]
        assert sum(r.agent == "x" for r in held) == 3
        assert sum(r.tenant == "acme" for r in held) == 4
        # y runs without a tenant are limited by nothing: all six were taken
        assert sum(r.agent == "y" and r.tenant is None for r in held) == 6
    finally:
        for s in stores:
            await s.close()


async def test_two_worker_processes_share_one_tenant_limit(pg_url: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    async with Runtime(pg_url, wake=False) as client:
        acme = [(await client.submit(paced, f"a{i}", tenant="acme")).run_id for i in range(4)]
        urgent = (await client.submit(paced, "b", tenant="beta", priority=9)).run_id
        command = [
            sys.executable, "-m", "autonomic", "worker", "--store", pg_url,
            "--agents", "worker_agents:paced", "--concurrency", "4", "--poll-s", "0.2",
            "--tenant-limit", "1",
        ]  # fmt: skip
        procs = [
            await asyncio.create_subprocess_exec(*command, env=env, stderr=subprocess.PIPE)
            for _ in range(2)
        ]
        held_at_once: list[set[str]] = []
        try:
            async with asyncio.timeout(60):
                while True:
                    runs = await client.list_runs(limit=20)
                    held_at_once.append({r.run_id for r in runs if r.lease_owner})
                    if all(r.status == "completed" for r in runs):
                        break
                    await asyncio.sleep(0.05)
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.terminate()
            logs = [(await p.communicate())[1].decode() for p in procs]
        for held in held_at_once:  # never two of acme's at once, whichever worker held them
            assert len(held & set(acme)) <= 1, (held, logs)
        # beta's urgent run was claimed beside acme's first one, not behind acme's backlog
        first_claims = [held for held in held_at_once if held][0:3]
        assert any(urgent in held for held in first_claims), (held_at_once[:5], logs)
        assert sum(log.count(" claimed") for log in logs) == 5, logs
