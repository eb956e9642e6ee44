"""The buses compared: how fast a hint crosses, and how many a second get through.

For each bus (in-process, Redis Streams on 127.0.0.1:6379, NATS JetStream on
127.0.0.1:4222):
- ``latency``: publish→receive of 500 hints, 2 ms apart, measured by a subscriber in
  another process (wall clocks of one machine) — except ``local``, which is one process
  by nature (same event loop);
- ``throughput``: 20,000 hints published back to back, until a plain subscriber (its own
  connection) received the last one; and ``group_throughput``: 2,000 hints through one
  consumer-group member, which acknowledges each before taking the next.

The design's target load is 1M agents x 10 turns a day = 116 steps/s; a step publishes
about 2 hints (the run's change, and a wake-up when it waits or ends), so
``target_load_headroom`` is a bus's throughput over 232 hints/s (goal: >= 40).
Usage: python bench/bus.py [--quick] [--kinds local,redis,nats]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import subprocess
import sys
import time
from typing import Any

from autonomic.bus import Bus, open_bus

URLS = {
    "local": "local://",
    "redis": "redis://127.0.0.1:6379/0",
    "nats": "nats://127.0.0.1:4222",
}
HINTS_PER_S_AT_TARGET = 116 * 2

SUBSCRIBER = """
import asyncio, json, sys, time
from autonomic.bus import open_bus

async def main():
    bus = open_bus(sys.argv[1])
    await bus.open()
    got = []
    async with bus.subscribe("bench") as sub:
        print("ready", flush=True)
        while len(got) < int(sys.argv[2]):
            message = await sub.next(10)
            if message is None:
                break
            got.append(time.time() - float(message))
    await bus.close()
    print(json.dumps(got), flush=True)

asyncio.run(main())
"""


def url_of(kind: str, prefix: str) -> str:
    return URLS[kind] if kind == "local" else f"{URLS[kind]}?prefix={prefix}"


def summary(seconds: list[float]) -> dict[str, Any]:
    ms = sorted(x * 1000 for x in seconds)
    return {
        "received": len(ms),
        "p50_ms": round(statistics.median(ms), 3),
        "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 3),
    }


async def latency_local(count: int) -> dict[str, Any]:
    bus = open_bus("local://")
    got: list[float] = []
    async with bus.subscribe("bench") as sub:
        for _ in range(count):
            bus.publish("bench", repr(time.perf_counter()))
            message = await sub.next(1)
            assert message is not None
            got.append(time.perf_counter() - float(message))
    return {"messages": count, **summary(got), "across": "one event loop"}


async def latency_across(url: str, count: int) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SUBSCRIBER, url, str(count), stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    assert (await proc.stdout.readline()).strip() == b"ready"
    bus = open_bus(url)
    await bus.open()
    await asyncio.sleep(0.2)
    for _ in range(count):
        bus.publish("bench", repr(time.time()))
        await asyncio.sleep(0.002)
    out, _ = await proc.communicate()
    await bus.close()
    got = json.loads(out.decode().strip().splitlines()[-1])
    return {"messages": count, **summary(got), "across": "two processes"}


async def throughput(publisher: Bus, receiver: Bus, count: int, group: str | None) -> float:
    """Hints per second from the first publish to the last receipt. The publisher yields
    every 100 hints, as a runtime between commits would (an in-process subscriber keeps
    only its newest 1000 unread hints)."""
    async with receiver.subscribe("flood", group=group) as sub:

        async def receive() -> int:
            received = 0
            while received < count and await sub.next(10) is not None:
                received += 1
            return received

        await asyncio.sleep(0.2)
        start = time.perf_counter()
        receiving = asyncio.create_task(receive())
        for i in range(count):
            publisher.publish("flood", str(i))
            if i % 100 == 99:
                await asyncio.sleep(0)
        received = await receiving
        elapsed = time.perf_counter() - start
    if received < count:
        raise RuntimeError(f"only {received} of {count} hints arrived")
    return count / elapsed


async def forget(kind: str, prefix: str) -> None:
    if kind == "redis":
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(URLS["redis"])
        async with client:
            keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
            if keys:
                await client.delete(*keys)
    elif kind == "nats":
        import nats

        nc = await nats.connect(URLS["nats"])
        await nc.jetstream().delete_stream(prefix)
        await nc.close()


async def bench(kind: str, quick: bool) -> dict[str, Any]:
    prefix = f"bench{secrets.token_hex(4)}"
    url = url_of(kind, prefix)
    n_latency, n_flood, n_group = (100, 2000, 300) if quick else (500, 20_000, 2000)
    try:
        if kind == "local":
            latency = await latency_local(n_latency)
            publisher = receiver = open_bus(url)
        else:
            latency = await latency_across(url, n_latency)
            publisher, receiver = open_bus(url), open_bus(url)
        await publisher.open()
        await receiver.open()
        try:
            rate = await throughput(publisher, receiver, n_flood, None)
            group_rate = await throughput(publisher, receiver, n_group, "bench")
        finally:
            await receiver.close()
            await publisher.close()
    finally:
        await forget(kind, prefix)
    return {
        "bus": kind,
        "latency": latency,
        "throughput_hints_per_s": round(rate),
        "group_throughput_hints_per_s": round(group_rate),
        "target_load_headroom": round(rate / HINTS_PER_S_AT_TARGET, 1),
        "target_load_headroom_goal": 40,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer hints (a smoke run)")
    parser.add_argument("--kinds", default="local,redis,nats", help="which buses")
    args = parser.parse_args()
    results = [await bench(kind, args.quick) for kind in args.kinds.split(",")]
    print(json.dumps({"buses": results}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
