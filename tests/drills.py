"""Helpers shared by the kill -9 drills: read what is durably committed, from outside."""

from __future__ import annotations

import sqlite3
from pathlib import Path

__all__ = ["committed"]


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
