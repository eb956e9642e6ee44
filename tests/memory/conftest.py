"""Memory tests' fixtures: the real offline embedder (one for the session), and a place
for memory tables on each backend (a SQLite file; a fresh PostgreSQL schema)."""

from __future__ import annotations

from pathlib import Path

import pytest

from autonomic.memory.embedders import MiniLMEmbedder


@pytest.fixture(scope="session")
def embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder()


@pytest.fixture(params=["sqlite", "postgres"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "memory.db")
    url: str = request.getfixturevalue("pg_url")
    return url
