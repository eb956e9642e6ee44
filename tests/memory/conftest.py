"""One offline embedder for all memory tests: the real int8 MiniLM shipped on PyPI."""

from __future__ import annotations

import pytest

from autonomic.memory.embedders import MiniLMEmbedder


@pytest.fixture(scope="session")
def embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder()
