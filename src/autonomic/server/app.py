"""The service's ASGI application: the ``/v1`` API, the dashboard at ``/``, and whatever
routers other parts mount (``create_app(runtime, routers=[...])``), all behind the same
keys, scopes and error format.

The app opens the runtime when it starts and closes it when it stops, so one process
serves the API and drives the runs it accepts; on start it also drives on the runs whose
process died on this host, so a server killed and restarted goes on at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from autonomic.errors import AutonomicError
from autonomic.owner import owner_is_dead_here
from autonomic.runtime import Runtime
from autonomic.server.auth import Principal, RateLimiter, authenticate, require_scope
from autonomic.server.docs import mount_docs
from autonomic.server.keys import KeyStore
from autonomic.server.problems import PROBLEM_RESPONSES, install_problem_handlers, problem_response
from autonomic.server.runs import get_runtime
from autonomic.server.runs import router as runs_router
from autonomic.server.schemas import AgentView, KeyView

__all__ = ["MAX_BODY_BYTES", "adopt_orphans", "create_app"]

log = logging.getLogger("autonomic.server")

MAX_BODY_BYTES = 256 * 1024


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, before anything reads them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.limit:
                await self._refuse(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        body, more = b"", True  # no length given (chunked): read it here, up to the limit
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, receive, send)
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                await self._refuse(scope, receive, send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            413, "Content Too Large", f"the request body is over the limit of {self.limit} bytes"
        )
        await response(scope, receive, send)


async def adopt_orphans(runtime: Runtime, limit: int = 1000) -> list[str]:
    """Drive on, now, the running runs whose process died on this host (a server killed
    and started again), instead of waiting for their leases to expire."""
    adopted = []
    for info in await runtime.store.list_runs(status="running", limit=limit):
        if info.lease_owner is None or not owner_is_dead_here(info.lease_owner):
            continue
        try:
            await runtime.resume(info.run_id)
        except AutonomicError as e:  # another process took it first, say
            log.info("did not adopt run %s: %s", info.run_id, e)
            continue
        adopted.append(info.run_id)
    if adopted:
        log.warning("adopted %d run(s) whose process died: %s", len(adopted), ", ".join(adopted))
    return adopted


def create_app(
    runtime: Runtime,
    *,
    keys: KeyStore | None = None,
    routers: Sequence[APIRouter] = (),
    heartbeat_s: float = 15.0,
    max_body_bytes: int = MAX_BODY_BYTES,
    dashboard: bool = True,
) -> FastAPI:
    """The app serving ``runtime``'s agents. ``keys`` holds the API keys (the default key
    file when not given); ``routers`` are mounted as they are, and declare
    ``Depends(require_scope(...))`` to sit behind the same keys."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.draining = asyncio.Event()
        async with runtime:
            await adopt_orphans(runtime)
            yield

    app = FastAPI(
        title="autonomic",
        version="1",
        summary="Durable runs of autonomous agents, as an HTTP service.",
        lifespan=lifespan,
        docs_url=None,  # mount_docs serves it without a CDN
        redoc_url=None,
    )
    app.state.runtime = runtime
    app.state.keys = keys if keys is not None else KeyStore()
    app.state.limiter = RateLimiter()
    app.state.heartbeat_s = heartbeat_s
    app.state.draining = asyncio.Event()
    install_problem_handlers(app)
    mount_docs(app)
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    app.include_router(runs_router)
    app.include_router(_meta_router())
    for router in routers:
        app.include_router(router)
    if dashboard:
        _mount_dashboard(app)
    return app


def _meta_router() -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["service"], responses=PROBLEM_RESPONSES)

    @router.get("/me", summary="The key this request is made with")
    async def whoami(key: Annotated[Principal, Depends(authenticate)]) -> KeyView:
        return KeyView(
            id=key.id,
            name=key.name,
            tenant=key.tenant,
            scopes=list(key.scopes),
            expires_at=key.expires_at,
        )

    @router.get("/agents", summary="The agents this server runs")
    async def agents(
        runtime: Annotated[Runtime, Depends(get_runtime)],
        key: Annotated[Principal, Depends(require_scope("runs:read"))],
    ) -> list[AgentView]:
        served = (runtime.registry.get(name) for name in sorted(runtime.registry.names()))
        return [
            AgentView(name=a.name, model=a.model_name, tools=[t.spec.name for t in a.tools])
            for a in served
            if a is not None
        ]

    return router


def _mount_dashboard(app: FastAPI) -> None:
    static = resources.files("autonomic.server") / "static"
    index = static / "index.html"

    @app.get("/", include_in_schema=False, response_class=HTMLResponse)
    async def dashboard() -> FileResponse:
        return FileResponse(str(index), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(static)), name="static")
