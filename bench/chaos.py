"""The chaos drill at length (a soak): thousands of runs on PostgreSQL while workers are
SIGKILLed every few seconds, one is SIGSTOPped past its lease, and the server restarts
(``--bus postgres``, the store's own bus) or the workers' bus broker does (``--bus redis``
or ``--bus nats``: a server of its own, killed and started again on the same port).

The same drill as ``tests/test_chaos.py`` (``tests/chaos_kit.py``), on a PostgreSQL
cluster of its own (initdb in a temporary folder, so that restarting it disturbs nobody).
Prints one JSON object: what was done to the workers and the servers, the invariants,
each of which must be 0 (and ``ended`` must equal ``runs``), and ``wake_ms``: how long a
run took to be driven by a worker that polls once a minute, so only through the bus (null:
not within 20 s), submitted under load before any restart, just after each restart, and
once all was quiet at the end.

Usage: python bench/chaos.py [--runs 2000] [--workers 4] [--kill-every-s 3]
       [--restarts 4] [--lease-s 2] [--bus postgres|redis|nats]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from bus_kinds import Broker
from chaos_kit import Cluster, Drill, run_drill


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--kill-every-s", type=float, default=3.0)
    parser.add_argument("--restarts", type=int, default=4)
    parser.add_argument("--lease-s", type=float, default=2.0)
    parser.add_argument("--deadline-s", type=float, default=1800.0)
    parser.add_argument("--bus", choices=("postgres", "redis", "nats"), default="postgres")
    args = parser.parse_args()
    restart_at = tuple((i + 1) / (args.restarts + 1) for i in range(args.restarts))
    broker = None if args.bus == "postgres" else Broker(args.bus)
    cluster = Cluster()
    cluster.start()
    if broker is not None:
        broker.start()
    try:
        drill = Drill(
            cluster.url,
            runs=args.runs,
            workers=args.workers,
            lease_s=args.lease_s,
            concurrency=args.concurrency,
            kill_at=(),
            kill_every_s=args.kill_every_s,
            stop_at=0.5,
            restart_at=restart_at if broker is None else (),
            deadline_s=args.deadline_s,
            cluster=cluster,
            bus=broker and f"{broker.url}?prefix=chaos",
            broker=broker,
            broker_restart_at=restart_at if broker is not None else (),
        )
        report = await run_drill(drill)
    finally:
        if broker is not None:
            broker.stop()
        cluster.stop()
    report["bus"], report["workers"], report["worker_log"] = args.bus, args.workers, str(drill.log)
    report["passed"] = (
        report["ended"] == report["runs"]
        and report["lost"] == report["duplicated_ledger_rows"] == 0
        and report["stranded"] == report["logs_with_gaps"] == 0
        and report["probes_woken"] == report["probes"]
        and report["worker_tracebacks"] == 0
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
