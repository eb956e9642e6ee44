"""The SQLite store copies its WAL back into the database in the background."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from autonomic.events import NewEvent
from autonomic.store import sqlite as sqlite_store
from autonomic.store.base import Commit, Lease, NewRun
from autonomic.store.sqlite import SQLiteStore


def db_size(path: Path) -> int:
    return path.stat().st_size


def event(text: str) -> NewEvent:
    return NewEvent("Thought", 1, time.time(), text.encode())


async def test_a_grown_wal_is_checkpointed_while_commits_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "_CHECK_WAL_EVERY", 1)
    monkeypatch.setattr(sqlite_store, "_CHECKPOINT_BYTES", 64 * 1024)
    path = tmp_path / "runs.db"
    async with SQLiteStore(f"sqlite:///{path}") as store:
        info = await store.create_run(
            NewRun("r", "a", "g"), [event("start")], owner="me", lease_s=60
        )
        lease = Lease("me", info.lease_epoch)
        before = await asyncio.to_thread(db_size, path)
        seq, checkpoints = 1, 0
        for i in range(300):
            seq = (await store.commit(Commit("r", seq, [event(f"t{i}" * 50)], lease))).last_seq
            checkpoints += store._checkpoint is not None
        if store._checkpoint is not None:
            await store._checkpoint
        after = await asyncio.to_thread(db_size, path)
        assert checkpoints > 0  # commits went on while a checkpoint was under way
        assert [r.seq for r in await store.read("r")] == list(range(1, 302))
    assert after > before  # pages moved from the WAL into the database file
