"""The Store contract, run against every backend (memory and a real SQLite file)."""

from __future__ import annotations

import asyncio
import time

import pytest

from autonomic.errors import ConcurrencyConflict, ConfigError, LeaseLost, RunNotFound
from autonomic.events import RunCompleted, RunStarted, Thought, encode_event
from autonomic.store.base import NewRun, Store


def started(goal: str = "g") -> list:
    return [encode_event(RunStarted(goal=goal, agent="a"), time.time())]


def thoughts(*texts: str) -> list:
    return [encode_event(Thought(t), time.time()) for t in texts]


async def new_run(
    store: Store, run_id: str = "r1", owner: str | None = "me", lease_s: float = 30
) -> None:
    await store.create_run(NewRun(run_id, "a", "g"), started(), owner=owner, lease_s=lease_s)


async def test_append_continues_the_log_and_reads_back_in_order(store: Store) -> None:
    await new_run(store)
    assert await store.append("r1", 1, thoughts("a", "b"), owner="me") == 3
    assert await store.append("r1", 3, thoughts("c")) == 4
    records = await store.read("r1")
    assert [r.seq for r in records] == [1, 2, 3, 4]
    assert [r.type for r in records] == ["RunStarted", "Thought", "Thought", "Thought"]
    assert [r.seq for r in await store.read("r1", after_seq=2)] == [3, 4]
    assert (await store.get_run("r1")).last_seq == 4


async def test_append_at_a_stale_seq_is_a_conflict_and_writes_nothing(store: Store) -> None:
    await new_run(store)
    await store.append("r1", 1, thoughts("a"))
    with pytest.raises(ConcurrencyConflict, match="expected the log to end at event 1"):
        await store.append("r1", 1, thoughts("b"))
    assert [r.seq for r in await store.read("r1")] == [1, 2]


async def test_conflicting_appends_in_one_batch_do_not_spoil_each_other(store: Store) -> None:
    await new_run(store, "r1")
    await new_run(store, "r2")
    results = await asyncio.gather(
        store.append("r1", 1, thoughts("ok")),
        store.append("r2", 7, thoughts("stale")),
        store.append("r2", 1, thoughts("ok")),
        return_exceptions=True,
    )
    assert results[0] == 2 and results[2] == 2
    assert isinstance(results[1], ConcurrencyConflict)


async def test_many_concurrent_runs_append_without_loss(store: Store) -> None:
    ids = [f"run{i}" for i in range(50)]
    await asyncio.gather(*(new_run(store, i) for i in ids))

    async def grow(run_id: str) -> None:
        seq = 1
        for n in range(10):
            seq = await store.append(run_id, seq, thoughts(f"{run_id}-{n}"))

    await asyncio.gather(*(grow(i) for i in ids))
    for run_id in ids:
        assert [r.seq for r in await store.read(run_id)] == list(range(1, 12))


async def test_unknown_run_raises_run_not_found(store: Store) -> None:
    with pytest.raises(RunNotFound, match="no run with id 'nope'"):
        await store.get_run("nope")
    with pytest.raises(RunNotFound):
        await store.append("nope", 0, thoughts("x"))


async def test_duplicate_run_id_is_refused(store: Store) -> None:
    await new_run(store)
    with pytest.raises(ConfigError, match="already exists"):
        await new_run(store)


async def test_large_payloads_are_stored_once_as_blobs(store: Store) -> None:
    await new_run(store)
    big = "x" * 10_000
    e1 = encode_event(RunCompleted(big), time.time())
    assert e1.blobs and len(e1.body) < 200
    await store.append("r1", 1, [e1])
    digest = next(iter(e1.blobs))
    assert (await store.get_blobs([digest, "missing"])) == {digest: big.encode()}


async def test_status_follows_appends(store: Store) -> None:
    await new_run(store)
    await store.append("r1", 1, thoughts("x"), status="completed")
    assert (await store.get_run("r1")).status == "completed"
    assert [r.run_id for r in await store.list_runs(status="completed")] == ["r1"]
    assert await store.list_runs(status="running") == []


async def test_fork_shares_history_up_to_the_fork_point(store: Store) -> None:
    await new_run(store, "parent")
    await store.append("parent", 1, thoughts("a", "b", "c"))
    await store.fork_run(
        "parent", NewRun("child", "a", "g"), 2, thoughts("forked"), owner=None, lease_s=1
    )
    await store.append("child", 3, thoughts("child-only"))
    child = await store.read("child")
    assert [r.seq for r in child] == [1, 2, 3, 4]
    parent = await store.read("parent")
    assert [r.body for r in child[:2]] == [r.body for r in parent[:2]]
    assert len(parent) == 4
    info = await store.get_run("child")
    assert (info.forked_from, info.forked_at, info.last_seq) == ("parent", 2, 4)
    await store.fork_run(
        "child", NewRun("grandchild", "a", "g"), 3, thoughts("again"), owner=None, lease_s=1
    )
    grand = await store.read("grandchild")
    assert [r.body for r in grand[:3]] == [r.body for r in child[:3]]
    with pytest.raises(ConfigError, match="cannot fork at 9"):
        await store.fork_run("parent", NewRun("bad", "a", "g"), 9, [], owner=None, lease_s=1)


async def test_snapshot_keeps_only_the_latest(store: Store) -> None:
    await new_run(store)
    assert await store.latest_snapshot("r1") is None
    await store.put_snapshot("r1", 5, b"five", {"d1": b"chunk"})
    await store.put_snapshot("r1", 9, b"nine", {})
    assert await store.latest_snapshot("r1") == (9, b"nine")
    assert await store.get_blobs(["d1"]) == {"d1": b"chunk"}


async def test_a_held_lease_blocks_other_owners(store: Store) -> None:
    await new_run(store, owner="me", lease_s=30)
    assert await store.acquire_lease("r1", "other", 30) is None
    with pytest.raises(LeaseLost):
        await store.append("r1", 1, thoughts("x"), owner="other")
    assert (await store.acquire_lease("r1", "me", 30)) is not None
    assert await store.renew_leases("me", ["r1"], 30) == set()
    assert await store.renew_leases("other", ["r1"], 30) == {"r1"}
    await store.release_lease("r1", "me")
    taken = await store.acquire_lease("r1", "other", 30)
    assert taken is not None and taken.lease_owner == "other" and taken.recoveries == 0


async def test_expired_leases_are_claimed_and_count_as_recoveries(store: Store) -> None:
    await new_run(store, "crashed", owner="dead-process", lease_s=0.01)
    await new_run(store, "held", owner="live-process", lease_s=30)
    await new_run(store, "done", owner=None)
    await store.append("done", 1, thoughts("x"), status="completed")
    await asyncio.sleep(0.05)
    claimed = await store.claim_runs("me", 30, 10, max_recoveries=5)
    assert [c.run_id for c in claimed] == ["crashed"]
    assert claimed[0].lease_owner == "me" and claimed[0].recoveries == 1
    assert await store.claim_runs("me2", 30, 10, max_recoveries=5) == []


async def test_a_run_that_keeps_crashing_goes_to_dead_letter(store: Store) -> None:
    await new_run(store, "flaky", owner="p0", lease_s=0.01)
    for i in range(3):
        await asyncio.sleep(0.03)
        claimed = await store.claim_runs(f"p{i + 1}", 0.01, 10, max_recoveries=3)
        assert [c.run_id for c in claimed] == ["flaky"]
    await asyncio.sleep(0.03)
    assert await store.claim_runs("p9", 0.01, 10, max_recoveries=3) == []
    assert (await store.get_run("flaky")).status == "dead"


async def test_find_runs_by_prefix(store: Store) -> None:
    await new_run(store, "abc123")
    await new_run(store, "abd456")
    assert [r.run_id for r in await store.find_runs("abc")] == ["abc123"]
    assert len(await store.find_runs("ab")) == 2
    assert await store.find_runs("zz") == []
