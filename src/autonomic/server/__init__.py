"""The HTTP service (``pip install "autonomic[server]"``): runs as asynchronous jobs over a
versioned API, resumable event streams, API keys with scopes, tenants and rate limits,
and a dashboard, in one process.

``create_app(runtime, keys=..., routers=[...])`` builds the ASGI app; ``require_scope``
is the dependency a mounted router uses to sit behind the same keys. The web framework
is imported on first use, so ``autonomic.server.keys`` and the CLI work without it.
"""

from __future__ import annotations

import importlib
from typing import Any

from autonomic.errors import MissingExtra

__all__ = ["KeyStore", "Principal", "Server", "create_app", "require_scope", "serve"]

_WHERE = {
    "create_app": "autonomic.server.app",
    "require_scope": "autonomic.server.auth",
    "Principal": "autonomic.server.auth",
    "KeyStore": "autonomic.server.keys",
    "Server": "autonomic.server.serving",
    "serve": "autonomic.server.serving",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'autonomic.server' has no attribute {name!r}")
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as e:
        if isinstance(e, MissingExtra) or e.name not in {"fastapi", "uvicorn", "starlette"}:
            raise
        raise MissingExtra("server", "the HTTP service") from e
