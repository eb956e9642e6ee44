"""Group commit in the SQLite store: batches, cancelled callers, and a lock held elsewhere."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from autonomic.errors import RunNotFound
from autonomic.events import NewEvent
from autonomic.store import sqlite as sqlite_store
from autonomic.store.base import Commit, Lease, NewRun, RunInfo
from autonomic.store.sqlite import SQLiteStore


def event(text: str = "x") -> NewEvent:
    return NewEvent("Thought", 1, time.time(), text.encode())


async def new_run(store: SQLiteStore, run_id: str) -> RunInfo:
    return await store.create_run(NewRun(run_id, "a", "g"), [event()], owner="me", lease_s=60)


async def test_commits_queued_together_share_one_transaction(tmp_path: Path) -> None:
    async with SQLiteStore(f"sqlite:///{tmp_path / 'runs.db'}") as store:
        infos = await asyncio.gather(*(new_run(store, f"r{i}") for i in range(200)))
        statements: list[str] = []
        store._w.set_trace_callback(statements.append)
        batches = store._batches
        done = await asyncio.gather(
            *(store.commit(Commit(i.run_id, 1, [event(), event()], Lease("me", 1))) for i in infos)
        )
        store._w.set_trace_callback(None)
        assert store._batches == batches + 1 and {d.last_seq for d in done} == {3}
        # one transaction: one look at the 200 rows, then the events and the rows written
        # by executemany (traced row by row), with no statement of a lone commit
        kinds = [" ".join(s.split()[:3]) for s in statements]
        assert set(kinds) == {
            "BEGIN IMMEDIATE",
            "SELECT run_id, status,",
            "INSERT INTO events",
            "UPDATE runs SET",
            "COMMIT",
        }
        assert [kinds.count(k) for k in ("BEGIN IMMEDIATE", "SELECT run_id, status,")] == [1, 1]
        assert not any("RETURNING" in s for s in statements)
        for info in infos[::50]:
            assert [r.seq for r in await store.read(info.run_id)] == [1, 2, 3]


async def test_a_cancelled_callers_write_is_not_made(tmp_path: Path) -> None:
    async with SQLiteStore(f"sqlite:///{tmp_path / 'runs.db'}") as store:
        task = asyncio.create_task(new_run(store, "never"))
        await asyncio.sleep(0)  # the write is queued, not yet flushed
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await new_run(store, "later")
        with pytest.raises(RunNotFound):
            await store.get_run("never")


async def test_writes_wait_off_the_loop_while_another_connection_holds_the_lock(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runs.db"
    async with SQLiteStore(f"sqlite:///{path}") as store:
        info = await new_run(store, "r1")
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            pending = asyncio.create_task(
                store.commit(Commit("r1", 1, [event("waited")], Lease("me", info.lease_epoch)))
            )
            ticks = 0
            for _ in range(20):  # the loop keeps running while the commit waits
                await asyncio.sleep(0.01)
                ticks += 1
            assert not pending.done() and ticks == 20
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert (await pending).last_seq == 2
        assert [r.body for r in await store.read("r1", 1)] == [b"waited"]


async def test_a_lock_never_released_fails_the_batch_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "_BUSY_MS", 100)
    path = tmp_path / "runs.db"
    async with SQLiteStore(f"sqlite:///{path}") as store:
        infos = [await new_run(store, f"r{i}") for i in range(3)]
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            results = await asyncio.gather(
                *(store.commit(Commit(i.run_id, 1, [event()], Lease("me", 1))) for i in infos),
                return_exceptions=True,
            )
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert [str(r) for r in results] == [
            f"could not write to {path}: another process held the write lock too long "
            "(database is locked)"
        ] * 3
        assert (await store.commit(Commit("r0", 1, [event()], Lease("me", 1)))).last_seq == 2
