"""The store contract, run against every backend (in memory, and a real SQLite file).

The in-memory store defines what each operation means; every backend must pass the same
tests. Events are built by hand: the store never looks inside them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest

from autonomic.errors import (
    ConcurrencyConflict,
    ConfigError,
    LeaseLost,
    RunEnded,
    RunNotFound,
)
from autonomic.events import NewEvent
from autonomic.store.base import (
    Claim,
    ClaimFilter,
    Commit,
    Committed,
    Delivery,
    Lease,
    NewRun,
    RunInfo,
    Store,
    Wait,
)
from autonomic.store.sharded import ShardedStore

ME = "worker-1"


def ev(text: str = "x", kind: str = "Thought", blobs: dict[str, bytes] | None = None) -> NewEvent:
    return NewEvent(kind, 1, time.time(), b'{"text":"%s"}' % text.encode(), blobs or {})


def evs(*texts: str) -> list[NewEvent]:
    return [ev(t) for t in texts]


async def new_run(
    store: Store,
    run_id: str = "r1",
    *,
    owner: str | None = ME,
    lease_s: float = 30,
    agent: str = "a",
    events: Sequence[NewEvent] | None = None,
) -> RunInfo:
    started = [ev(run_id, "RunStarted")] if events is None else events
    return await store.create_run(NewRun(run_id, agent, "g"), started, owner=owner, lease_s=lease_s)


def lease_of(info: RunInfo | Claim) -> Lease:
    if isinstance(info, Claim):
        return info.lease
    assert info.lease_owner is not None
    return Lease(info.lease_owner, info.lease_epoch)


async def commit(
    store: Store, info: RunInfo | Claim, expected: int, *texts: str, **fields: object
) -> Committed:
    run_id = info.info.run_id if isinstance(info, Claim) else info.run_id
    lease = fields.pop("lease", None) or lease_of(info)
    return await store.commit(Commit(run_id, expected, evs(*texts), lease, **fields))  # type: ignore[arg-type]


def signal(run_id: str, key: str, text: str = "") -> Delivery:
    return Delivery(run_id, key, ev(text or key, "SignalReceived"))


async def seqs(
    store: Store, run_id: str, after_seq: int = 0, limit: int | None = None
) -> list[int]:
    return [r.seq for r in await store.read(run_id, after_seq, limit)]


async def claimed(store: Store, owner: str = "other", **kw: Any) -> list[str]:
    claims = await store.claim_runs(owner, 30, 100, ClaimFilter(**kw))
    return [c.info.run_id for c in claims]


# -- the event log -----------------------------------------------------------------------


async def test_a_new_run_is_running_leased_and_its_own_root(store: Store) -> None:
    info = await new_run(store)
    assert (info.status, info.last_seq, info.lease_owner, info.lease_epoch) == ("running", 1, ME, 1)
    assert (info.root_run_id, info.depth, info.parent_run_id, info.inbox_last) == ("r1", 0, None, 0)
    assert await store.get_run("r1") == info
    free = await new_run(store, "r2", owner=None)
    assert (free.lease_owner, free.lease_expires_at, free.lease_epoch) == (None, None, 0)


async def test_commits_continue_the_log_and_read_back_in_order(store: Store) -> None:
    info = await new_run(store)
    assert await commit(store, info, 1, "a", "b") == Committed(3, 0)
    assert (await commit(store, info, 3, "c")).last_seq == 4
    records = await store.read("r1")
    assert [r.seq for r in records] == [1, 2, 3, 4]
    assert [r.type for r in records] == ["RunStarted", "Thought", "Thought", "Thought"]
    assert records[3].body == b'{"text":"c"}'
    assert await seqs(store, "r1", after_seq=2) == [3, 4]
    assert (await store.get_run("r1")).last_seq == 4


async def test_read_takes_a_limit(store: Store) -> None:
    info = await new_run(store)
    await commit(store, info, 1, "a", "b", "c", "d")
    assert await seqs(store, "r1", limit=2) == [1, 2]
    assert await seqs(store, "r1", after_seq=3, limit=10) == [4, 5]
    assert await seqs(store, "r1", limit=0) == []
    with pytest.raises(ConfigError, match="limit"):
        await store.read("r1", limit=-1)


async def test_a_stale_expected_seq_is_a_conflict_and_writes_nothing(store: Store) -> None:
    info = await new_run(store)
    await commit(store, info, 1, "a")
    with pytest.raises(ConcurrencyConflict, match="expected the log to end at event 1"):
        await commit(store, info, 1, "b")
    assert await seqs(store, "r1") == [1, 2]


async def test_commits_batched_together_do_not_spoil_each_other(store: Store) -> None:
    r1, r2 = await new_run(store, "r1"), await new_run(store, "r2")
    results = await asyncio.gather(
        commit(store, r1, 1, "ok"),
        commit(store, r2, 7, "stale"),
        commit(store, r2, 1, "ok"),
        commit(store, r2, 2, "stale lease", lease=Lease(ME, 99)),
        commit(store, r1, 2, "ok", status="completed"),
        commit(store, r1, 3, "after the end"),
        commit(store, r2, 2, "ok", release=True),
        commit(store, r2, 3, "released"),
        return_exceptions=True,
    )
    assert [type(r).__name__ for r in results] == [
        "Committed",
        "ConcurrencyConflict",
        "Committed",
        "LeaseLost",
        "Committed",
        "RunEnded",
        "Committed",
        "LeaseLost",
    ]
    assert await seqs(store, "r1") == [1, 2, 3] and await seqs(store, "r2") == [1, 2, 3]
    assert (await store.get_run("r2")).lease_owner is None
    assert (await store.get_run("r1")).status == "completed"


async def test_many_runs_commit_concurrently_without_loss(store: Store) -> None:
    infos = await asyncio.gather(*(new_run(store, f"run{i}") for i in range(50)))

    async def grow(info: RunInfo) -> None:
        seq = 1
        for n in range(10):
            seq = (await commit(store, info, seq, f"{info.run_id}-{n}")).last_seq

    await asyncio.gather(*(grow(i) for i in infos))
    for info in infos:
        records = await store.read(info.run_id)
        assert [r.seq for r in records] == list(range(1, 12))
        assert records[-1].body == b'{"text":"%s-9"}' % info.run_id.encode()


async def test_an_unknown_run_is_not_found_everywhere(store: Store) -> None:
    lease = Lease(ME, 1)
    for attempt in (
        store.get_run("nope"),
        store.read("nope"),
        store.commit(Commit("nope", 0, evs("x"), lease)),
        store.claim_run("nope", ME, 30),
        store.deliver(signal("nope", "k")),
        store.read_inbox("nope"),
        store.fork_run("nope", NewRun("f", "a", "g"), 1, [], owner=None, lease_s=1),
    ):
        with pytest.raises(RunNotFound, match="no run with id 'nope'"):
            await attempt


async def test_a_taken_run_id_is_refused(store: Store) -> None:
    await new_run(store)
    with pytest.raises(ConfigError, match="already exists"):
        await new_run(store)


async def test_blobs_are_kept_by_digest(store: Store) -> None:
    info = await new_run(store)
    await commit(store, info, 1)
    big = b"x" * 10_000
    await store.commit(Commit("r1", 1, [ev("ref", blobs={"d1": big})], lease_of(info)))
    assert await store.get_blobs(["d1", "missing"]) == {"d1": big}
    assert await store.get_blobs([]) == {}


async def test_a_snapshot_keeps_only_the_latest(store: Store) -> None:
    await new_run(store)
    assert await store.latest_snapshot("r1") is None
    await store.put_snapshot("r1", 5, b"five", {"d1": b"chunk"})
    await store.put_snapshot("r1", 9, b"nine", {})
    assert await store.latest_snapshot("r1") == (9, b"nine")
    assert await store.get_blobs(["d1"]) == {"d1": b"chunk"}


async def test_a_fork_shares_its_parents_events(store: Store) -> None:
    parent = await new_run(store, "parent")
    await commit(store, parent, 1, "a", "b", "c")
    fork = await store.fork_run(
        "parent", NewRun("child", "a", "g"), 2, evs("forked"), owner=ME, lease_s=30
    )
    assert (fork.forked_from, fork.forked_at, fork.last_seq, fork.lease_epoch) == (
        "parent",
        2,
        3,
        1,
    )
    await commit(store, fork, 3, "child-only")
    child, original = await store.read("child"), await store.read("parent")
    assert [r.seq for r in child] == [1, 2, 3, 4]
    assert [r.body for r in child[:2]] == [r.body for r in original[:2]]
    assert child[2].body == b'{"text":"forked"}' and len(original) == 4
    assert await seqs(store, "child", after_seq=1) == [2, 3, 4]
    assert await seqs(store, "child", after_seq=1, limit=2) == [2, 3]
    assert await seqs(store, "child", limit=1) == [1]
    await store.fork_run(
        "child", NewRun("grandchild", "a", "g"), 3, evs("again"), owner=None, lease_s=1
    )
    grand = await store.read("grandchild", after_seq=1)
    assert [r.body for r in grand] == [r.body for r in child[1:3]] + [b'{"text":"again"}']
    with pytest.raises(ConfigError, match="cannot fork at 9"):
        await store.fork_run("parent", NewRun("bad", "a", "g"), 9, [], owner=None, lease_s=1)
    with pytest.raises(ConfigError, match="already exists"):
        await store.fork_run("parent", NewRun("child", "a", "g"), 1, [], owner=None, lease_s=1)


async def test_find_runs_matches_a_literal_prefix(store: Store) -> None:
    for run_id in ("abc123", "abd456", "ABC789", "a%_*?[x]"):
        await new_run(store, run_id)
    assert [r.run_id for r in await store.find_runs("abc")] == ["abc123"]
    assert {r.run_id for r in await store.find_runs("ab")} == {"abc123", "abd456"}
    assert [r.run_id for r in await store.find_runs("a%_*?[")] == ["a%_*?[x]"]
    assert await store.find_runs("a_") == [] and await store.find_runs("zz") == []
    assert len(await store.find_runs("", limit=3)) == 3


async def test_list_runs_filters_by_status_and_parent_newest_first(store: Store) -> None:
    parent = await new_run(store, "parent")
    children = [(NewRun(f"c{i}", "a", "g", parent_run_id="parent"), evs("s")) for i in range(3)]
    await store.commit(Commit("parent", 1, evs("spawn"), lease_of(parent), children=children))
    await new_run(store, "other")
    done = await new_run(store, "done")
    await commit(store, done, 1, "end", status="completed")
    assert [r.run_id for r in await store.list_runs(parent_run_id="parent")] == ["c2", "c1", "c0"]
    assert [r.run_id for r in await store.list_runs(status="completed")] == ["done"]
    assert [r.run_id for r in await store.list_runs(limit=2)] == ["done", "other"]
    assert await store.list_runs(status="running", parent_run_id="nobody") == []
    with pytest.raises(ConfigError, match="limit"):
        await store.list_runs(limit=-1)


async def test_list_runs_filters_by_tenant_agent_and_time_and_pages_by_cursor(
    store: Store,
) -> None:
    for i in range(5):
        run = NewRun(f"t{i}", "calc" if i % 2 else "pay", "g", tenant="acme" if i < 4 else "b")
        await store.create_run(run, evs("s"), owner=None, lease_s=30)
    mine = await store.list_runs(tenant="acme", limit=10)
    assert [r.run_id for r in mine] == ["t3", "t2", "t1", "t0"]
    assert [r.run_id for r in await store.list_runs(tenant="acme", agent="calc")] == ["t3", "t1"]
    assert await store.list_runs(since=mine[0].created_at + 1) == []
    assert [r.run_id for r in await store.list_runs(tenant="b", since=0)] == ["t4"]
    paged, before = [], None
    while page := await store.list_runs(tenant="acme", limit=3, before=before):
        paged += [r.run_id for r in page]
        before = (page[-1].created_at, page[-1].run_id)
    assert paged == ["t3", "t2", "t1", "t0"]


# -- commits: ends, fencing, atomicity ------------------------------------------------------


async def test_nothing_is_written_after_a_terminal_commit(store: Store) -> None:
    info = await new_run(store)
    await commit(store, info, 1, "bye", status="completed")
    with pytest.raises(RunEnded, match="run r1 is completed"):
        await commit(store, info, 2, "more")
    with pytest.raises(RunEnded):  # the end is checked before the sequence number
        await commit(store, info, 1, "stale")
    assert await seqs(store, "r1") == [1, 2]


async def test_a_stale_epoch_is_refused_after_a_takeover(store: Store) -> None:
    old = await new_run(store, lease_s=0.05)
    await asyncio.sleep(0.1)  # the old owner stalls and its lease merely expires
    taken = await store.claim_run("r1", "worker-2", 30)
    assert taken is not None and taken.took_over and taken.lease == Lease("worker-2", 2)
    with pytest.raises(LeaseLost, match="leased to worker-2"):
        await commit(store, old, 1, "from the past")
    await commit(store, taken, 1, "from the new owner")
    assert [r.body for r in await store.read("r1", 1)] == [b'{"text":"from the new owner"}']


async def test_an_expired_lease_still_fences_until_someone_takes_it(store: Store) -> None:
    info = await new_run(store, lease_s=0.05)
    await asyncio.sleep(0.1)
    assert (await commit(store, info, 1, "late but unopposed")).last_seq == 2


async def test_reclaiming_a_run_fences_the_previous_claim_of_the_same_owner(store: Store) -> None:
    first = await new_run(store)
    again = await store.claim_run("r1", ME, 30)
    assert again is not None and not again.took_over and again.lease.epoch == 2
    assert again.info.recoveries == 0
    with pytest.raises(LeaseLost):
        await commit(store, first, 1, "old driver")


async def test_commits_need_the_lease(store: Store) -> None:
    info = await new_run(store)
    with pytest.raises(LeaseLost):
        await commit(store, info, 1, "x", lease=Lease("intruder", 1))
    free = await new_run(store, "free", owner=None)
    with pytest.raises(LeaseLost, match="leased to nobody"):
        await store.commit(Commit("free", 1, evs("x"), Lease(ME, 0)))
    await commit(store, info, 1, "bye", release=True)
    released = await store.get_run("r1")
    assert (released.lease_owner, released.lease_expires_at, released.status) == (
        None,
        None,
        "running",
    )
    with pytest.raises(LeaseLost):
        await commit(store, info, 2, "after release")
    assert free.last_seq == 1


async def test_a_commit_that_fails_in_any_part_writes_nothing(store: Store) -> None:
    parent = await new_run(store, "parent")
    await new_run(store, "taken", owner=None)
    target = await new_run(store, "target", owner=None)
    first = await store.deliver(signal("parent", "signal:go"))
    children = [
        (NewRun("fresh", "a", "g", parent_run_id="parent"), evs("s")),
        (NewRun("taken", "a", "g", parent_run_id="parent"), evs("s")),
    ]
    with pytest.raises(ConfigError, match="'taken' already exists"):
        await commit(
            store,
            parent,
            1,
            "spawn",
            status="waiting",
            wait=Wait(groups=(("child:fresh",),)),
            consumed=first or 0,
            deliveries=[signal("target", "hello")],
            children=children,
            release=True,
        )
    after = await store.get_run("parent")
    assert (after.last_seq, after.status, after.lease_owner, after.wait) == (1, "running", ME, None)
    assert [i.key for i in await store.read_inbox("parent")] == ["signal:go"]
    assert await store.read_inbox("target") == [] and target.inbox_last == 0
    with pytest.raises(RunNotFound):
        await store.get_run("fresh")
    twins = [(NewRun("twin", "a", "g"), evs("s")), (NewRun("twin", "a", "g"), evs("s"))]
    with pytest.raises(ConfigError, match="'twin' already exists"):
        await commit(store, parent, 1, "spawn", children=twins)
    assert await seqs(store, "parent") == [1]


async def test_a_waiting_commit_must_say_what_it_waits_for(store: Store) -> None:
    info = await new_run(store)
    with pytest.raises(ConfigError, match="waiting without saying for what"):
        await commit(store, info, 1, "zzz", status="waiting")
    assert await seqs(store, "r1") == [1]
    await commit(store, info, 1, "zzz", status="waiting", wait=Wait(groups=(("k",),)))
    with pytest.raises(ConfigError, match="status='running'"):
        await commit(store, info, 2, "still asleep?")
    resumed = await commit(store, info, 2, "up", status="running")
    assert resumed.last_seq == 3
    row = await store.get_run("r1")
    assert (row.status, row.wait, row.wake_at) == ("running", None, None)


# -- the inbox, waits and wake-ups -------------------------------------------------------


async def test_deliveries_are_numbered_and_read_back(store: Store) -> None:
    await new_run(store)
    first = await store.deliver(signal("r1", "signal:a", "one"))
    second = await store.deliver(signal("r1", "signal:b", "two"))
    assert first is not None and second is not None and second > first
    items = await store.read_inbox("r1")
    assert [(i.id, i.key, i.record.type, i.record.seq) for i in items] == [
        (first, "signal:a", "SignalReceived", 0),
        (second, "signal:b", "SignalReceived", 0),
    ]
    assert items[1].record.body == b'{"text":"two"}'
    assert [i.key for i in await store.read_inbox("r1", after_id=first)] == ["signal:b"]
    assert (await store.get_run("r1")).inbox_last == second


async def test_a_unique_delivery_is_dropped_while_one_with_its_key_is_unread(store: Store) -> None:
    info = await new_run(store)
    first = await store.deliver(signal("r1", "cancel"), unique=True)
    assert first is not None
    assert await store.deliver(signal("r1", "cancel"), unique=True) is None
    assert await store.deliver(signal("r1", "cancel")) is not None  # not unique: kept
    await commit(store, info, 1, "drained", consumed=(await store.get_run("r1")).inbox_last)
    assert await store.read_inbox("r1") == []
    assert await store.deliver(signal("r1", "cancel"), unique=True) is not None


async def test_consumed_items_leave_the_inbox_and_ids_keep_growing(store: Store) -> None:
    info = await new_run(store)
    ids = [await store.deliver(signal("r1", f"k{i}")) for i in range(3)]
    assert ids[1] is not None
    await commit(store, info, 1, "took two", consumed=ids[1])
    assert [i.key for i in await store.read_inbox("r1")] == ["k2"]
    assert ids[2] is not None
    await commit(store, info, 2, "took the rest", consumed=ids[2])
    later = await store.deliver(signal("r1", "k3"))
    assert later is not None and later > ids[2]  # an id is never given twice
    assert (await store.get_run("r1")).inbox_last == later


async def test_a_run_waiting_for_all_of_a_group_wakes_when_the_last_arrives(store: Store) -> None:
    info = await new_run(store)
    wait = Wait(groups=(("child:a", "child:b"),), reason="children")
    done = await commit(store, info, 1, "zzz", status="waiting", wait=wait, release=True)
    assert not done.ready
    row = await store.get_run("r1")
    assert (row.status, row.wait, row.wake_at, row.lease_owner) == ("waiting", wait, None, None)
    await store.deliver(signal("r1", "child:a"))
    assert (await store.get_run("r1")).wake_at is None and await claimed(store) == []
    before = time.time()
    await store.deliver(signal("r1", "child:b"))
    woken = await store.get_run("r1")
    assert woken.wake_at is not None and before <= woken.wake_at <= time.time()
    assert await claimed(store) == ["r1"]


async def test_a_run_waiting_for_any_group_wakes_on_the_first(store: Store) -> None:
    info = await new_run(store)
    wait = Wait(groups=(("approval:x",), ("signal:stop",)))
    await commit(store, info, 1, "zzz", status="waiting", wait=wait, release=True)
    await store.deliver(signal("r1", "signal:unrelated"))
    assert await claimed(store) == []
    await store.deliver(signal("r1", "signal:stop"))
    assert await claimed(store) == ["r1"]


async def test_a_cancel_wakes_a_run_whatever_it_waits_for(store: Store) -> None:
    info = await new_run(store)
    wait = Wait(groups=(("approval:x",),), wake_at=time.time() + 3600)
    await commit(store, info, 1, "zzz", status="waiting", wait=wait, release=True)
    await store.deliver(signal("r1", "cancel"))
    assert await claimed(store) == ["r1"]


async def test_a_timer_makes_a_waiting_run_ready_at_wake_at(store: Store) -> None:
    info = await new_run(store)
    at = time.time() + 0.1
    await commit(store, info, 1, "nap", status="waiting", wait=Wait(wake_at=at), release=True)
    assert (await store.get_run("r1")).wake_at == at
    assert await claimed(store) == []
    await asyncio.sleep(at - time.time() + 0.02)
    assert await claimed(store) == ["r1"]


async def test_readiness_is_decided_when_the_run_suspends(store: Store) -> None:
    info = await new_run(store)
    early = await store.deliver(signal("r1", "approval:x"))
    await store.deliver(signal("r1", "signal:go"))
    assert early is not None
    # what arrived before the run suspended counts; what it consumed does not
    done = await commit(
        store,
        info,
        1,
        "wait for the signal",
        status="waiting",
        wait=Wait(groups=(("signal:go",),)),
        consumed=early,
    )
    assert done.ready and (await store.get_run("r1")).wake_at is not None
    info2 = await new_run(store, "r2")
    await store.deliver(signal("r2", "approval:x"))
    consumed = (await store.get_run("r2")).inbox_last
    late = await commit(
        store,
        info2,
        1,
        "wait again",
        status="waiting",
        wait=Wait(groups=(("approval:x",),)),
        consumed=consumed,
        release=True,
    )
    assert not late.ready and (await store.get_run("r2")).wake_at is None
    past = await new_run(store, "r3")
    due = await commit(store, past, 1, "late timer", status="waiting", wait=Wait(wake_at=1.0))
    assert due.ready


async def test_a_delivery_to_a_running_run_only_signals_mail(store: Store) -> None:
    info = await new_run(store)
    item = await store.deliver(signal("r1", "signal:x"))
    row = await store.get_run("r1")
    assert (row.status, row.wake_at, row.inbox_last) == ("running", None, item)
    lost, mail = await store.renew_leases([("r1", lease_of(info))], 30)
    assert (lost, mail) == (set(), {"r1": item})
    assert (await commit(store, info, 1, "saw it")).inbox_last == item


async def test_deliveries_to_ended_runs_are_refused_or_skipped(store: Store) -> None:
    ended = await new_run(store, "ended")
    await commit(store, ended, 1, "bye", status="cancelled")
    with pytest.raises(RunEnded, match="cancelled"):
        await store.deliver(signal("ended", "k"))
    sender = await new_run(store, "sender")
    waiting = await new_run(store, "waiting")
    await commit(
        store, waiting, 1, "zzz", status="waiting", wait=Wait(groups=(("k",),)), release=True
    )
    sent = await commit(
        store,
        sender,
        1,
        "tell everyone",
        deliveries=[signal("ended", "k"), signal("ghost", "k"), signal("waiting", "k")],
    )
    assert sent.last_seq == 2
    assert await store.read_inbox("ended") == []
    assert [i.key for i in await store.read_inbox("waiting")] == ["k"]
    assert await claimed(store) == ["waiting"]


# -- children ------------------------------------------------------------------------------


async def test_children_are_created_with_the_commit_and_their_lineage(store: Store) -> None:
    parent = await new_run(store, "parent")
    kids = [
        (
            NewRun(f"kid{i}", "helper", f"goal {i}", "parent", "parent", 1, "acme"),
            evs(f"kid{i} starts"),
        )
        for i in range(2)
    ]
    await commit(store, parent, 1, "spawn", children=kids)
    kid = await store.get_run("kid1")
    assert (kid.agent, kid.goal, kid.status, kid.last_seq) == ("helper", "goal 1", "running", 1)
    assert (kid.parent_run_id, kid.root_run_id, kid.depth, kid.tenant) == (
        "parent",
        "parent",
        1,
        "acme",
    )
    assert (kid.lease_owner, kid.lease_epoch) == (None, 0)
    assert [r.body for r in await store.read("kid0")] == [b'{"text":"kid0 starts"}']
    assert await claimed(store) == ["kid0", "kid1"]  # unleased children are ready


async def test_children_may_be_leased_to_the_committer(store: Store) -> None:
    parent = await new_run(store, "parent")
    kids = [(NewRun("kid", "a", "g", "parent", "parent", 1), evs("s"))]
    await commit(store, parent, 1, "spawn", children=kids, children_lease_s=30)
    kid = await store.get_run("kid")
    assert (kid.lease_owner, kid.lease_epoch) == (ME, 1)
    assert await claimed(store) == []
    assert (await store.commit(Commit("kid", 1, evs("go"), Lease(ME, 1)))).last_seq == 2


# -- claims --------------------------------------------------------------------------------


async def test_claim_run_takes_a_free_or_expired_lease_and_bumps_its_epoch(store: Store) -> None:
    await new_run(store, owner=None)
    first = await store.claim_run("r1", ME, 0.05)
    assert first is not None and first.lease == Lease(ME, 1) and not first.took_over
    assert await store.claim_run("r1", "worker-2", 30) is None
    await asyncio.sleep(0.1)
    second = await store.claim_run("r1", "worker-2", 30)
    assert second is not None and second.took_over and second.lease.epoch == 2
    assert second.info.recoveries == 1 and second.info.lease_owner == "worker-2"
    assert await store.get_run("r1") == second.info
    stolen = await store.claim_run("r1", ME, 30, steal_from="worker-2")
    assert stolen is not None and stolen.took_over and stolen.info.recoveries == 2


async def test_claim_run_refuses_ended_and_dead_runs(store: Store) -> None:
    info = await new_run(store)
    await commit(store, info, 1, "bye", status="failed", release=True)
    with pytest.raises(RunEnded, match="failed"):
        await store.claim_run("r1", ME, 30)
    dead = await new_run(store, "dead")
    await commit(store, dead, 1, "too many crashes", status="dead", release=True)
    with pytest.raises(RunEnded, match="dead"):
        await store.claim_run("dead", ME, 30)
    revived = await store.claim_run("dead", ME, 30, revive=True)
    assert revived is not None and revived.info.status == "dead"
    await store.commit(Commit("dead", 2, evs("revived"), revived.lease, status="running"))
    assert (await store.get_run("dead")).status == "running"


async def test_claim_runs_takes_what_is_ready_oldest_first(store: Store) -> None:
    await new_run(store, "unleased", owner=None)
    await new_run(store, "held", lease_s=30)
    await new_run(store, "crashed", owner="gone", lease_s=0.05)
    asleep = await new_run(store, "asleep")
    await commit(
        store, asleep, 1, "zzz", status="waiting", wait=Wait(groups=(("k",),)), release=True
    )
    woken = await new_run(store, "woken")
    await commit(
        store, woken, 1, "zzz", status="waiting", wait=Wait(groups=(("k",),)), release=True
    )
    await store.deliver(signal("woken", "k"))
    done = await new_run(store, "done")
    await commit(store, done, 1, "bye", status="completed", release=True)
    dead = await new_run(store, "dead")
    await commit(store, dead, 1, "x", status="dead", release=True)
    await asyncio.sleep(0.1)
    claims = await store.claim_runs("other", 30, 10)
    assert [c.info.run_id for c in claims] == ["unleased", "woken"]
    assert all(c.lease == Lease("other", c.info.lease_epoch) for c in claims)
    assert [c.took_over for c in claims] == [False, False]
    orphans = await store.claim_runs("other", 30, 10, ClaimFilter(orphans=True))
    assert [c.info.run_id for c in orphans] == ["crashed"]
    assert orphans[0].took_over and orphans[0].info.recoveries == 1
    assert await claimed(store, orphans=True) == []


async def test_claim_runs_honours_agents_and_limit(store: Store) -> None:
    for i, agent in enumerate(["x", "y", "x", "z", "x"]):
        await new_run(store, f"r{i}", owner=None, agent=agent)
    assert await claimed(store, agents={"nobody"}) == []
    assert await claimed(store, agents=set()) == []
    claims = await store.claim_runs("other", 30, 2, ClaimFilter(agents={"x", "z"}))
    assert [c.info.run_id for c in claims] == ["r0", "r2"]
    assert await claimed(store, agents=["z", "x"]) == ["r3", "r4"]
    assert await claimed(store) == ["r1"]
    with pytest.raises(ConfigError, match="limit"):
        await store.claim_runs("other", 30, -1)


async def test_claim_runs_leaves_the_runs_of_excluded_tenants(store: Store) -> None:
    for i, tenant in enumerate(["acme", None, "beta", "acme"]):
        run = NewRun(f"r{i}", "a", "g", tenant=tenant)
        await store.create_run(run, [ev()], owner=None, lease_s=30)
    assert await claimed(store, exclude_tenants={"acme"}) == ["r1", "r2"]
    assert await claimed(store) == ["r0", "r3"]


async def test_claim_runs_takes_higher_priorities_first_then_the_oldest(store: Store) -> None:
    for run_id, priority in [("a", 0), ("b", 5), ("c", 0), ("d", 5), ("e", -1)]:
        run = NewRun(run_id, "x", "g", priority=priority)
        await store.create_run(run, [ev()], owner=None, lease_s=30)
    assert (await store.get_run("d")).priority == 5
    assert (await store.get_run("e")).priority == -1
    claims = await store.claim_runs("other", 30, 3)
    assert [c.info.run_id for c in claims] == ["b", "d", "a"]
    assert [c.info.priority for c in claims] == [5, 5, 0]
    assert await claimed(store) == ["c", "e"]


async def test_claims_keep_agents_and_tenants_within_their_limits(store: Store) -> None:
    # one run tree, so that a sharded store keeps every run on one shard (its limits
    # are each shard's)
    root = await new_run(store, "tree")
    await commit(store, root, 1, "bye", status="completed", release=True)

    async def create(run_id: str, agent: str, tenant: str | None, **lease: object) -> None:
        run = NewRun(run_id, agent, "g", parent_run_id="tree", root_run_id="tree", tenant=tenant)
        options: dict[str, object] = {"owner": None, "lease_s": 30, **lease}
        await store.create_run(run, [ev()], **options)  # type: ignore[arg-type]

    await create("held", "x", "acme", owner=ME)  # a live lease counts against the limits
    await create("gone", "x", "acme", owner="gone", lease_s=0.05)  # an expired one does not
    runs = [("x", "acme"), ("x", "beta"), ("x", None), ("y", "acme"), ("y", "acme"), ("y", None)]
    for i, (agent, tenant) in enumerate(runs):
        await create(f"r{i}", agent, tenant)
    await asyncio.sleep(0.1)
    limits: dict[str, Any] = {"agent_limits": {"x": 2}, "tenant_limit": 2}
    assert await claimed(store, **limits) == ["r0", "r5"]
    assert await claimed(store, "third", orphans=True, **limits) == []  # x and acme are full
    held = await store.get_run("held")
    await commit(store, held, 1, "bye", status="completed", release=True)
    assert await claimed(store, **limits) == ["r1", "r3"]  # room again for one x, one acme
    assert await claimed(store, orphans=True, **limits) == []
    assert await claimed(store) == ["r2", "r4"]  # without limits


async def test_concurrent_claimers_never_take_the_same_run(store: Store) -> None:
    for i in range(30):
        await new_run(store, f"r{i}", owner=None)
    batches = await asyncio.gather(*(store.claim_runs(f"worker-{n}", 30, 7) for n in range(6)))
    ids = [c.info.run_id for batch in batches for c in batch]
    if isinstance(store, ShardedStore):  # it gives back what it took beyond the limit,
        # which a claimer that already looked misses until its next round
        ids += [c.info.run_id for c in await store.claim_runs("late", 30, 30)]
    assert len(ids) == len(set(ids)) == 30


# -- renewing and releasing ----------------------------------------------------------------


async def test_renewal_reports_lost_leases_and_mail(store: Store) -> None:
    kept = await new_run(store, "kept", lease_s=0.05)
    taken = await new_run(store, "taken", lease_s=0.05)
    lost_lease = lease_of(taken)
    item = await store.deliver(signal("kept", "k"))
    await asyncio.sleep(0.1)
    assert await store.claim_run("taken", "worker-2", 30) is not None
    lost, mail = await store.renew_leases(
        [("kept", lease_of(kept)), ("taken", lost_lease), ("ghost", Lease(ME, 1))], 30
    )
    assert lost == {"taken", "ghost"} and mail == {"kept": item}
    row = await store.get_run("kept")
    assert row.lease_expires_at is not None and row.lease_expires_at > time.time() + 20
    assert await store.claim_run("kept", "worker-2", 30) is None
    assert await store.renew_leases([], 30) == (set(), {})


async def test_release_is_fenced(store: Store) -> None:
    old = await new_run(store, lease_s=0.05)
    await asyncio.sleep(0.1)
    new = await store.claim_run("r1", "worker-2", 30)
    assert new is not None
    await store.release_lease("r1", lease_of(old))
    assert (await store.get_run("r1")).lease_owner == "worker-2"
    await store.release_lease("r1", new.lease)
    row = await store.get_run("r1")
    assert (row.lease_owner, row.lease_expires_at, row.lease_epoch) == (None, None, 2)
    await store.release_lease("ghost", new.lease)  # nothing to release: no error


async def test_a_failed_start_counts_a_recovery_and_backs_off(store: Store) -> None:
    info = await new_run(store)
    retry_at = time.time() + 0.1
    await store.release_lease("r1", lease_of(info), failed_start=True, retry_at=retry_at)
    row = await store.get_run("r1")
    assert (row.lease_owner, row.recoveries, row.wake_at) == (None, 1, retry_at)
    assert await claimed(store) == []
    await asyncio.sleep(retry_at - time.time() + 0.02)
    claims = await store.claim_runs("other", 30, 10)
    assert [c.info.run_id for c in claims] == ["r1"]
    await store.commit(Commit("r1", 1, evs("started at last"), claims[0].lease))
    assert (await store.get_run("r1")).wake_at is None  # a commit clears the back-off
