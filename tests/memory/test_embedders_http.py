"""The OpenAI-compatible embedder against a real HTTP server on loopback, and exact token
counts with a real tokenizer.json."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from autonomic.errors import ConfigError, ModelUnavailable
from autonomic.memory import ContextWindow, TokenizerTokens
from autonomic.memory.embedders import OpenAIEmbedder
from autonomic.memory.tokens import EstimatedTokens

TOKENIZER = Path(__file__).parents[2] / "src" / "autonomic" / "memory" / "minilm-tokenizer.json"


class Embeddings(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, object]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Embeddings.seen.append(
            {"path": self.path, "auth": self.headers.get("Authorization"), **body}
        )
        if body["model"] == "broken":
            self.send_response(503)
            self.end_headers()
            self.wfile.write(b"overloaded")
            return
        data = [
            {"index": i, "embedding": [float(len(text)), 1.0, 0.0, 0.0]}
            for i, text in reversed(list(enumerate(body["input"])))
        ]
        payload = json.dumps({"data": data}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Embeddings)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


async def test_openai_embedder_posts_batches_and_normalises(server: str) -> None:
    embedder = OpenAIEmbedder("mini", base_url=server, api_key="k1", dim=4)
    vectors = await embedder.embed(["a", "abc"])
    await embedder.aclose()
    assert Embeddings.seen[-1] == {
        "path": "/v1/embeddings",
        "auth": "Bearer k1",
        "model": "mini",
        "input": ["a", "abc"],
    }
    assert vectors.shape == (2, 4) and np.allclose(np.linalg.norm(vectors, axis=1), 1)
    assert vectors[1][0] > vectors[0][0]  # rows come back in input order
    wrong = OpenAIEmbedder("mini", base_url=server, dim=8)
    with pytest.raises(ConfigError, match="expected"):
        await wrong.embed(["a"])
    await wrong.aclose()
    broken = OpenAIEmbedder("broken", base_url=server, dim=4)
    with pytest.raises(ModelUnavailable, match="503"):
        await broken.embed(["a"])
    await broken.aclose()


def test_a_tokenizer_counts_exactly_and_the_estimate_errs_high() -> None:
    exact = TokenizerTokens(TOKENIZER)
    assert exact.count("hello world") == 2
    text = "The quarterly report is due on the 14th of March. " * 20
    assert EstimatedTokens().count(text) >= exact.count(text)
    window = ContextWindow(max_tokens=512, reserve_output=64, counter=exact)
    assert window.budget == 448
    with pytest.raises(ConfigError, match="no tokenizer file"):
        TokenizerTokens("/nonexistent/tokenizer.json")
