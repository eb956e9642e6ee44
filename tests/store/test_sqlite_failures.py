"""The SQLite store when things go wrong: failing writes, interrupts, read-only files, full
disks, bad numbers and damaged files. Callers get one-line autonomic errors, nothing
committed is lost, and the file is never left locked."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import autonomic
from autonomic.errors import ConfigError, StoreCorrupt, StoreError
from autonomic.events import NewEvent
from autonomic.store.base import Commit, Delivery, Lease, NewRun, RunInfo, Wait
from autonomic.store.sqlite import SQLiteStore

SRC = str(Path(autonomic.__file__).parents[1])


def event(text: str = "x", version: int = 1) -> NewEvent:
    return NewEvent("Thought", version, time.time(), text.encode())


async def leased_run(store: SQLiteStore, run_id: str = "r1") -> RunInfo:
    return await store.create_run(NewRun(run_id, "a", "g"), [event()], owner="me", lease_s=600)


def write_lock_is_free(path: Path) -> bool:
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


def runs_in(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [row[0] for row in conn.execute("SELECT run_id FROM runs ORDER BY run_id")]
    finally:
        conn.close()


def sql(path: Path, statement: str, *params: object) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute(statement, params)
        conn.commit()
    finally:
        conn.close()


def insert_then(store: SQLiteStore, run_id: str, error: BaseException) -> object:
    """A write op that writes a row, then fails."""

    def op() -> None:
        store._w.execute(
            "INSERT INTO runs (run_id, agent, goal, status, created_at, updated_at, last_seq) "
            "VALUES (?, 'a', 'g', 'running', 0, 0, 0)",
            (run_id,),
        )
        raise error

    return op


# -- failing writes (bug C7) ---------------------------------------------------------------


async def test_a_write_failing_with_any_exception_rolls_back_and_unlocks(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    async with SQLiteStore(f"sqlite:///{path}") as store:
        with pytest.raises(StoreError, match=f"^could not write to {path}: ValueError: boom$"):
            await store._write(insert_then(store, "half", ValueError("boom")))  # type: ignore[arg-type]
        assert write_lock_is_free(path)
        # in a batch, the failing op is taken out and the others are written
        results = await asyncio.gather(
            leased_run(store, "before"),
            store._write(insert_then(store, "half", AttributeError("oops"))),  # type: ignore[arg-type]
            leased_run(store, "after"),
            return_exceptions=True,
        )
        assert isinstance(results[1], StoreError) and "AttributeError: oops" in str(results[1])
        assert write_lock_is_free(path)
    assert runs_in(path) == ["after", "before"]


INTERRUPTED = """
import asyncio, sys
from autonomic.store.sqlite import SQLiteStore

async def main(url):
    store = SQLiteStore(url)
    await store.open()

    def op():
        store._w.execute(
            "INSERT INTO runs (run_id, agent, goal, status, created_at, updated_at, last_seq) "
            "VALUES ('half', 'a', 'g', 'running', 0, 0, 0)"
        )
        raise KeyboardInterrupt

    await store._write(op)

try:
    asyncio.run(main(sys.argv[1]))
except KeyboardInterrupt:
    sys.exit(42)
"""


@pytest.mark.parametrize("synchronous", ["normal", "full"], ids=["inline", "writer-thread"])
def test_an_interrupt_inside_a_write_rolls_back_and_is_raised(
    tmp_path: Path, synchronous: str
) -> None:
    path = tmp_path / "runs.db"
    script = tmp_path / "interrupted.py"
    script.write_text(INTERRUPTED)
    done = subprocess.run(
        [sys.executable, str(script), f"sqlite:///{path}?synchronous={synchronous}"],
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 42, done.stderr  # the interrupt reached the top, not swallowed
    assert runs_in(path) == [] and write_lock_is_free(path)


# -- read-only files and full disks ----------------------------------------------------------

WRITER = """
import asyncio, json, os, sys, time
from autonomic.errors import StoreError
from autonomic.events import NewEvent
from autonomic.store.base import Commit, Lease, NewRun
from autonomic.store.sqlite import SQLiteStore

async def main(path, size, count, ballast):
    report = {}
    async with SQLiteStore(f"sqlite:///{path}") as store:
        if not os.path.exists(path + ".made"):
            new = NewRun("r1", "a", "g")
            await store.create_run(new, [NewEvent("T", 1, 0.0, b"{}")], owner="me", lease_s=600)
            open(path + ".made", "w").close()
        info = await store.get_run("r1")
        report["read"] = len(await store.read("r1"))
        seq = info.last_seq
        for i in range(count):
            body = os.urandom(size)
            commit = Commit("r1", seq, [NewEvent("T", 1, time.time(), body)], Lease("me", 1))
            try:
                seq = (await store.commit(commit)).last_seq
            except StoreError as e:
                report["error"] = str(e)
                if ballast and os.path.exists(ballast):
                    os.remove(ballast)  # the fault is fixed: the same commit goes through
                    seq = (await store.commit(commit)).last_seq
                break
        report["last_seq"] = (await store.get_run("r1")).last_seq
        report["seqs"] = [r.seq for r in await store.read("r1")]
    print(json.dumps(report))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
"""


def run_writer(
    tmp_path: Path, path: Path, size: int, count: int, prefix: tuple[str, ...] = (), **kw: object
) -> dict[str, object]:
    """Commit ``count`` events of ``size`` bytes to run r1 of ``path`` in a new process."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    done = subprocess.run(
        [*prefix, sys.executable, str(script), str(path), str(size), str(count), ""],
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
        timeout=120,
        **kw,  # type: ignore[call-overload]
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, object] = json.loads(done.stdout)
    return report


def without_root_powers() -> tuple[str, ...]:
    """A prefix that makes root subject to file permissions (or nothing for other users)."""
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv") is None:
        pytest.skip("as root a chmod'ed file stays writable, and setpriv is not here to drop that")
    caps = "-dac_override,-dac_read_search"
    return ("setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}")


def test_a_read_only_store_reads_and_refuses_writes_in_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "runs.db"
    assert run_writer(tmp_path, path, 10, 2)["last_seq"] == 3
    path.chmod(0o444)
    report = run_writer(tmp_path, path, 10, 1, without_root_powers())
    assert report["read"] == 3 and report["last_seq"] == 3 and report["seqs"] == [1, 2, 3]
    assert report["error"] == (
        f"could not write to {path}: the file is read-only (check its permissions and its "
        "folder's) (attempt to write a readonly database)"
    )


def test_a_full_disk_is_one_line_and_loses_nothing(tmp_path: Path) -> None:
    if (
        shutil.which("unshare") is None
        or subprocess.run(["unshare", "-Urm", "true"], capture_output=True).returncode
    ):
        pytest.skip("needs unshare and user namespaces to mount a small tmpfs")
    disk = tmp_path / "disk"
    disk.mkdir()
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    path, ballast = disk / "runs.db", disk / "ballast"
    shell = (
        f"mount -t tmpfs -o size=400k tmpfs {disk} && head -c 60000 /dev/zero > {ballast} && "
        f"exec {sys.executable} {script} {path} 3000 10000 {ballast}"
    )
    done = subprocess.run(
        ["unshare", "-Urm", "sh", "-c", shell],
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["error"].startswith(f"could not write to {path}: the disk is full")
    last = report["last_seq"]
    assert last > 10 and report["seqs"] == list(range(1, last + 1))


def test_a_file_size_limit_is_one_line_and_loses_nothing(tmp_path: Path) -> None:
    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))

    path = tmp_path / "runs.db"
    report = run_writer(tmp_path, path, 3000, 10_000, preexec_fn=limited)
    assert str(report["error"]).startswith(f"could not write to {path}: a disk I/O error")
    last = report["last_seq"]
    assert isinstance(last, int) and last > 10 and report["seqs"] == list(range(1, last + 1))


# -- bad numbers -------------------------------------------------------------------------------


async def test_integers_beyond_64_bits_are_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    huge = 2**64
    async with SQLiteStore(f"sqlite:///{path}") as store:
        info = await leased_run(store)
        lease = Lease("me", info.lease_epoch)
        for attempt, name in [
            (store.read("r1", after_seq=huge), "after_seq"),
            (store.read("r1", limit=10**30), "limit"),
            (store.list_runs(limit=huge), "limit"),
            (store.find_runs("r", limit=huge), "limit"),
            (store.claim_runs("me", 30, huge), "limit"),
            (store.commit(Commit("r1", huge, [event()], lease)), "expected_seq"),
            (store.commit(Commit("r1", 1, [event()], Lease("me", -huge))), "the lease epoch"),
            (store.read_inbox("r1", after_id=huge), "after_id"),
            (store.put_snapshot("r1", huge, b"", {}), "seq"),
            (
                store.fork_run("r1", NewRun("f", "a", "g"), huge, [], owner=None, lease_s=1),
                "at_seq",
            ),
            (
                store.create_run(NewRun("d", "a", "g", depth=huge), [], owner=None, lease_s=1),
                "depth",
            ),
        ]:
            with pytest.raises(ConfigError, match=f"^{name} must be an integer of 64 bits at most"):
                await attempt
        with pytest.raises(ConfigError, match="lease_s must be a number of seconds"):
            await store.claim_run("r1", "me", float("nan"))
        # a number deep inside an event: refused as a whole, nothing written
        with pytest.raises(ConfigError, match="out of range"):
            await store.commit(Commit("r1", 1, [event(), event(version=huge)], lease))
        assert (await store.get_run("r1")).last_seq == 1 and len(await store.read("r1")) == 1
        assert write_lock_is_free(path)


# -- damaged files -----------------------------------------------------------------------------


async def test_a_log_shorter_than_its_row_says_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    async with SQLiteStore(f"sqlite:///{path}") as store:
        info = await leased_run(store)
        await store.commit(Commit("r1", 1, [event(), event(), event()], Lease("me", 1)))
        sql(path, "UPDATE runs SET last_seq = 6 WHERE run_id = 'r1'")
        with pytest.raises(StoreCorrupt, match=r"^run r1: event 5 is missing from its log, which "):
            await store.read("r1")
        assert len(await store.read("r1", limit=4)) == 4  # what is there still reads
        sql(path, "DELETE FROM events WHERE run_id = 'r1' AND seq = 2")
        with pytest.raises(StoreCorrupt, match="run r1: event 2 is missing"):
            await store.read("r1")
        assert info.last_seq == 1


async def test_a_log_longer_than_its_row_says_is_reported_and_not_written_to(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runs.db"
    async with SQLiteStore(f"sqlite:///{path}") as store:
        await leased_run(store)
        await store.commit(Commit("r1", 1, [event(), event()], Lease("me", 1)))
        sql(path, "UPDATE runs SET last_seq = 2 WHERE run_id = 'r1'")
        with pytest.raises(StoreCorrupt, match="run r1: its log goes on past event 2, where its"):
            await store.read("r1")
        with pytest.raises(StoreCorrupt, match="run r1: its log already holds events after event"):
            await store.commit(Commit("r1", 2, [event("new")], Lease("me", 1)))
        assert (await store.get_run("r1")).last_seq == 2
        assert write_lock_is_free(path)


async def test_damage_met_midway_through_a_commit_undoes_all_of_it(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    async with SQLiteStore(f"sqlite:///{path}") as store:
        info = await leased_run(store, "sender")
        await leased_run(store, "target")
        sql(path, "UPDATE runs SET wait = 'garbage' WHERE run_id = 'target'")
        kid = (NewRun("kid", "a", "g", "sender"), [event()])
        delivery = Delivery("target", "k", event())
        with pytest.raises(StoreCorrupt, match="run target: what it waits for is unreadable"):
            await store.commit(
                Commit(
                    "sender", 1, [event()], Lease("me", 1), children=[kid], deliveries=[delivery]
                )
            )
        assert runs_in(path) == ["sender", "target"] and (await store.get_run("sender")) == info
        assert write_lock_is_free(path)
        with pytest.raises(ConfigError, match="what it waits for cannot be stored"):
            await store.commit(
                Commit("sender", 1, [], Lease("me", 1), "waiting", Wait(groups=((object(),),)))  # type: ignore[arg-type]
            )


async def test_other_damage_is_reported_and_snapshots_are_read_as_they_are(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runs.db"
    async with SQLiteStore(f"sqlite:///{path}") as store:
        await leased_run(store, "parent")
        await store.fork_run("parent", NewRun("fork", "a", "g"), 1, [], owner=None, lease_s=1)
        await leased_run(store, "waiting")
        sql(path, "UPDATE runs SET wait = '{not json' WHERE run_id = 'waiting'")
        with pytest.raises(StoreCorrupt, match="run waiting: what it waits for is unreadable"):
            await store.get_run("waiting")
        sql(path, "DELETE FROM runs WHERE run_id = 'parent'")
        with pytest.raises(StoreCorrupt, match="run fork is forked from parent, which is not in"):
            await store.read("fork")
        await store.put_snapshot("fork", 1, b"\x00garbage", {})
        assert await store.latest_snapshot("fork") == (1, b"\x00garbage")
