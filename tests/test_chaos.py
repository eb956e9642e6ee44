"""Chaos on PostgreSQL: worker processes killed with SIGKILL, a lease holder stopped past its
lease, the server or the workers' bus broker (Redis, NATS) restarted, while runs make
non-idempotent calls that append to a ledger. Nothing may be lost, repeated or stranded,
and wake-ups must work again after each restart (see ``chaos_kit``; ``bench/chaos.py``
soaks)."""

from __future__ import annotations

import pytest

from bus_kinds import Broker
from chaos_kit import CHARGES, Cluster, Drill, run_drill

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(180)]


def assert_nothing_lost_or_repeated(report: dict[str, object]) -> None:
    assert report["statuses"] == {"completed": report["runs"]}, report
    assert report["lost"] == 0 and report["stranded"] == 0, report
    assert report["duplicated_ledger_rows"] == 0 and report["logs_with_gaps"] == 0, report
    assert report["worker_tracebacks"] == 0, report
    assert 0 < report["ledger_rows"] <= report["runs"] * CHARGES, report  # type: ignore[operator]
    # a probe run's worker polls once a minute: only a bus hint gets it driven in time
    assert report["probes_woken"] == report["probes"], report


@pytest.mark.parametrize("bus", ["postgres", "redis", "nats"])
async def test_killed_and_stopped_workers_lose_and_repeat_nothing(pg_url: str, bus: str) -> None:
    """On the store's own bus, or on a broker of its own that restarts twice meanwhile,
    the second time without its data."""
    broker = None if bus == "postgres" else Broker(bus)
    if broker is not None:
        broker.start()
    try:
        drill = Drill(
            pg_url, runs=40 if broker is None else 60, workers=3,
            bus=broker and f"{broker.url}?prefix=chaos", broker=broker,
            broker_restart_at=(0.25, 0.6) if broker else (),
        )  # fmt: skip
        report = await run_drill(drill)
    finally:
        if broker is not None:
            broker.stop()
    assert_nothing_lost_or_repeated(report)
    assert report["killed"] == 4 and report["stopped_past_lease"] == 1, report
    restarts = (0, 0) if broker is None else (2, 1)  # (the second comes back empty)
    assert (report.get("broker_restarts", 0), report.get("broker_restarts_empty", 0)) == restarts

    assert report["probes"] == 2 + report.get("broker_restarts", 0), report


async def test_postgres_restarts_lose_and_repeat_nothing() -> None:
    cluster = Cluster()
    cluster.start()
    try:
        drill = Drill(
            cluster.url, runs=40, workers=2, kill_at=(), stop_at=None, restart_at=(0.2, 0.6),
            cluster=cluster,
        )  # fmt: skip
        report = await run_drill(drill)
    finally:
        cluster.stop()
    assert_nothing_lost_or_repeated(report)
    assert report["pg_restarts"] == 2 and report["probes"] == 4, report
