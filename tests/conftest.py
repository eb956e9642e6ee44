"""Shared fixtures: every backend of the Store protocol, opened fresh per test."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from autonomic import Runtime
from autonomic.events import TERMINAL_EVENTS
from autonomic.loader import StoredEvent, load_state, read_events
from autonomic.state import TERMINAL
from autonomic.store import open_store
from autonomic.store.base import Store
from autonomic.views import render_trace

STORE_KINDS = ["memory", "sqlite", "postgres", "sharded"]
ENDED = TERMINAL | {"dead"}
POSTGRES = os.environ.get(
    "AUTONOMIC_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
"""The PostgreSQL server the tests use; each test gets a schema of its own, dropped after."""


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A store URL on the test server, in a fresh schema that is dropped after the test."""
    import psycopg

    schema = "t_" + secrets.token_hex(6)
    yield f"{POSTGRES}?schema={schema}"
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture(params=STORE_KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "memory":
        url = "memory://"
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'runs.db'}"
    elif request.param == "sharded":  # two SQLite files: a run tree lives on one of them
        url = f"sharded+sqlite:///{tmp_path / 'a.db'},sqlite:///{tmp_path / 'b.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    async with open_store(url) as s:
        yield s


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs.db'}"


Settled = Callable[[Runtime, str], Awaitable[list[StoredEvent]]]


async def _settled(runtime: Runtime, run_id: str) -> list[StoredEvent]:
    """Check that a run is in a state the store recorded, and that its log reads back,
    folds and renders; return its events.

    The store's status is the folded one; the log is numbered 1..n, with one ending and
    nothing after it; an ended run holds no lease and has no action left open.
    """
    info = await runtime.get_run(run_id)
    events = await read_events(runtime.store, run_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert info.last_seq == len(events)
    state = await load_state(runtime.store, run_id, use_snapshot=False)
    assert state.status == info.status
    endings = [i for i, e in enumerate(events) if isinstance(e.event, TERMINAL_EVENTS)]
    if info.status in TERMINAL:
        assert endings == [len(events) - 1], [type(e.event).__name__ for e in events]
        assert not state.pending and info.lease_owner is None
    else:
        assert not endings
    trace = render_trace(events)
    assert trace.startswith("   1 ") and ("■" in trace) == (info.status in ENDED)
    return events


@pytest.fixture
def settled() -> Settled:
    """``await settled(runtime, run_id)``: see ``_settled``."""
    return _settled
