"""Kill -9 a DAG plan at many points: no node that finished is ever run again, and the
run ends with every node settled exactly once."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

from autonomic import Runtime
from autonomic.events import ActionCompleted, ActionFailed, ActionRequested, Event, RunCompleted
from autonomic.loader import read_events
from autonomic.strategies import PlanRecorded
from drills import committed, spawn

KILL_AT = tuple(range(4, 60, 4))


def kill_at(proc: subprocess.Popen[bytes], db: Path, at_seq: int) -> list:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and proc.poll() is None:
        if len(committed(db)) >= at_seq:
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return committed(db)


def unsettled(snapshot: list) -> set[str]:
    """Action ids requested and not settled in a committed log read from outside."""
    open_: set[str] = set()
    for _, kind, body in snapshot:
        if kind == "ActionRequested":
            open_.add(json.loads(body)["action_id"])
        elif kind in ("ActionCompleted", "ActionFailed"):
            open_.discard(json.loads(body)["action_id"])
    return open_


async def final_log(url: str) -> list[Event]:
    async with Runtime(url) as rt:
        (info,) = await rt.list_runs()
        return [s.event for s in await read_events(rt.store, info.run_id)]


def test_sigkill_mid_dag_reruns_no_finished_node(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    url = f"sqlite:///{db}"
    effects = tmp_path / "effects.txt"
    log = effects.with_suffix(".log")
    proc = spawn("dag_crash_agent.py", url, "run the graph", effects=effects, log=log)
    kills = 0
    before: list = []
    cut_short: set[str] = set()
    for target in KILL_AT:
        snapshot = kill_at(proc, db, target)
        assert snapshot[: len(before)] == before, "a kill lost committed events"
        before = snapshot
        cut_short |= unsettled(snapshot)
        if snapshot and snapshot[-1][1] in ("RunCompleted", "RunFailed"):
            break
        kills += 1
        time.sleep(0.35)  # let the dead process's lease expire
        proc = spawn("dag_crash_agent.py", url, effects=effects, log=log)
    else:
        assert proc.wait(timeout=60) == 0, log.read_text()
    assert kills >= 5

    events = asyncio.run(final_log(url))
    assert isinstance(events[-1], RunCompleted)
    assert sum(isinstance(e, PlanRecorded) for e in events) == 1
    requested = [e for e in events if isinstance(e, ActionRequested)]
    assert Counter(r.call_id for r in requested).most_common(1)[0][1] == 1, "a node ran twice"
    outcomes = Counter(e.action_id for e in events if isinstance(e, ActionCompleted | ActionFailed))
    assert all(outcomes[r.action_id] == 1 for r in requested)
    done = {e.action_id for e in events if isinstance(e, ActionCompleted)}
    marks = Counter(line.split()[0] for line in effects.read_text().splitlines())
    twice = {a for a, n in marks.items() if n > 1}
    assert twice <= cut_short, f"a node that had finished ran again: {twice - cut_short}"
    tools = {r.action_id: r.tool for r in requested}
    assert all(tools[a] == "fetch" for a in twice), "a non-idempotent node ran twice"
    assert done <= set(marks), "a node completed without its effect"
    assert len(done) >= 8
