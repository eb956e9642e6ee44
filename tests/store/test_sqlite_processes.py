"""Several processes on one SQLite file: nothing lost, nothing interleaved, no run claimed
by two of them."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import time
from pathlib import Path

import autonomic
from autonomic.events import NewEvent
from autonomic.store.base import NewRun
from autonomic.store.sqlite import SQLiteStore

SRC = str(Path(autonomic.__file__).parents[1])

PRELUDE = """
import asyncio, json, os, sys, time
from pathlib import Path
from autonomic.events import NewEvent
from autonomic.store.base import Commit, Lease, NewRun
from autonomic.store.sqlite import SQLiteStore

url, me, folder, workers = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])

def event(text):
    return NewEvent("Thought", 1, time.time(), json.dumps({"text": text}).encode())

async def everyone_ready():
    (folder / f"{me}.ready").touch()
    while len(list(folder.glob("*.ready"))) < workers:
        await asyncio.sleep(0.01)
"""

CLAIMER = (
    PRELUDE
    + """
async def main():
    taken = []
    async with SQLiteStore(url) as store:
        await everyone_ready()
        while claims := await store.claim_runs(me, 30, 3):
            for claim in claims:
                info = claim.info
                await store.commit(Commit(
                    info.run_id, info.last_seq, [event(me)], claim.lease,
                    status="completed", release=True,
                ))
                taken.append(info.run_id)
            await asyncio.sleep(0.001)
    print(json.dumps(taken))

asyncio.run(main())
"""
)

COMMITTER = (
    PRELUDE
    + """
async def main():
    async with SQLiteStore(url) as store:
        await everyone_ready()

        async def drive(i):
            run = NewRun(f"{me}-{i}", "a", "g")
            info = await store.create_run(run, [event("start")], owner=me, lease_s=60)
            lease, seq = Lease(me, info.lease_epoch), info.last_seq
            for n in range(15):
                last = n == 14
                done = await store.commit(Commit(
                    run.run_id, seq, [event(f"{n}a"), event(f"{n}b")], lease,
                    status="completed" if last else None, release=last,
                ))
                seq = done.last_seq

        await asyncio.gather(*(drive(i) for i in range(20)))

asyncio.run(main())
"""
)


async def run_workers(script: str, url: str, folder: Path, count: int) -> list[str]:
    path = folder / "worker.py"
    path.write_text(script)
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(path),
            url,
            f"w{i}",
            str(folder),
            str(count),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": SRC},
        )
        for i in range(count)
    ]
    outputs = []
    for proc in procs:
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()
        outputs.append(out.decode())
    return outputs


def integrity(path: Path) -> list[tuple[str]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA integrity_check").fetchall()
    finally:
        conn.close()


async def test_processes_claiming_from_one_file_never_take_the_same_run(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    ids = [f"run{i:03}" for i in range(90)]
    async with SQLiteStore(url) as store:
        for run_id in ids:
            start = [NewEvent("RunStarted", 1, time.time(), b"{}")]
            await store.create_run(NewRun(run_id, "a", "g"), start, owner=None, lease_s=1)
    outputs = await run_workers(CLAIMER, url, tmp_path, 3)
    taken = {f"w{i}": json.loads(out) for i, out in enumerate(outputs)}
    claimed = [run_id for runs in taken.values() for run_id in runs]
    assert sorted(claimed) == ids  # every run once, none twice
    async with SQLiteStore(url) as store:
        for worker, runs in taken.items():
            for run_id in runs:
                records = await store.read(run_id)
                assert [r.seq for r in records] == [1, 2]
                assert json.loads(records[1].body) == {"text": worker}
                assert (await store.get_run(run_id)).status == "completed"
    assert integrity(tmp_path / "shared.db") == [("ok",)]


async def test_processes_committing_to_one_file_lose_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    await run_workers(COMMITTER, url, tmp_path, 3)
    assert integrity(tmp_path / "shared.db") == [("ok",)]
    async with SQLiteStore(url) as store:
        runs = await store.list_runs(limit=100)
        assert len(runs) == 60 and all(r.status == "completed" for r in runs)
        for info in runs:
            records = await store.read(info.run_id)
            assert (
                [r.seq for r in records] == list(range(1, 32)) == list(range(1, info.last_seq + 1))
            )
            texts = [json.loads(r.body)["text"] for r in records]
            assert texts == ["start"] + [f"{n}{half}" for n in range(15) for half in "ab"]
