"""``GET /metrics`` (the Prometheus exposition of an instrumented runtime), ``/healthz``
and ``/readyz``, as FastAPI routers for the service to mount."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from autonomic.errors import ConfigError
from autonomic.telemetry.instrument import Instrumentation

if TYPE_CHECKING:
    from fastapi import APIRouter

    from autonomic.runtime import Runtime

__all__ = ["health_router", "metrics_router"]

READY_TIMEOUT_S = 2.0


def metrics_router(
    runtime: Runtime, instrumentation: Instrumentation, *, dependencies: Sequence[Any] = ()
) -> APIRouter:
    try:
        from fastapi import APIRouter
        from fastapi.responses import Response
    except ImportError:
        raise ConfigError(
            'the /metrics endpoint needs FastAPI: pip install "autonomic[server]"'
        ) from None
    from autonomic.telemetry.metrics import CONTENT_TYPE

    metrics = instrumentation.metrics
    if metrics is None:
        raise ConfigError("this runtime was instrumented without metrics: instrument(metrics=True)")
    router = APIRouter(tags=["telemetry"], dependencies=list(dependencies))

    @router.get(
        "/metrics",
        summary="Prometheus metrics of the runs this process sees",
        response_class=Response,
        response_model=None,
        responses={200: {"content": {CONTENT_TYPE: {}}}},
    )
    async def scrape() -> Response:
        try:
            driven = len(runtime.supervisor.drivers)
        except ConfigError:  # the runtime is not open (yet, or any more)
            driven = 0
        await metrics.refresh(driven)
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    return router


def health_router(runtime: Runtime) -> APIRouter:
    """``/healthz``: the process answers. ``/readyz``: and its store does too (503 if not),
    so a load balancer sends no work to a process that cannot record it."""
    import asyncio

    from fastapi import APIRouter
    from fastapi.responses import JSONResponse

    router = APIRouter(tags=["service"])

    @router.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", summary="The process and its store are ready", response_model=None)
    async def readyz() -> JSONResponse:
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                await runtime.store.list_runs(limit=1)
        except Exception as e:
            detail = str(e) or type(e).__name__
            return JSONResponse(
                {"status": "unavailable", "detail": f"the store does not answer: {detail}"},
                status_code=503,
            )
        return JSONResponse({"status": "ok"})

    return router
