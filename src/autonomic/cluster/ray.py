"""Child runs driven by Ray workers (``pip install "autonomic[ray]"``).

``Runtime(store, children=RayChildren())`` sends each child run of a fan-out to the Ray
cluster this process joined (``ray.init()``) as a task. The task opens the same store
(a file every worker sees, or PostgreSQL), takes the child's lease over from the parent's
process, drives the run until it ends or waits, and returns its status; the child's
ending reaches the parent through the store. A worker killed mid-run loses nothing: Ray
runs the task again (``max_retries``), and the new worker resumes the run from its log
once the dead worker's lease is taken over (at once on the same machine, else when it
lapses). Ray moves the work; the store keeps it durable.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from autonomic.errors import ConfigError, LeaseLost, RunEnded
from autonomic.store.base import Lease

try:
    import ray
except ImportError as e:  # pragma: no cover - depends on the extras installed
    raise ConfigError('Ray workers need Ray: pip install "autonomic[ray]"') from e

__all__ = ["RayChildren", "drive_run"]

log = logging.getLogger("autonomic.cluster")


async def drive_run(
    store_url: str, run_id: str, *, take_from: str | None, lease_s: float, bus: str | None
) -> str:
    """Drive ``run_id`` in this process until it ends or waits; returns its status.

    Its lease is taken over from ``take_from`` (the process that created it); failing
    that, it is claimed as soon as whoever holds it lets it go or dies.
    """
    from autonomic.runtime import Runtime

    async with Runtime(store_url, wake=False, lease_s=lease_s, bus=bus) as runtime:
        supervisor = runtime.supervisor
        supervisor.reserve(run_id)
        try:
            claim = await runtime.store.claim_run(
                run_id, runtime.owner, lease_s, steal_from=take_from
            )
        except RunEnded:
            supervisor.unreserve(run_id)
            return (await runtime.get_run(run_id)).status
        except BaseException:
            supervisor.unreserve(run_id)
            raise
        if claim is not None:
            await supervisor.adopt(claim, "claimed")
        else:
            supervisor.unreserve(run_id)
            while True:
                try:
                    await runtime.resume(run_id)
                    break
                except LeaseLost:  # another process drives it: wait for it to end or lapse
                    await asyncio.sleep(min(1.0, lease_s / 4))
                except RunEnded:
                    return (await runtime.get_run(run_id)).status
        result = await runtime.handle(run_id).wait_until_waiting()
        return result.status


def _drive_in_worker(
    store_url: str, run_id: str, take_from: str | None, lease_s: float, bus: str | None
) -> str:
    return asyncio.run(drive_run(store_url, run_id, take_from=take_from, lease_s=lease_s, bus=bus))


class RayChildren:
    """A ``ChildRunner`` that drives each child run as a Ray task.

    ``bus``: the bus URL the workers publish on (so that the parent's process hears a
    child end at once instead of at its next poll); ``max_retries``: how often a task
    whose worker died is run again; ``num_cpus``: what one task asks Ray for.
    """

    def __init__(
        self, *, bus: str | None = None, max_retries: int = 3, num_cpus: float = 0.5
    ) -> None:
        if max_retries < 0 or num_cpus <= 0:
            raise ConfigError("max_retries must be >= 0 and num_cpus positive")
        self.bus = bus
        self._task: Any = ray.remote(_drive_in_worker).options(
            max_retries=max_retries, num_cpus=num_cpus
        )

    def start_child(self, store_url: str, run_id: str, lease: Lease, lease_s: float) -> None:
        if not ray.is_initialized():
            raise ConfigError("Ray is not started here: call ray.init() (or join a cluster)")
        if store_url.startswith("memory:"):
            raise ConfigError(
                "Ray workers cannot see a memory:// store: use a file or PostgreSQL store"
            )
        self._task.remote(store_url, run_id, lease.owner, lease_s, self.bus)  # runs on its own
        log.info("run %s: handed to a Ray worker", run_id)
