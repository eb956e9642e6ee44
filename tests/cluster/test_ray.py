"""Child runs of a fan-out driven by Ray workers on a local Ray cluster, joined back
through the store; a worker killed mid-run loses nothing."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from autonomic import Runtime
from autonomic.loader import read_events

TESTS = Path(__file__).resolve().parents[1]
SRC = TESTS.parent / "src"
STALL = "stall.2"
"""The child whose first attempt stalls until the test kills its Ray worker."""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    marks = tmp_path_factory.mktemp("ray") / "marks.txt"
    marks.write_text("")
    env = {"PYTHONPATH": f"{SRC}:{TESTS}", "RAY_MARKS": str(marks), "RAY_STALL": STALL}
    os.environ["RAY_MARKS"] = str(marks)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": env},
    )
    try:
        yield marks
    finally:
        ray.shutdown()


def marks(path: Path) -> list[tuple[str, int]]:
    return [(line.split()[0], int(line.split()[1])) for line in path.read_text().splitlines()]


async def first_attempt(path: Path) -> int:
    """The pid of the Ray worker that runs the stalling child, once it does."""
    while True:
        for run_id, pid in marks(path):
            if run_id == STALL:
                return pid
        await asyncio.sleep(0.1)


async def test_children_are_driven_by_ray_workers_and_joined_through_the_store(
    cluster: Path, tmp_path: Path
) -> None:
    from autonomic.cluster.ray import RayChildren
    from ray_agent import parent

    store = f"sqlite:///{tmp_path / 'runs.db'}"
    async with Runtime(store, children=RayChildren(), poll_s=0.2) as rt:
        run = await rt.start(parent, "a b c")
        async with asyncio.timeout(90):
            result = await run.wait()
    assert result.answer == "done done done"
    done = [m for m in marks(cluster) if m[0].startswith(run.run_id)]
    assert sorted(r for r, _ in done) == [f"{run.run_id}.{i}" for i in (1, 2, 3)]
    assert all(pid != os.getpid() for _, pid in done)  # not in this process


async def test_a_ray_worker_killed_mid_run_loses_nothing(cluster: Path, tmp_path: Path) -> None:
    from autonomic.cluster.ray import RayChildren
    from ray_agent import parent

    store = f"sqlite:///{tmp_path / 'runs.db'}"
    async with Runtime(store, children=RayChildren(max_retries=2), poll_s=0.2) as rt:
        run_id = STALL.split(".")[0]
        run = await rt.start(parent, "x y", run_id=run_id)
        async with asyncio.timeout(60):
            stalled = await first_attempt(cluster)
        os.kill(stalled, signal.SIGKILL)
        async with asyncio.timeout(90):
            result = await run.wait()
        child = [s.event for s in await read_events(rt.store, STALL)]
    assert result.answer == "done done"
    attempts = [pid for r, pid in marks(cluster) if r == STALL]
    assert len(attempts) == 2 and attempts[0] == stalled != attempts[1]
    kinds = [type(e).__name__ for e in child]
    assert kinds.count("ActionRequested") == 1 and kinds.count("ActionCompleted") == 1
    assert kinds[-1] == "RunCompleted"
