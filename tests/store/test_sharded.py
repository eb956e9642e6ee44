"""The sharded store's own promises: a run tree on one shard, forks beside what they
fork, ids unique over every shard, and adding a shard moves only what it should."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from autonomic.errors import ConfigError, RunNotFound
from autonomic.events import NewEvent
from autonomic.store import open_store
from autonomic.store.base import Commit, Lease, NewRun
from autonomic.store.sharded import ShardedStore, rendezvous, tree_key


def ev(text: str) -> NewEvent:
    return NewEvent("Thought", 1, time.time(), b'{"text":"%s"}' % text.encode(), {})


def sharded_url(tmp_path: Path, n: int) -> str:
    return "sharded+" + ",".join(f"sqlite:///{tmp_path / f's{i}.db'}" for i in range(n))


@pytest.fixture
async def sharded(tmp_path: Path) -> AsyncIterator[ShardedStore]:
    store = open_store(sharded_url(tmp_path, 3))
    assert isinstance(store, ShardedStore)
    async with store:
        yield store


async def holders(store: ShardedStore, run_id: str) -> list[int]:
    held = []
    for i, shard in enumerate(store.shards):
        try:
            await shard.get_run(run_id)
        except RunNotFound:
            continue
        held.append(i)
    return held


def test_adding_a_shard_moves_only_what_the_new_shard_wins() -> None:
    keys = [f"run{i:05d}" for i in range(20_000)]
    three = ["pg-a", "pg-b", "pg-c"]
    before = [rendezvous(three, k) for k in keys]
    after = [rendezvous([*three, "pg-d"], k) for k in keys]
    moved = [i for i, (b, a) in enumerate(zip(before, after, strict=True)) if b != a]
    assert all(after[i] == 3 for i in moved)  # only to the new shard, never between old ones
    assert 0.22 < len(moved) / len(keys) < 0.28  # about 1/4
    counts = [before.count(i) for i in range(3)]
    assert all(abs(c - len(keys) / 3) < len(keys) * 0.03 for c in counts)


def test_a_tree_key_is_the_root_part_of_an_id() -> None:
    assert tree_key("abc") == tree_key("abc.1") == tree_key("abc.1.7") == "abc"


async def test_a_run_tree_lives_on_one_shard_and_a_fork_beside_its_source(
    sharded: ShardedStore,
) -> None:
    roots = [f"root{i}" for i in range(12)]
    for run_id in roots:
        await sharded.create_run(NewRun(run_id, "a", "g"), [ev("start")], owner="w", lease_s=30)
    placed = {run_id: await holders(sharded, run_id) for run_id in roots}
    assert all(len(where) == 1 for where in placed.values())
    assert len({where[0] for where in placed.values()}) > 1  # the roots spread out
    root = await sharded.get_run("root0")
    child = NewRun("root0.1", "a", "sub", parent_run_id="root0", root_run_id="root0", depth=1)
    grandchild = NewRun(
        "root0.1.1", "a", "subsub", parent_run_id="root0.1", root_run_id="root0", depth=2
    )
    await sharded.commit(
        Commit(
            "root0", 1, [ev("spawn")], Lease("w", root.lease_epoch), children=[(child, [ev("c")])]
        )
    )
    await sharded.create_run(grandchild, [ev("gc")], owner=None, lease_s=30)
    assert (
        await holders(sharded, "root0.1") == await holders(sharded, "root0.1.1") == placed["root0"]
    )
    # a fork goes where its source is, whatever its own id would hash to
    forks = [f"fork{i}" for i in range(8)]
    for fork_id in forks:
        await sharded.fork_run(
            "root0", NewRun(fork_id, "a", "g"), 1, [ev("f")], owner=None, lease_s=30
        )
    assert [await holders(sharded, f) for f in forks] == [placed["root0"]] * len(forks)
    assert any(sharded.home(f) != placed["root0"][0] for f in forks)
    # a process that never saw them finds them, and their shared events
    async with open_store(sharded.url) as fresh:
        assert [r.seq for r in await fresh.read("fork3")] == [1, 2]
        listed = await fresh.list_runs(limit=100)
        assert {r.run_id for r in listed} == {*roots, "root0.1", "root0.1.1", *forks}
        assert [r.run_id for r in await fresh.list_runs(limit=3)] == [r.run_id for r in listed[:3]]


async def test_an_id_is_unique_over_every_shard(sharded: ShardedStore) -> None:
    await sharded.create_run(NewRun("src", "a", "g"), [ev("s")], owner=None, lease_s=30)
    away = next(f"away{i}" for i in range(100) if sharded.home(f"away{i}") != sharded.home("src"))
    await sharded.fork_run("src", NewRun(away, "a", "g"), 1, [ev("f")], owner=None, lease_s=30)
    async with open_store(sharded.url) as fresh:  # it knows nothing of where the fork is
        with pytest.raises(ConfigError, match="already exists"):
            await fresh.create_run(NewRun(away, "a", "g"), [ev("x")], owner=None, lease_s=30)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sharded+", "names no shard"),
        ("sharded+memory://,memory://", "names a shard twice"),
        ("sharded+sharded+memory://", "cannot itself be sharded"),
        ("sharded+memory://,kafka://x", "unknown store URL 'kafka://x'"),
    ],
)
def test_bad_sharded_urls_are_one_clear_error(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_store(url)
