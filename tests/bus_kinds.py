"""Every backend of the Bus protocol, opened fresh and isolated per test: each test gets
its own key prefix on the real Redis (6379), its own stream on the real NATS (4222),
removed afterwards, and its own channel on the real PostgreSQL (5432). ``Broker`` is a
Redis or NATS server of a test's own, for tests that stop and restart it."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from autonomic.bus import Bus, open_bus

BUS_KINDS = ["local", "redis", "nats", "postgres"]
REDIS_URL = "redis://127.0.0.1:6379/0"
NATS_URL = "nats://127.0.0.1:4222"
POSTGRES = os.environ.get(
    "AUTONOMIC_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def bus_url(kind: str, prefix: str, query: str = "") -> str:
    if kind == "local":
        return "local://"
    if kind == "postgres":  # the schema names the channel; nothing is left in the database
        return f"{POSTGRES}?schema={prefix}"
    base = REDIS_URL if kind == "redis" else NATS_URL
    return f"{base}?prefix={prefix}{query}"


@contextlib.asynccontextmanager
async def bus_for(kind: str, query: str = "") -> AsyncIterator[Bus]:
    prefix = f"t{secrets.token_hex(6)}"
    bus = open_bus(bus_url(kind, prefix, query))
    await bus.open()
    try:
        yield bus
    finally:
        await bus.close()
        await forget(kind, prefix)


async def forget(kind: str, prefix: str) -> None:
    """Remove what a test left on a broker."""
    if kind == "redis":
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(REDIS_URL)
        async with client:
            keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
            if keys:
                await client.delete(*keys)
    elif kind == "nats":
        import nats
        import nats.js.errors

        nc = await nats.connect(NATS_URL)
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await nc.jetstream().delete_stream(prefix)
        await nc.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """A private ``redis-server`` (append-only file) or ``nats-server -js`` on a free
    loopback port, with a data folder of its own; ``restart`` kills it (SIGKILL unless
    told) and starts it again on the same port and data, which ``wipe`` empties first."""

    def __init__(self, kind: str, data: Path | None = None, port: int | None = None) -> None:
        if kind not in ("redis", "nats"):
            raise ValueError(f"no private broker for {kind!r}: redis or nats")
        self.kind, self.port = kind, port or free_port()
        self._own_data = data is None
        self.data = data or Path(tempfile.mkdtemp(prefix=f"autonomic-{kind}-"))
        self.url = f"{kind}://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        port, data = str(self.port), str(self.data)
        if self.kind == "redis":
            argv = ["redis-server", "--port", port, "--bind", "127.0.0.1", "--dir", data]
            argv += ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
        else:
            argv = ["nats-server", "-a", "127.0.0.1", "-p", port, "-js", "-sd", data]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.process.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited with {self.process.returncode}")
            time.sleep(0.02)
        raise RuntimeError(f"{argv[0]} did not listen on port {port} within 20 s")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None:
            self.process.send_signal(sig)
            self.process.wait(timeout=20)
            self.process = None

    def restart(self, *, down_s: float = 0.5, wipe: bool = False) -> None:
        self.kill()
        if wipe:
            shutil.rmtree(self.data, ignore_errors=True)
        time.sleep(down_s)
        self.start()

    def stop(self) -> None:
        try:
            self.kill(signal.SIGTERM)
        finally:
            if self._own_data:
                shutil.rmtree(self.data, ignore_errors=True)
