"""Kill -9 at every stage of request → approve → execute → observe, across processes: no
approval is lost, no approved call runs twice, none runs with arguments nobody approved,
and resuming never asks the model again for a step already recorded."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from autonomic import Runtime
from autonomic.events import (
    ActionCompleted,
    ActionFailed,
    ActionRequested,
    ApprovalDenied,
    ApprovalGranted,
    ApprovalRequested,
    Event,
    ModelCalled,
    RunCompleted,
)
from autonomic.loader import read_events
from autonomic.store.base import RunInfo
from drills import committed, spawn

HERE = Path(__file__).parent
ROUNDS = 90


def kill_at(proc: subprocess.Popen[bytes], db: Path, target: int, delay_s: float) -> int:
    """SIGKILL once the log has ``target`` events, after ``delay_s``, or never if the process
    ends first; returns the log length at the kill (-1 when it ended by itself)."""
    started = time.monotonic()
    while proc.poll() is None and time.monotonic() - started < 20:
        if len(committed(db)) >= target or time.monotonic() - started >= delay_s:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return len(committed(db))
        time.sleep(0.002)
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    return -1


async def run_row(url: str) -> RunInfo | None:
    async with Runtime(url, wake=False) as rt:
        runs = await rt.list_runs()
        return runs[0] if runs else None


async def final_log(url: str) -> tuple[RunInfo, list[Event]]:
    async with Runtime(url, wake=False) as rt:
        (info,) = await rt.list_runs()
        return info, [s.event for s in await read_events(rt.store, info.run_id)]


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_sigkill_across_request_approve_execute_observe(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    url = f"sqlite:///{db}"
    effects = tmp_path / "effects.txt"
    rng = random.Random(7)
    kills: set[tuple[str, int]] = set()
    before: list[tuple[int, str, bytes]] = []
    for round_ in range(ROUNDS):
        info = asyncio.run(run_row(url)) if db.exists() else None
        if info is not None and info.status == "completed":
            break
        if info is None:
            mode = ("start", "pay everyone")
        elif info.status == "waiting" and info.wake_at is None:
            mode = ("approve",)
        else:
            mode = ("drive",)
        proc = spawn(
            "approval_agent.py", url, *mode, effects=effects, log=effects.with_suffix(".log")
        )
        target = len(before) + rng.randint(1, 3)
        delay = rng.uniform(0.0, 0.6) if mode[0] == "approve" else 30.0
        if round_ % 5 == 4:  # now and then let a process finish its part
            target, delay = 10**6, 30.0
        at = kill_at(proc, db, target, delay)
        if at >= 0:
            kills.add((mode[0], at))
        snapshot = committed(db)
        assert snapshot[: len(before)] == before, "a committed event changed or vanished"
        before = snapshot
        time.sleep(0.35)  # let a killed driver's lease expire
    info, events = asyncio.run(final_log(url))
    log = effects.with_suffix(".log")
    assert info.status == "completed", log.read_text() if log.exists() else ""
    assert isinstance(events[-1], RunCompleted)
    assert len(kills) >= 20, f"only {len(kills)} distinct kill points: {sorted(kills)}"
    final = committed(db)
    assert [seq for seq, _, _ in final] == list(range(1, len(final) + 1))

    requested = {e.digest: e for e in events if isinstance(e, ApprovalRequested)}
    granted = {e.digest: e for e in events if isinstance(e, ApprovalGranted)}
    denied = {e.digest for e in events if isinstance(e, ApprovalDenied)}
    assert set(requested) == set(granted) | denied, "an approval was lost"
    assert not set(granted) & denied
    actions = [e for e in events if isinstance(e, ActionRequested)]
    assert sorted(a.action_id for a in actions) == sorted(
        requested[d].action_id for d in granted
    ), "every granted call is requested exactly once, and no denied one"
    outcomes = Counter(e.action_id for e in events if isinstance(e, ActionCompleted | ActionFailed))
    assert all(outcomes[a.action_id] == 1 for a in actions)

    approved_args = {}
    for digest, grant in granted.items():
        request = requested[digest]
        approved_args[request.action_id] = grant.args if grant.args is not None else request.args
    runs = Counter()
    for line in effects.read_text().splitlines():
        _, action_id, account, amount = line.split()
        runs[action_id] += 1
        assert action_id in approved_args, f"{action_id} ran without an approval"
        assert approved_args[action_id] == {"account": account, "amount": int(amount)}, (
            "a call ran with arguments nobody approved"
        )
    assert all(n == 1 for n in runs.values()), f"an approved call ran twice: {runs}"

    # resuming never asked the model again for a step already recorded: one model call
    # per decided step, plus those a kill interrupted before the response was recorded
    calls = sum(isinstance(e, ModelCalled) for e in events)
    responded = sum(type(e).__name__ == "ModelResponded" for e in events)
    assert responded == len({e.request_digest for e in events if isinstance(e, ModelCalled)})
    assert calls >= responded
