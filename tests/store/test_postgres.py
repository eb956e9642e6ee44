"""What only the PostgreSQL store has: its URL, its schema's versions, group commit of
plain commits, and its LISTEN/NOTIFY bus between processes. (The store contract itself
is ``tests/conformance``, run on PostgreSQL too.)"""

from __future__ import annotations

import asyncio
import sys
import time

import psycopg
import pytest

from autonomic.bus.postgres import PostgresBus
from autonomic.errors import ConfigError, StoreCorrupt, StoreError
from autonomic.events import NewEvent
from autonomic.store import open_store
from autonomic.store._postgres_schema import SCHEMA_VERSION
from autonomic.store.base import Commit, Lease, NewRun
from autonomic.store.postgres import PostgresStore, _Batches, import_psycopg


def ev(text: str) -> NewEvent:
    return NewEvent("Thought", 1, time.time(), b'{"text":"%s"}' % text.encode(), {})


def sql(store: PostgresStore, statement: str) -> None:
    with psycopg.connect(store.conninfo, **store.connect_kwargs()) as conn:
        conn.execute(statement)


def test_the_url_names_the_schema_and_keeps_passwords_out_of_messages() -> None:
    store = open_store("postgresql://app:s3cret@db.example:5433/runs?schema=tenant_a")
    assert isinstance(store, PostgresStore)
    assert (store.schema, store.where) == (
        "tenant_a",
        "postgresql://app@db.example:5433/runs (schema tenant_a)",
    )
    assert "schema" not in store.conninfo and "s3cret" in store.conninfo
    mixed = PostgresStore("postgres://h/db?options=-c%20statement_timeout%3D5000&schema=s")
    assert mixed.connect_kwargs()["options"] == "-c statement_timeout=5000 -c search_path=s"
    with pytest.raises(ConfigError, match="not a plain name"):
        PostgresStore("postgresql://h/db?schema=a;drop")


def test_a_missing_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(ConfigError, match=r'pip install "autonomic\[postgres\]"'):
        import_psycopg()


async def test_opening_refuses_a_missing_or_newer_store(pg_url: str) -> None:
    with pytest.raises(StoreError, match=r"no store at .*start a run first"):
        async with open_store(pg_url, create=False):
            pass
    store = PostgresStore(pg_url)
    async with store:  # created, then opened again as it is
        pass
    async with open_store(pg_url, create=False):
        pass
    sql(store, f"UPDATE autonomic_meta SET value = '{SCHEMA_VERSION + 1}'")
    with pytest.raises(StoreCorrupt, match=r"newer autonomic.*upgrade autonomic"):
        async with PostgresStore(pg_url):
            pass
    unreachable = PostgresStore("postgresql://postgres@127.0.0.1:1/postgres")
    with pytest.raises(StoreError, match=r"could not open postgresql://postgres@127\.0\.0\.1:1"):
        async with unreachable:
            pass


async def test_plain_commits_in_one_batch_fail_alone(pg_url: str) -> None:
    async with PostgresStore(pg_url) as store:
        for i in range(20):
            await store.create_run(NewRun(f"r{i}", "a", "g"), [ev("s")], owner="me", lease_s=30)
        # run r7's log already holds an event its row does not count: the store is damaged
        sql(store, "UPDATE runs SET last_seq = 0 WHERE run_id = 'r7'")
        results = await asyncio.gather(
            *(store.commit(Commit(f"r{i}", 0 if i == 7 else 1, [ev("x")], Lease("me", 1)))
              for i in range(20)),
            return_exceptions=True,
        )  # fmt: skip
        assert [type(r).__name__ for r in results] == ["Committed"] * 7 + ["StoreCorrupt"] + [
            "Committed"
        ] * 12
        assert str(results[7]).startswith("run r7: its log already holds events after event 0")
        assert [r.seq for r in await store.read("r3")] == [1, 2]


async def test_refused_commits_in_a_batch_are_told_why_and_the_others_written(
    pg_url: str,
) -> None:
    async with PostgresStore(pg_url) as store:
        for i in range(6):
            await store.create_run(NewRun(f"r{i}", "a", "g"), [ev("s")], owner="me", lease_s=30)
        sql(store, "UPDATE runs SET status = 'completed' WHERE run_id = 'r2'")
        sql(store, "UPDATE runs SET status = 'waiting' WHERE run_id = 'r4'")
        commits = [
            Commit("r0", 1, [ev("x"), ev("y")], Lease("me", 1), release=True),
            Commit("r1", 1, [ev("x")], Lease("me", 2)),  # a stale lease
            Commit("r2", 1, [ev("x")], Lease("me", 1)),  # the run ended
            Commit("r3", 0, [ev("x")], Lease("me", 1)),  # the log moved on
            Commit("r4", 1, [ev("x")], Lease("me", 1)),  # it would be left waiting
            Commit("r5", 1, [ev("x")], Lease("me", 1), status="completed"),
            Commit("nope", 0, [ev("x")], Lease("me", 1)),
        ]
        results = await asyncio.gather(*map(store.commit, commits), return_exceptions=True)
        assert [type(r).__name__ for r in results] == [
            "Committed", "LeaseLost", "RunEnded", "ConcurrencyConflict", "ConfigError",
            "Committed", "RunNotFound",
        ]  # fmt: skip
        assert [(r.last_seq, r.inbox_last) for r in (results[0], results[5])] == [(3, 0), (2, 0)]
        runs = {r.run_id: r for r in await store.list_runs()}
        assert (runs["r0"].last_seq, runs["r0"].lease_owner) == (3, None)
        assert (runs["r5"].status, runs["r5"].lease_owner) == ("completed", "me")
        assert [(r.last_seq, r.status) for r in (runs["r1"], runs["r3"])] == [(1, "running")] * 2
        assert [r.seq for r in await store.read("r0")] == [1, 2, 3]
        assert [r.seq for r in await store.read("r1")] == [1]


async def test_a_write_made_as_the_batches_in_flight_end_is_written() -> None:
    # the caller of a write that one batch ends puts another at once, before that batch's
    # flusher and the other one in flight are seen to be gone: it must not be stranded
    gate = asyncio.Event()

    async def write_many(items: list[int]) -> list[int]:
        await gate.wait()
        return items

    batches = _Batches[int, int](write_many, lambda _, error: error, parallel=2)

    async def twice() -> int:
        await batches.put(1)
        return await batches.put(2)

    again = asyncio.ensure_future(twice())
    for _ in range(2):  # the first batch [1] is taken and waits
        await asyncio.sleep(0)
    other = asyncio.ensure_future(batches.put(3))
    for _ in range(2):  # and a second one [3]
        await asyncio.sleep(0)
    gate.set()
    async with asyncio.timeout(5):
        assert (await again, await other) == (2, 3)


async def test_the_bus_carries_hints_between_processes(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    first, second = PostgresBus(store.conninfo, store.schema), store.bus
    other_schema = PostgresBus(store.conninfo, "elsewhere")
    async with (
        first,
        second,
        other_schema,
        second.subscribe("run:x") as sub,
        other_schema.subscribe("run:x") as stray,
    ):
        for i in range(20):
            first.publish("run:x", str(i))
        got = [await sub.next(5.0) for _ in range(20)]
        assert got == [str(i) for i in range(20)]
        assert await stray.next(0.3) is None
        first.publish("run:x", "y" * 10_000)  # too long for a notification: sent empty
        assert await sub.next(5.0) == ""
        long = [f"{i}:" + "z" * 900 for i in range(30)]  # packed in several notifications
        for message in long:
            first.publish("run:x", message)
        assert [await sub.next(5.0) for _ in long] == long


async def test_runs_created_together_are_refused_alone(pg_url: str) -> None:
    async with PostgresStore(pg_url) as store:
        await store.create_run(NewRun("old", "a", "g"), [ev("s")], owner=None, lease_s=30)
        ids = ["n0", "old", "n1", "n2", "n2", "n3"]
        results = await asyncio.gather(
            *(store.create_run(NewRun(i, "a", "g"), [ev(i)], owner=None, lease_s=30) for i in ids),
            return_exceptions=True,
        )
        assert [type(r).__name__ for r in results] == [
            "RunInfo", "ConfigError", "RunInfo", "RunInfo", "ConfigError", "RunInfo",
        ]  # fmt: skip
        assert str(results[1]) == "a run with id 'old' already exists"
        assert [r.body for r in await store.read("n2")] == [b'{"text":"n2"}']
