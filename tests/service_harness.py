"""A real service: uvicorn on a loopback port chosen by the OS, serving the test agents
over a fresh SQLite store and key file."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from fastapi import APIRouter

from autonomic import Runtime
from autonomic.server import KeyStore, Server, create_app
from service_agents import calc, chatty, frugal, payer, slow

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
        f"sqlite:///{tmp_path / 'runs.db'}", agents=[calc, payer, chatty, slow, frugal]
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
