"""Pick a sandbox backend by name, importing it only when it is asked for."""

from __future__ import annotations

import importlib
from typing import Any

from autonomic.errors import ConfigError
from autonomic.sandbox.base import Sandbox

__all__ = ["BACKENDS", "open_sandbox"]

BACKENDS = {
    "bwrap": "autonomic.sandbox.bwrap:BwrapSandbox",
    "process": "autonomic.sandbox.process:ProcessSandbox",
}


def open_sandbox(backend: str = "bwrap", **options: Any) -> Sandbox:
    """A sandbox by backend name (``"bwrap"``, ``"process"``; ``"bwrap://"`` also works).

    ``options`` go to the backend (``limits=``, ``warm=``, ``python=``...). Use the result
    as an async context manager to keep warm executions ready while it is open.
    """
    name = backend.removesuffix("://")
    if name not in BACKENDS:
        known = ", ".join(sorted(BACKENDS))
        raise ConfigError(f"unknown sandbox backend {backend!r}; known backends: {known}")
    module, _, attr = BACKENDS[name].partition(":")
    sandbox: Sandbox = getattr(importlib.import_module(module), attr)(**options)
    return sandbox
