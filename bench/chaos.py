"""The chaos drill at length (a soak): thousands of runs on PostgreSQL while workers are
SIGKILLed every few seconds, one is SIGSTOPped past its lease, and the server restarts.

The same drill as ``tests/test_chaos.py`` (``tests/chaos_kit.py``), on a PostgreSQL
cluster of its own (initdb in a temporary folder, so that restarting it disturbs nobody).
Prints one JSON object: what was done to the workers and the server, and the invariants,
each of which must be 0 (and ``ended`` must equal ``runs``).

Usage: python bench/chaos.py [--runs 2000] [--workers 4] [--kill-every-s 3]
       [--restarts 4] [--lease-s 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

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
    args = parser.parse_args()
    cluster = Cluster()
    cluster.start()
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
            restart_at=tuple((i + 1) / (args.restarts + 1) for i in range(args.restarts)),
            deadline_s=args.deadline_s,
            cluster=cluster,
        )
        report = await run_drill(drill)
    finally:
        cluster.stop()
    report["workers"] = args.workers
    report["passed"] = (
        report["ended"] == report["runs"]
        and report["lost"] == report["duplicated_ledger_rows"] == 0
        and report["stranded"] == report["logs_with_gaps"] == 0
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
