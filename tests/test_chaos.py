"""Chaos on PostgreSQL: worker processes killed with SIGKILL, a lease holder stopped past its
lease, the server restarted, while runs make non-idempotent calls that append to a ledger.
Nothing may be lost, repeated or stranded (see ``chaos_kit``; ``bench/chaos.py`` soaks)."""

from __future__ import annotations

import pytest

from chaos_kit import CHARGES, Cluster, Drill, run_drill

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(180)]


def assert_nothing_lost_or_repeated(report: dict[str, object]) -> None:
    assert report["statuses"] == {"completed": report["runs"]}, report
    assert report["lost"] == 0 and report["stranded"] == 0, report
    assert report["duplicated_ledger_rows"] == 0 and report["logs_with_gaps"] == 0, report
    assert 0 < report["ledger_rows"] <= report["runs"] * CHARGES, report  # type: ignore[operator]


async def test_killed_and_stopped_workers_lose_and_repeat_nothing(pg_url: str) -> None:
    report = await run_drill(Drill(pg_url, runs=40, workers=3))
    assert_nothing_lost_or_repeated(report)
    assert report["killed"] == 4 and report["stopped_past_lease"] == 1, report


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
    assert report["pg_restarts"] == 2, report
