"""Stores: where runs live. Pick one by URL; backends are imported only when used."""

from __future__ import annotations

from autonomic.errors import ConfigError
from autonomic.store.base import ClaimFilter, NewRun, RunInfo, Store
from autonomic.store.memory import InMemoryStore

__all__ = ["ClaimFilter", "InMemoryStore", "NewRun", "RunInfo", "Store", "open_store"]

DEFAULT_STORE_URL = "sqlite:///autonomic.db"

_SCHEMES = ("sqlite", "memory", "postgresql", "sharded+")


def open_store(url: str, *, create: bool = True) -> Store:
    """A store for ``url`` (not yet opened): ``sqlite:///runs.db``, ``memory://`` or
    ``postgresql://host/db`` (with ``autonomic[postgres]``), or several of them as shards:
    ``sharded+sqlite:///a.db,sqlite:///b.db`` (a run tree lives on one of them).

    With ``create=False`` opening a store that does not exist yet is an error.
    """
    if url.startswith("sharded+"):
        from autonomic.store.sharded import ShardedStore

        return ShardedStore.from_url(url, create=create)
    scheme = url.split(":", 1)[0] if ":" in url else ""
    if scheme == "sqlite":
        from autonomic.store.sqlite import SQLiteStore

        return SQLiteStore(url, create=create)
    if scheme in ("postgresql", "postgres"):
        from autonomic.store.postgres import PostgresStore

        return PostgresStore(url, create=create)
    if scheme == "memory":
        return InMemoryStore(url)
    raise ConfigError(
        f"unknown store URL {url!r}: use one of "
        + ", ".join(s if s.endswith("+") else f"{s}://..." for s in _SCHEMES)
        + " (e.g. sqlite:///runs.db)"
    )
