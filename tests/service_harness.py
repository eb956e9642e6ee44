"""A real service: uvicorn on a loopback port chosen by the OS, serving the test agents
over a fresh SQLite store and key file."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from fastapi import APIRouter

from autonomic import Runtime
from autonomic.server import KeyStore, Server, create_app
from service_agents import calc, chatty, frugal, payer, private, slow

ALL_SCOPES = ("runs:read", "runs:write", "approvals:write", "budgets:write")


@dataclass
class Service:
    url: str
    keys: KeyStore
    runtime: Runtime
    server: Server

    def key(self, *scopes: str, tenant: str = "acme", **options: float) -> str:
        _, token = self.keys.create(
            "test",
            tenant=tenant,
            scopes=scopes or ALL_SCOPES,
            **options,  # type: ignore[arg-type]
        )
        return token

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30)


async def start_service(
    tmp_path: Path,
    heartbeat_s: float = 15.0,
    routers: Callable[[Runtime], Sequence[APIRouter]] | None = None,
) -> tuple[Service, asyncio.Task[None]]:
    keys = KeyStore(tmp_path / "keys.json")
    runtime = Runtime(
        f"sqlite:///{tmp_path / 'runs.db'}", agents=[calc, payer, chatty, slow, frugal, private]
    )
    mounted = routers(runtime) if routers is not None else ()
    app = create_app(runtime, keys=keys, heartbeat_s=heartbeat_s, routers=mounted)
    server = Server(app, host="127.0.0.1", port=0, log_level="warning")
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return Service(f"http://127.0.0.1:{port}", keys, runtime, server), task


# -- the service as a separate process, as 'autonomic serve' runs it ------------------------

TESTS = Path(__file__).parent
SRC = TESTS.parent / "src"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    path = f"{SRC}{os.pathsep}{TESTS}"
    return {**os.environ, "PYTHONPATH": path, "AUTONOMIC_HOME": str(tmp_path), **extra}


def cli_key(tmp_path: Path, scopes: str = "runs:read,runs:write") -> str:
    """A key made by 'autonomic keys create' into tmp_path/keys.json."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "autonomic",
            "keys",
            "create",
            "--keys",
            str(tmp_path / "keys.json"),
            "--name",
            "ci",
            "--scopes",
            scopes,
            "--rate",
            "1000",
            "--burst",
            "1000",
        ],
        env=process_env(tmp_path),
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def launch(tmp_path: Path, port: int, *options: str, **env: str) -> subprocess.Popen[str]:
    """'autonomic serve' of the test agents over tmp_path/runs.db, answering on ``port``."""
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "autonomic",
            "--store",
            f"sqlite:///{tmp_path / 'runs.db'}",
            "serve",
            "--agents",
            "service_agents",
            "--port",
            str(port),
            "--keys",
            str(tmp_path / "keys.json"),
            *options,
        ],
        env=process_env(tmp_path, **env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/openapi.json").status_code == 200:
                return server
        except httpx.TransportError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise AssertionError(
                    f"the server did not start: {server.communicate()[1]}"
                ) from None
            time.sleep(0.05)
