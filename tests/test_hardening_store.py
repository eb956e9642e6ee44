"""The store failing mid-run, resumes racing cancellations, and damaged stores.

A store that fails stops the driver with a one-line StoreError and leaves the run
resumable, never re-running an effect that may have happened. Checking a run's status and
taking its lease are one step, so no interleaving of resume and cancel resurrects an
ended run or appends after its ending. A damaged snapshot is only a cache miss; damaged
events are a StoreCorrupt naming the run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from autonomic import (
    Agent,
    AutonomicError,
    ConfigError,
    RunEnded,
    Runtime,
    ScriptedModel,
    StoreCorrupt,
    StoreError,
    tool,
    tool_call,
)
from autonomic.events import ActionCompleted, ActionFailed, RunCancelled
from autonomic.loader import load_state, read_events
from autonomic.state import RunState
from autonomic.steps import Await, Finish, Signal, Step
from autonomic.store import InMemoryStore, open_store
from autonomic.store.base import Commit, Committed, Store
from autonomic.store.postgres import PostgresStore
from autonomic.store.sharded import ShardedStore, tree_key
from autonomic.strategies.base import AgentView

CHARGES: list[int] = []


@tool
def charge(amount: int) -> str:
    "Charge a card: not idempotent."
    CHARGES.append(amount)
    return f"charged {amount}"


@pytest.fixture(autouse=True)
def _clear() -> None:
    CHARGES.clear()


def payer() -> Agent:
    return Agent(
        name="payer", model=ScriptedModel([tool_call("charge", amount=5), "paid"]), tools=[charge]
    )


class FailingStore(InMemoryStore):
    """The in-memory world's full disk: commits fail after ``ok_commits`` of them, until
    ``fixed``. ``error`` is what the failing commit raises."""

    def __init__(self, ok_commits: int, error: BaseException) -> None:
        super().__init__()
        self.ok_commits, self.error, self.fixed = ok_commits, error, False

    async def commit(self, commit: Commit) -> Committed:
        if not self.fixed:
            if self.ok_commits <= 0:
                raise self.error
            self.ok_commits -= 1
        return await super().commit(commit)


# commits of the payer's run: [ModelCalled] · [ModelResponded, ActionRequested] ·
# [ActionCompleted, ModelCalled] · [ModelResponded, RunCompleted]
@pytest.mark.parametrize("ok_commits", [0, 1, 2, 3])
@pytest.mark.parametrize(
    "error",
    [StoreError("disk full"), OSError(28, "No space left on device"), RuntimeError("store bug")],
    ids=["StoreError", "OSError", "a store's bug"],
)
async def test_a_store_failing_mid_run_leaves_it_resumable_and_reruns_nothing(
    ok_commits: int, error: BaseException, settled: Any
) -> None:
    store = FailingStore(ok_commits, error)
    async with Runtime(store, lease_s=0.2) as rt:
        run = await rt.start(payer(), "pay the invoice")
        with pytest.raises(StoreError) as failure:
            await run.wait()
        message = str(failure.value)
        assert "\n" not in message and (
            "disk full" in message or "No space left" in message or "store bug" in message
        )
        info = await rt.get_run(run.run_id)
        assert info.status == "running"
        await settled(rt, run.run_id)  # what was committed reads back and folds
    store.fixed = True
    await asyncio.sleep(0.25)  # the failed process's lease runs out (it could not release it)
    async with Runtime(store, agents=[payer()]) as other:
        result = await (await other.resume(run.run_id)).wait()
        events = [e.event for e in await settled(other, run.run_id)]
    assert result.answer == "paid"
    assert CHARGES == [5], "the charge ran twice, or never"
    unknown = [e for e in events if isinstance(e, ActionFailed) and "outcome unknown" in e.error]
    completed = [e for e in events if isinstance(e, ActionCompleted)]
    # the charge ran before the failed commit could record its outcome only when the
    # third commit failed: then the model is told the outcome is unknown
    assert (len(unknown), len(completed)) == ((1, 0) if ok_commits == 2 else (0, 1))


async def test_a_snapshot_that_cannot_be_stored_does_not_stop_the_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class NoSnapshots(InMemoryStore):
        async def put_snapshot(self, *args: Any) -> None:
            raise OSError(28, "No space left on device")

    async with Runtime(NoSnapshots(), snapshot_every=1) as rt:
        result = await (await rt.start(payer(), "pay")).wait()
    assert result.answer == "paid" and "could not store a snapshot" in caplog.text


# -- resume is atomic --------------------------------------------------------------------


class WaitsForGo:
    """Waits for a "go" signal, then answers."""

    name = "waits-for-go"

    def next_step(self, state: RunState, agent: AgentView) -> Step:
        return Finish("went") if state.signals.get("go") else Await(Signal("go"))


def slow_payer() -> Agent:
    model = ScriptedModel([tool_call("charge", amount=1)] * 3 + ["paid"], latency=0.003)
    return Agent(name="payer", model=model, tools=[charge])


def waiter() -> Agent:
    return Agent(name="waiter", model=ScriptedModel([]), strategy=WaitsForGo())


def second_store(store: Store) -> Store:
    """The same store as another process would open it."""
    return store if isinstance(store, InMemoryStore) else open_store(store.url)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("make", [slow_payer, waiter], ids=["running", "waiting"])
async def test_resumes_racing_cancels_never_resurrect_a_run_nor_write_after_its_end(
    store: Store, settled: Any, seed: int, make: Callable[[], Agent]
) -> None:
    rnd = random.Random(seed)
    agent = make()
    async with Runtime(store, agents=[agent]) as a, Runtime(second_store(store)) as b:
        b.register(agent)
        run = await a.start(agent, "go")
        if agent.name == "waiter":
            await run.wait_until_waiting()
        else:
            await asyncio.sleep(rnd.random() * 0.02)

        async def op(kind: str, rt: Runtime) -> object:
            await asyncio.sleep(rnd.random() * 0.005)
            try:
                if kind == "cancel":
                    return await rt.cancel(run.run_id, by=f"seed {seed}")
                if kind == "signal":
                    return await rt.signal(run.run_id, "go")
                return await rt.resume(run.run_id)
            except AutonomicError as e:  # refused: ended, or driven elsewhere
                return e

        kinds = ["cancel"] + [
            rnd.choice(["cancel", "resume", "resume", "signal"]) for _ in range(4)
        ]
        rnd.shuffle(kinds)
        outcomes = await asyncio.gather(*(op(k, rnd.choice([a, b])) for k in kinds))
        async with asyncio.timeout(20):
            final = await a.handle(run.run_id).wait(check=False)
            drivers = [*a.supervisor.tasks.values(), *b.supervisor.tasks.values()]
            if drivers:
                await asyncio.wait(drivers)
        events = await settled(a, run.run_id)
        assert final.status in ("completed", "cancelled")
        if any(getattr(o, "status", None) == "cancelled" for o in outcomes):
            assert final.status == "cancelled" and isinstance(events[-1].event, RunCancelled)
        # an ended run is never resumed nor cancelled again, and nothing is appended
        with pytest.raises(RunEnded):
            await b.resume(run.run_id)
        with pytest.raises(ConfigError, match="already"):
            await a.cancel(run.run_id)
        assert (await a.get_run(run.run_id)).last_seq == len(events)


# -- damaged stores ----------------------------------------------------------------------


def calculator() -> Agent:
    script: list[Any] = [tool_call("charge", amount=i) for i in range(40)] + ["x" * 5000]
    return Agent(name="calc", model=ScriptedModel(script), tools=[charge], max_steps=100)


async def finished_run(store: Store) -> str:
    async with Runtime(store, snapshot_every=10) as rt:
        run = await rt.start(calculator(), "go " + "g" * 3000)
        await run.wait()
    return run.run_id


class Damage:
    """Damages a run's stored data: in the in-memory store's dicts, or in the SQLite file
    or the PostgreSQL schema with a separate connection, as a disk or a person could."""

    def __init__(self, store: Store, run_id: str) -> None:
        if isinstance(store, ShardedStore):  # the shard the (root) run's tree lives on
            store = store.shards[store.home(tree_key(run_id))]
        self.store, self.run_id = store, run_id

    def _sql(self, statement: str, *args: object) -> list[Any]:
        if isinstance(self.store, PostgresStore):
            import psycopg

            with psycopg.connect(self.store.conninfo, **self.store.connect_kwargs()) as pg:
                cursor = pg.execute(statement.replace("?", "%s"), args)
                return cursor.fetchall() if cursor.description else []
        path = self.store.url.split("sqlite:///", 1)[1]
        conn = sqlite3.connect(path, timeout=10)
        try:
            with conn:
                return conn.execute(statement, args).fetchall()
        finally:
            conn.close()

    def snapshot(self) -> tuple[int, bytes]:
        if isinstance(self.store, InMemoryStore):
            return self.store._snapshots[self.run_id]
        [(seq, body)] = self._sql("SELECT seq, body FROM snapshots WHERE run_id = ?", self.run_id)
        return seq, bytes(body)

    def set_snapshot(self, body: bytes) -> None:
        if isinstance(self.store, InMemoryStore):
            self.store._snapshots[self.run_id] = (self.snapshot()[0], body)
        else:
            self._sql("UPDATE snapshots SET body = ? WHERE run_id = ?", body, self.run_id)

    def drop_blob(self, digest: str) -> None:
        if isinstance(self.store, InMemoryStore):
            del self.store._blobs[digest]
        else:
            assert self._sql("DELETE FROM blobs WHERE digest = ? RETURNING digest", digest)

    def drop_event(self, seq: int) -> None:
        if isinstance(self.store, InMemoryStore):
            events = self.store._events[self.run_id]
            events[:] = [r for r in events if r.seq != seq]
        else:
            self._sql("DELETE FROM events WHERE run_id = ? AND seq = ?", self.run_id, seq)

    def shift_last_seq(self, by: int) -> None:
        if isinstance(self.store, InMemoryStore):
            info = self.store._runs[self.run_id]
            self.store._runs[self.run_id] = msgspec.structs.replace(
                info, last_seq=info.last_seq + by
            )
        else:
            self._sql("UPDATE runs SET last_seq = last_seq + ? WHERE run_id = ?", by, self.run_id)


def edit_snapshot(change: Callable[[dict[str, Any]], None]) -> Callable[[Damage], None]:
    def damage(d: Damage) -> None:
        body = json.loads(d.snapshot()[1])
        change(body)
        d.set_snapshot(json.dumps(body).encode())

    return damage


def drop_chunks(d: Damage) -> None:
    chunks = json.loads(d.snapshot()[1])["chunks"]
    assert chunks, "the run is long enough for a chunked snapshot"
    for digest in chunks:
        d.drop_blob(digest)


SNAPSHOT_DAMAGE = [
    ("garbage bytes", lambda d: d.set_snapshot(b"\x00\xff not json"), "snapshot unreadable"),
    ("the wrong shape", lambda d: d.set_snapshot(b'{"state": 5}'), "snapshot unreadable"),
    ("a missing chunk blob", drop_chunks, "snapshot damaged (chunk"),
    (
        "another fold version",
        edit_snapshot(lambda b: b.update(fold="0" * 16)),
        "snapshot folded by another version of the reducers",
    ),
    (
        "a state of another seq",
        edit_snapshot(lambda b: b["state"].update(seq=3)),
        "holds event 3",
    ),
    (
        "a state of another run",
        edit_snapshot(lambda b: b["state"].update(run_id="someone-else")),
        "snapshot belongs to run someone-else",
    ),
]


@pytest.mark.parametrize(
    ("damage", "warning"), [s[1:] for s in SNAPSHOT_DAMAGE], ids=[s[0] for s in SNAPSHOT_DAMAGE]
)
async def test_a_damaged_snapshot_is_folded_from_the_events_with_a_warning(
    store: Store,
    caplog: pytest.LogCaptureFixture,
    damage: Callable[[Damage], None],
    warning: str,
) -> None:
    run_id = await finished_run(store)
    full = await load_state(store, run_id, use_snapshot=False)
    damage(Damage(store, run_id))
    with caplog.at_level(logging.WARNING, logger="autonomic.store"):
        state = await load_state(store, run_id)
    assert msgspec.json.encode(state) == msgspec.json.encode(full)
    assert warning in caplog.text and run_id in caplog.text


async def test_a_missing_event_blob_is_store_corrupt_naming_the_run(store: Store) -> None:
    run_id = await finished_run(store)
    first = (await store.read(run_id, 0, 1))[0]
    digest = first.body.split(b"$blob:")[1][:64].decode()  # the long goal is a blob
    Damage(store, run_id).drop_blob(digest)
    with pytest.raises(StoreCorrupt) as corrupt:
        await read_events(store, run_id)
    assert str(corrupt.value) == (
        f"run {run_id}: event 1 (RunStarted) refers to blob {digest[:12]}, which is missing "
        "from the store"
    )
    with pytest.raises(StoreCorrupt, match=f"run {run_id}: event 1"):
        await load_state(store, run_id, use_snapshot=False)


async def test_a_missing_event_is_store_corrupt_naming_the_run(store: Store) -> None:
    run_id = await finished_run(store)
    Damage(store, run_id).drop_event(7)
    # the loader's words, or the SQLite store's own (it checks the log as it reads it)
    gap = rf"run {run_id}: (its log has event 8 where event 7|event 7 is missing from its log)"
    with pytest.raises(StoreCorrupt, match=gap):
        await read_events(store, run_id)
    with pytest.raises(StoreCorrupt, match=gap):
        await load_state(store, run_id, use_snapshot=False)


@pytest.mark.parametrize("shift", [3, -3])
async def test_a_row_that_disagrees_with_its_log_is_store_corrupt(store: Store, shift: int) -> None:
    run_id = await finished_run(store)
    count = (await store.get_run(run_id)).last_seq
    Damage(store, run_id).shift_last_seq(shift)
    for use_snapshot in (True, False):
        with pytest.raises(StoreCorrupt) as corrupt:
            await load_state(store, run_id, use_snapshot=use_snapshot)
        message = str(corrupt.value)
        assert message.startswith(f"run {run_id}: ") and str(count + shift) in message


async def test_a_run_whose_log_cannot_be_read_is_claimed_with_back_off() -> None:
    store = InMemoryStore()
    async with Runtime(store, wake=False) as rt:
        run = await rt.submit(payer(), "pay")
    Damage(store, run.run_id).drop_event(1)
    before = time.time()
    async with Runtime(store, agents=[payer()], poll_s=0.02):
        async with asyncio.timeout(10):  # claimed, found unreadable, released
            while True:
                info = await store.get_run(run.run_id)
                if info.recoveries >= 1:
                    break
                await asyncio.sleep(0.01)
    assert info.status == "running" and info.lease_owner is None
    assert (info.wake_at or 0) >= before + 1, "claimed again without backing off"
    assert CHARGES == []


def test_damage_helpers_cover_the_sqlite_schema(tmp_path: Path) -> None:
    """The SQLite tables the damage above is done to exist under these names."""

    async def tables() -> set[str]:
        async with open_store(f"sqlite:///{tmp_path / 'runs.db'}"):
            pass
        conn = sqlite3.connect(tmp_path / "runs.db")
        try:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        finally:
            conn.close()
        return {name for (name,) in rows}

    assert {"runs", "events", "blobs", "snapshots"} <= asyncio.run(tables())


class CancelsAsItCommits(InMemoryStore):
    """Runs ``hook`` at the end of the commit that requests the charge, so that a
    cancellation reaches the driver in the same turn of the loop as the commit's result."""

    hook: Callable[[], None] = staticmethod(lambda: None)

    async def commit(self, commit: Commit) -> Committed:
        committed = await super().commit(commit)
        if any(e.type == "ActionRequested" for e in commit.events):
            self.hook()
        return committed


@pytest.mark.parametrize("by", ["alice", None], ids=["a cancel", "the process leaving"])
async def test_a_cancellation_landing_as_a_commit_finishes_keeps_the_commit(
    settled: Any, by: str | None
) -> None:
    store = CancelsAsItCommits()
    async with Runtime(store) as rt:
        run = await rt.start(payer(), "pay")
        driver, task = rt.supervisor.drivers[run.run_id], rt.supervisor.tasks[run.run_id]

        def cancel() -> None:  # what Runtime.cancel and leaving the runtime do
            driver.cancel_by = by
            task.cancel()

        store.hook = cancel
        await asyncio.wait([task])
        assert driver.failure is None
        info = await rt.get_run(run.run_id)
        events = await settled(rt, run.run_id)
    assert CHARGES == []
    if by is None:  # stopped without an ending, resumable by any process
        assert info.status == "running" and info.lease_owner is None
    else:
        assert info.status == "cancelled" and isinstance(events[-1].event, RunCancelled)
