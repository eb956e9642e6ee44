"""Several processes writing to one SQLite store at once: nothing lost, nothing interleaved."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

from autonomic import Runtime
from autonomic.events import RunCompleted
from autonomic.loader import read_events

WORKER = """
import asyncio, sys
from autonomic import Agent, Runtime, ScriptedModel, tool, tool_call

@tool
async def noop(i: int) -> str:
    "Do nothing."
    return "ok"

agent = Agent(name="w", model=ScriptedModel([tool_call("noop", i=i) for i in range(15)] + ["done"]),
              tools=[noop], max_steps=20)

async def main():
    async with Runtime(sys.argv[1]) as rt:
        runs = await asyncio.gather(*(rt.start(agent, f"goal {i}") for i in range(20)))
        await asyncio.gather(*(r.wait() for r in runs))

asyncio.run(main())
"""


async def test_three_processes_share_one_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, str(script), url, stderr=subprocess.PIPE
        )
        for _ in range(3)
    ]
    for proc in procs:
        _, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()
    conn = sqlite3.connect(tmp_path / "shared.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()
    async with Runtime(url) as rt:
        runs = await rt.list_runs(limit=100)
        assert len(runs) == 60 and all(r.status == "completed" for r in runs)
        for info in runs:
            events = await read_events(rt.store, info.run_id)
            assert [e.seq for e in events] == list(range(1, info.last_seq + 1))
            assert isinstance(events[-1].event, RunCompleted)
            assert info.last_seq == 1 + 15 * 4 + 3
