"""Helpers shared by the kill -9 drills: start an agent script in a process of its own, and
read what is durably committed, from outside."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

__all__ = ["committed", "spawn"]

HERE = Path(__file__).parent


def spawn(
    script: str, *args: str, effects: Path, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """Run ``tests/<script> <args>``; its tools leave their marks in ``effects`` (named by
    ``DRILL_EFFECTS``); its stderr goes to ``log``, else is kept for ``communicate()``."""
    env = {
        **os.environ,
        "DRILL_EFFECTS": str(effects),
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, str(HERE / script), *args]
    if log is None:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with open(log, "ab") as stderr:
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)


def committed(db: Path) -> list[tuple[int, str, bytes]]:
    """What is durably in the log right now, read by a separate connection."""
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute("SELECT seq, type, body FROM events ORDER BY run_id, seq").fetchall()
    except sqlite3.OperationalError:  # the first process has not created the schema yet
        return []
    finally:
        conn.close()
