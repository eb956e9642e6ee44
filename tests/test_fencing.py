"""Leases are fenced: a process stalled past its lease (SIGSTOP), whose run another process
took over, writes nothing more and runs no tool once it wakes up (SIGCONT)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from drills import committed, spawn

HERE = Path(__file__).parent


def marks_of(effects: Path, pid: int) -> list[str]:
    return [line for line in effects.read_text().splitlines() if line.endswith(f" {pid}")]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_stalled_process_writes_nothing_after_another_took_its_run(tmp_path: Path) -> None:
    db, effects = tmp_path / "runs.db", tmp_path / "effects.txt"
    url = f"sqlite:///{db}"
    stalled = spawn("fence_agent.py", url, "start", effects=effects)
    deadline = time.monotonic() + 30
    while not (effects.exists() and len(marks_of(effects, stalled.pid)) >= 3):
        assert time.monotonic() < deadline and stalled.poll() is None
        time.sleep(0.01)
    stalled.send_signal(signal.SIGSTOP)
    try:
        marks_before = marks_of(effects, stalled.pid)
        time.sleep(1.0)  # its lease (0.6 s) runs out while it is stopped
        taker = spawn("fence_agent.py", url, "adopt", effects=effects)
        _, err = taker.communicate(timeout=60)
        assert taker.returncode == 0, err.decode()
        log_after_takeover = committed(db)
        assert log_after_takeover[-1][1] == "RunCompleted"
    finally:
        stalled.send_signal(signal.SIGCONT)
    _, err = stalled.communicate(timeout=30)
    assert committed(db) == log_after_takeover, "the stalled process wrote after waking up"
    assert marks_of(effects, stalled.pid) == marks_before, "the stalled process ran a tool"
    assert "lease" in err.decode().lower()  # it said why it stopped driving
