"""How long wake-ups stop when a bus broker restarts.

For Redis Streams and NATS JetStream, each on a private server (``tests/bus_kinds.py``):
a publisher sends a hint every millisecond (a busy worker: some of its hints are on the
wire when the server dies) while the broker is SIGKILLed, kept down ``--down-s`` and
started again on its port; ``gap_s`` is, for each restart, how long after the server
listened again a follower (another connection) first heard a hint published after that.
Every other restart comes back without its data. Prints one JSON object.

Usage: python bench/bus_restart.py [--restarts 4] [--down-s 0.5] [--kinds redis,nats]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from autonomic.bus import open_bus
from bus_kinds import Broker


async def busy(publisher: Any, stop: asyncio.Event) -> None:
    while not stop.is_set():
        publisher.publish("ready", repr(time.monotonic()))
        await asyncio.sleep(0.001)


async def gaps(kind: str, restarts: int, down_s: float) -> list[float]:
    broker = Broker(kind)
    broker.start()
    publisher, listener = open_bus(f"{broker.url}?prefix=gap"), open_bus(f"{broker.url}?prefix=gap")
    await publisher.open()
    await listener.open()
    follower: Any = await listener.subscribe("ready").__aenter__()
    found: list[float] = []
    try:
        for i in range(restarts):
            stop = asyncio.Event()
            pump = asyncio.create_task(busy(publisher, stop))
            await asyncio.sleep(0.3)
            await asyncio.to_thread(broker.restart, down_s=down_s, wipe=i % 2 == 1)
            back = time.monotonic()
            while True:  # (an empty message is a wake-up after a reconnect, not a hint)
                message = await follower.next(30.0)
                if message is None:
                    raise RuntimeError(f"{kind}: nothing heard within 30 s of a restart")
                if message and float(message) > back:
                    break
            found.append(round(time.monotonic() - back, 3))
            stop.set()
            await pump
            while await follower.next(0.2) is not None:
                pass
    finally:
        await follower.__aexit__(None, None, None)
        await listener.close()
        await publisher.close()
        broker.stop()
    return found


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--restarts", type=int, default=4)
    parser.add_argument("--down-s", type=float, default=0.5)
    parser.add_argument("--kinds", default="redis,nats")
    args = parser.parse_args()
    report: dict[str, Any] = {"restarts": args.restarts, "down_s": args.down_s}
    for kind in args.kinds.split(","):
        found = await gaps(kind, args.restarts, args.down_s)
        report[kind] = {"gap_s": found, "gap_s_median": round(statistics.median(found), 3)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
