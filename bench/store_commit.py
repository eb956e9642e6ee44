"""Commits per second of the SQLite store, without the runtime around it.

(a) one run committing 2 events at a time, each commit awaited before the next;
(b) 1000 runs committing 2 events at a time concurrently (group commit at work).

Each commit is fenced by the run's lease, as a driver's is. Prints one JSON object per
scenario, with wall and CPU time (CPU time is steadier on a busy machine) and the bytes
written to the WAL per commit. Usage: python bench/store_commit.py [--quick]
(It also runs against the previous store API, ``append(..., owner=)``, to compare.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from autonomic.events import NewEvent
from autonomic.store.base import NewRun
from autonomic.store.sqlite import SQLiteStore

OWNER = "bench"


def written() -> int:
    """Bytes this process has handed to write(2) so far (WAL frames included)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    return 0


Committer = Callable[[str, int, list[NewEvent]], Awaitable[Any]]


def two_events(i: int) -> list[NewEvent]:
    body = b'{"text":"' + b"x" * 120 + str(i).encode() + b'"}'
    return [NewEvent("Thought", 1, time.time(), body), NewEvent("Thought", 1, time.time(), body)]


async def start_run(store: Any, run_id: str) -> Committer:
    """Create a leased run; return how to commit to it with this store's API."""
    started = [NewEvent("RunStarted", 1, time.time(), b'{"goal":"g","agent":"a"}')]
    info = await store.create_run(NewRun(run_id, "a", "g"), started, owner=OWNER, lease_s=600)
    if not hasattr(store, "commit"):
        return lambda rid, seq, events: store.append(rid, seq, events, owner=OWNER)
    from autonomic.store.base import Commit, Lease

    lease = Lease(OWNER, info.lease_epoch)
    return lambda rid, seq, events: store.commit(Commit(rid, seq, events, lease))


def last_seq(result: Any) -> int:
    """What a commit returned: the new log end (previous API) or a Committed."""
    return result if isinstance(result, int) else result.last_seq


async def single_run(commits: int, folder: Path) -> dict[str, object]:
    async with SQLiteStore(f"sqlite:///{folder / 'single.db'}") as store:
        commit = await start_run(store, "solo")
        seq = 1
        started, cpu_started, bytes_before = time.perf_counter(), time.process_time(), written()
        for i in range(commits):
            seq = last_seq(await commit("solo", seq, two_events(i)))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        io = written() - bytes_before
    return {
        "scenario": "single_run",
        "commits": commits,
        "events_per_commit": 2,
        "commits_per_s": round(commits / elapsed),
        "us_per_commit": round(elapsed * 1e6 / commits, 1),
        "cpu_us_per_commit": round(cpu * 1e6 / commits, 1),
        "bytes_written_per_commit": round(io / commits),
    }


async def many_runs(runs: int, commits_each: int, folder: Path) -> dict[str, object]:
    async with SQLiteStore(f"sqlite:///{folder / 'many.db'}") as store:
        committers = await asyncio.gather(*(start_run(store, f"run{i}") for i in range(runs)))

        async def drive(i: int, commit: Committer) -> None:
            seq = 1
            for n in range(commits_each):
                seq = last_seq(await commit(f"run{i}", seq, two_events(n)))

        started, cpu_started, bytes_before = time.perf_counter(), time.process_time(), written()
        await asyncio.gather(*(drive(i, c) for i, c in enumerate(committers)))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        io = written() - bytes_before
    total = runs * commits_each
    return {
        "scenario": "concurrent_runs",
        "runs": runs,
        "commits": total,
        "events_per_commit": 2,
        "commits_per_s": round(total / elapsed),
        "us_per_commit": round(elapsed * 1e6 / total, 1),
        "cpu_us_per_commit": round(cpu * 1e6 / total, 1),
        "bytes_written_per_commit": round(io / total),
    }


async def main(quick: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for result in (
            await single_run(1000 if quick else 10_000, folder),
            await many_runs(1000, 3 if quick else 20, folder),
        ):
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer commits")
    asyncio.run(main(parser.parse_args().quick))
