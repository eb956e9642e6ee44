"""What ``autonomic serve`` mounts beside the ``/v1`` API: ``/healthz`` and ``/readyz``,
Prometheus ``/metrics`` (scope ``metrics:read``) fed by a commit tap on the runtime, and
the A2A endpoint of every served agent, whose calls need a key like the API's (sending
a message or cancelling needs ``runs:write``, reading ``runs:read``; a key sees only its
tenant's tasks)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPBearer

from autonomic.a2a.server import a2a_router
from autonomic.server.auth import authenticate, require_scope
from autonomic.telemetry import instrument
from autonomic.telemetry.routes import health_router, metrics_router

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

    from autonomic.runtime import Runtime

__all__ = ["key_access", "observability_routers"]

_bearer = HTTPBearer(auto_error=False)


async def key_access(request: Request, scope: str) -> str | None:
    """The A2A endpoint's access check: the API's keys, scopes and rate limits."""
    key = await authenticate(request, await _bearer(request))
    await require_scope(scope)(key)
    return key.tenant


def observability_routers(
    runtime: Runtime, *, exporter: SpanExporter | None = None
) -> list[APIRouter]:
    """The routers, with ``runtime`` instrumented (spans of ended runs go to ``exporter``)."""
    instrumentation = instrument(runtime, exporter=exporter)
    return [
        health_router(runtime),
        metrics_router(
            runtime, instrumentation, dependencies=[Depends(require_scope("metrics:read"))]
        ),
        a2a_router(runtime, access=key_access, bearer=True),
    ]
