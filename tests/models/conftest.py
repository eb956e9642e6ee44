"""Fixtures for the model tests: a real llama.cpp server and scripted HTTP servers."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path

import pytest

from .model_fakes import FakeServer, Reply, Request, ServerFactory, smallest_bundled

SERVER_START_LIMIT = 100.0
LLAMA_SERVER = Path(__file__).with_name("llama_server.py")
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture
async def fake_server() -> AsyncIterator[ServerFactory]:
    """Starts scripted servers on loopback; all are stopped when the test ends."""
    servers: list[FakeServer] = []

    async def start(script: Sequence[Reply] | Callable[[Request], Reply]) -> FakeServer:
        server = await FakeServer(script).__aenter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.__aexit__(None, None, None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _ready(url: str) -> bool:
    try:
        with _NO_PROXY.open(f"{url}/models", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama.cpp's own server (``llama_server.py``) serving the smallest bundled model;
    yields its ``/v1`` base URL."""
    pytest.importorskip("xllamacpp", reason='needs pip install "autonomic[local]"')
    from autonomic.models.bundled import bundled_path

    model = bundled_path(smallest_bundled())
    port = _free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    command = [sys.executable, str(LLAMA_SERVER), str(model), str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + SERVER_START_LIMIT
        while not _ready(url):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the llama.cpp server did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.25)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
