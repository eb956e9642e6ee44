"""A real service for each test (see service_harness)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service_harness import Service, start_service


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    svc, task = await start_service(tmp_path)
    try:
        yield svc
    finally:
        svc.server.should_exit = True
        await asyncio.wait_for(task, 30)
