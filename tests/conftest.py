"""Shared fixtures: every backend of the Store protocol, opened fresh per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from autonomic.store import open_store
from autonomic.store.base import Store

STORE_KINDS = ["memory", "sqlite"]


def store_url(kind: str, tmp_path: Path) -> str:
    return "memory://" if kind == "memory" else f"sqlite:///{tmp_path / 'runs.db'}"


@pytest.fixture(params=STORE_KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(store_url(request.param, tmp_path)) as s:
        yield s


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs.db'}"
