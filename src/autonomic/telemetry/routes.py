"""``GET /metrics``: the Prometheus exposition of an instrumented runtime, as a FastAPI
router for the service to mount (behind whatever dependencies it passes: a scope)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from autonomic.errors import ConfigError
from autonomic.telemetry.instrument import Instrumentation

if TYPE_CHECKING:
    from fastapi import APIRouter

    from autonomic.runtime import Runtime

__all__ = ["metrics_router"]


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
