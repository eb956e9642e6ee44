"""Kill -9 at many points of a run's life; every restart must lose nothing committed and
never repeat a non-idempotent effect."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from autonomic import Runtime
from autonomic.events import ActionCompleted, ActionFailed, ActionRequested, Event, RunCompleted
from autonomic.loader import read_events
from autonomic.store.base import RunInfo
from drills import committed, spawn

HERE = Path(__file__).parent
KILL_ROUNDS = 24


def kill_when(
    proc: subprocess.Popen[bytes], db: Path, effects: Path, at_seq: int, mid_action: bool
) -> list:
    """SIGKILL once the log reaches ``at_seq`` (or, with ``mid_action``, once a tool has left its
    effect but before its outcome is journaled when that window shows up first)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and proc.poll() is None:
        log = committed(db)
        open_action = log and log[-1][1] == "ActionRequested"
        effect_seen = effects.exists() and effects.stat().st_size > 0
        if len(log) >= at_seq or (
            mid_action and open_action and effect_seen and len(log) >= at_seq - 3
        ):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return committed(db)
        time.sleep(0.002)
    proc.kill()
    proc.wait()
    return committed(db)


async def final_log(url: str) -> tuple[RunInfo, list[Event]]:
    async with Runtime(url) as rt:
        (info,) = await rt.list_runs()
        return info, [s.event for s in await read_events(rt.store, info.run_id)]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigkill_at_many_points_loses_nothing_and_repeats_no_effect(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    url = f"sqlite:///{db}"
    effects = tmp_path / "effects.txt"
    proc = spawn(
        "crash_agent.py",
        url,
        "run the crash drill",
        effects=effects,
        log=effects.with_suffix(".log"),
    )
    kill_points: list[int] = []
    seen_before_kill: list[tuple[int, str, bytes]] = []
    for round_ in range(KILL_ROUNDS):
        target = 3 + round_ * 4
        snapshot = kill_when(proc, db, effects, target, mid_action=round_ % 3 == 1)
        kill_points.append(len(snapshot))
        # nothing that was committed before the kill is gone or changed afterwards
        assert snapshot[: len(seen_before_kill)] == seen_before_kill
        seen_before_kill = snapshot
        if snapshot and snapshot[-1][1] == "RunCompleted":
            break
        time.sleep(0.35)  # let the dead process's lease expire
        proc = spawn("crash_agent.py", url, effects=effects, log=effects.with_suffix(".log"))
    assert proc.wait(timeout=120) == 0, effects.with_suffix(".log").read_text()

    assert len(set(kill_points)) >= 20, f"kill points: {kill_points}"
    info, events = asyncio.run(final_log(url))
    final = committed(db)
    assert final[: len(seen_before_kill)] == seen_before_kill
    assert info.status == "completed" and isinstance(events[-1], RunCompleted)
    assert [seq for seq, _, _ in final] == list(range(1, len(final) + 1))

    requested = [e for e in events if isinstance(e, ActionRequested)]
    outcomes = Counter(e.action_id for e in events if isinstance(e, ActionCompleted | ActionFailed))
    assert all(outcomes[r.action_id] == 1 for r in requested), "every action settled exactly once"

    lines = effects.read_text().splitlines()
    charges = Counter(line for line in lines if line.startswith("charge"))
    notes = Counter(line for line in lines if line.startswith("note"))
    assert all(n == 1 for n in charges.values()), f"a charge happened twice: {charges}"
    assert all(n == 1 for n in notes.values())
    charged = {r.action_id for r in requested if r.tool == "charge"}
    assert {line.split()[1] for line in charges} <= charged
    # an unknown outcome is reported to the model, never silently re-run
    unknown = [e for e in events if isinstance(e, ActionFailed) and "outcome unknown" in e.error]
    completed_charges = {e.action_id for e in events if isinstance(e, ActionCompleted)} & charged
    assert len(completed_charges) + len(unknown) == len(charged)
