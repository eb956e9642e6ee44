"""What callers of the SQLite store see when something fails: one-line autonomic errors.

SQLite's own errors, and numbers SQLite cannot hold, never reach a caller raw.
"""

from __future__ import annotations

import sqlite3

from autonomic.errors import AutonomicError, ConfigError, StoreCorrupt, StoreError
from autonomic.store._group_commit import Abort

__all__ = ["store_error"]

_CAUSES = (
    ("SQLITE_READONLY", "the file is read-only (check its permissions and its folder's)"),
    ("SQLITE_FULL", "the disk is full"),
    ("SQLITE_IOERR", "a disk I/O error (a full disk, a file size limit, or a failing device)"),
    ("SQLITE_BUSY", "another process held the write lock too long"),
    ("SQLITE_CANTOPEN", "the file cannot be opened"),
    ("SQLITE_CORRUPT", "the file is damaged"),
    ("SQLITE_NOTADB", "it is not a SQLite file"),
)


def store_error(path: str, doing: str, error: BaseException) -> AutonomicError:
    """The one-line error a caller sees for ``error``, met while ``doing`` the file."""
    if isinstance(error, AutonomicError):
        return error
    if isinstance(error, Abort):
        return error.error
    if isinstance(error, OverflowError):
        return ConfigError(f"a number given to the store is out of range (64-bit): {error}")
    detail = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, sqlite3.Error):
        name = getattr(error, "sqlite_errorname", "") or ""
        kind = StoreCorrupt if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) else StoreError
        for prefix, cause in _CAUSES:
            if name.startswith(prefix):
                return kind(f"could not {doing} {path}: {cause} ({detail})")
        return kind(f"could not {doing} {path}: {detail}")
    return StoreError(f"could not {doing} {path}: {type(error).__name__}: {detail}")
