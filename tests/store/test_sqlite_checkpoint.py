"""The SQLite store copies its WAL back into the database in the background."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from autonomic.events import Thought, encode_event
from autonomic.store import sqlite as sqlite_store
from autonomic.store.base import NewRun
from autonomic.store.sqlite import SQLiteStore


def db_size(path: Path) -> int:
    return path.stat().st_size


async def test_a_grown_wal_is_checkpointed_without_blocking_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "_CHECK_WAL_EVERY", 1)
    monkeypatch.setattr(sqlite_store, "_CHECKPOINT_BYTES", 64 * 1024)
    path = tmp_path / "runs.db"
    async with SQLiteStore(f"sqlite:///{path}") as store:
        started = encode_event(Thought("start"), time.time())
        await store.create_run(NewRun("r", "a", "g"), [started], owner=None, lease_s=1)
        before = await asyncio.to_thread(db_size, path)
        seq = 1
        for i in range(300):
            seq = await store.append("r", seq, [encode_event(Thought(f"t{i}" * 50), time.time())])
        await asyncio.sleep(0)
        checkpoint = store._checkpoint
        if checkpoint is not None:
            await checkpoint
        after = await asyncio.to_thread(db_size, path)
        assert len(await store.read("r")) == 301
    assert after > before  # pages moved from the WAL into the database file
