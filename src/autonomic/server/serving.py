"""Running the app under uvicorn, so that stopping it is clean.

On Ctrl-C or SIGTERM the server stops accepting connections, ends every SSE stream at an
event boundary (its clients resume elsewhere from their last event id), lets requests
in flight finish, then closes the runtime: runs it was driving stay resumable.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

import uvicorn
from fastapi import FastAPI

__all__ = ["Server", "serve"]

GRACE_S = 10.0
"""How long requests in flight may take to finish once shutdown began."""


class Server(uvicorn.Server):
    """uvicorn's server, draining the app's event streams when it shuts down."""

    def __init__(self, app: FastAPI, *, host: str, port: int, log_level: str = "info") -> None:
        self.app = app
        super().__init__(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_level=log_level,
                lifespan="on",
                timeout_graceful_shutdown=int(GRACE_S),
                server_header=False,
            )
        )

    async def shutdown(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        self.app.state.draining.set()
        await super().shutdown(sockets)  # type: ignore[arg-type]

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Ctrl-C and SIGTERM stop the server; unlike uvicorn's own, the signal is not
        raised again afterwards, so the process exits normally."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self.handle_exit(sig, frame)


async def serve(app: FastAPI, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve ``app`` until Ctrl-C or SIGTERM."""
    await Server(app, host=host, port=port).serve()
