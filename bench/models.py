"""Benchmark of the model layer; prints JSON.

    PYTHONPATH=src python bench/models.py [--calls 2000] [--skip-local] [--local tiny|brain]
                                          [--threads N]

- a bundled model through llama.cpp (SmolLM2-135M by default): load time, prompt and
  generation tokens per second, latency of one schema-constrained tool call;
- the time the OpenAI-compatible adapter and the wrapper stack add to a call: the
  difference from a bare ``httpx`` request to the same zero-latency fake server, on
  loopback (the server in another process, so it does not share the GIL) and through
  an in-process mock transport (no network noise at all).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing
import os
import platform
import socket
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from autonomic.models import (
    CachedModel,
    CircuitBreaker,
    CircuitBreakerModel,
    Fallback,
    FunctionModel,
    Message,
    Model,
    ModelRequest,
    ModelResponse,
    Retrying,
    ToolSpec,
    Usage,
)
from autonomic.models.openai import OpenAIModel

ADD = ToolSpec(
    "add",
    "Add two numbers.",
    {
        "type": "object",
        "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
        "required": ["a", "b"],
    },
)
WEATHER = ToolSpec(
    "get_weather",
    "Get the current weather for a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
GOALS = [
    "What is 17 plus 25?",
    "What's the weather in Paris?",
    "Add 3 and 4.",
    "Is it raining in Oslo?",
    "What is 100 plus 1?",
]

_COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "model": "bench-model",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 42, "completion_tokens": 9, "total_tokens": 51},
    }
).encode()
_RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(_COMPLETION)).encode()
    + b"\r\n\r\n"
    + _COMPLETION
)


class _ZeroLatency(asyncio.Protocol):
    """Answers every request on a keep-alive connection with the same completion at once."""

    def __init__(self) -> None:
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(rest) < length:
                return
            self.buffer = rest[length:]
            self.transport.write(_RESPONSE)


def _serve(sock: socket.socket) -> None:
    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_ZeroLatency, sock=sock)
        await server.serve_forever()

    asyncio.run(main())


def _request(goal: str) -> ModelRequest:
    return ModelRequest((Message("user", goal),), tools=(ADD, WEATHER))


Call = Callable[[int], Awaitable[Any]]


async def _per_call_us(calls: dict[str, Call], n: int, rounds: int = 7) -> dict[str, float]:
    """Median over interleaved rounds of the mean time per call of each, in microseconds.

    Interleaving puts every variant under the same drift (CPU frequency, the server
    process being scheduled), which matters when the differences are microseconds.
    """
    for call in calls.values():
        for i in range(min(200, n)):
            await call(i)
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            for i in range(n):
                await call(i)
            samples[name].append((time.perf_counter() - start) / n * 1e6)
    return {name: round(statistics.median(s), 1) for name, s in samples.items()}


async def _measure(client: httpx.AsyncClient, url: str, n: int) -> dict[str, float]:
    """Per-call time of a bare request, the adapter, and the adapter under wrappers."""
    body = json.dumps({"model": "bench-model", "messages": [{"role": "user", "content": "hi"}]})
    headers = {"content-type": "application/json"}

    async def bare(i: int) -> None:
        response = await client.post(f"{url}/chat/completions", content=body, headers=headers)
        json.loads(response.content)

    adapter = OpenAIModel("bench-model", base_url=url, http_client=client)
    guarded = Retrying(CircuitBreakerModel(adapter, breaker=CircuitBreaker("bench")))
    cached = CachedModel(Fallback([guarded, adapter]))
    fresh = itertools.count()
    request = _request(GOALS[0])
    timings = await _per_call_us(
        {
            "bare_httpx_request": bare,
            "adapter": lambda i: adapter.complete(request),
            "retry_breaker_adapter": lambda i: guarded.complete(request),
            "cache_miss_fallback_retry_breaker_adapter": lambda i: cached.complete(
                _request(f"goal {next(fresh)}")
            ),
            "cache_hit": lambda i: cached.complete(request),
        },
        n,
    )
    base = timings["bare_httpx_request"]
    overheads = {
        f"{name}_overhead_us": round(value - base, 1)
        for name, value in timings.items()
        if name not in ("bare_httpx_request", "cache_hit")
    }
    return {**{f"{k}_us": v for k, v in timings.items()}, **overheads}


def _mock_reply(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=_COMPLETION, headers={"content-type": "application/json"})


async def _adapter_overhead(calls: int) -> dict[str, Any]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    server = multiprocessing.get_context("fork").Process(target=_serve, args=(sock,), daemon=True)
    server.start()
    sock.close()
    try:
        async with httpx.AsyncClient() as client:
            loopback = await _measure(client, url, calls)
    finally:
        server.kill()
        server.join()
    async with httpx.AsyncClient(transport=httpx.MockTransport(_mock_reply)) as client:
        in_process = await _measure(client, "http://mock.test/v1", calls)
    return {
        "calls_per_round": calls,
        "loopback_zero_latency_server": loopback,
        "in_process_mock_transport": in_process,
    }


async def _wrappers_in_memory(calls: int) -> dict[str, float]:
    """What each wrapper costs around a model that answers instantly, in microseconds."""
    answer = ModelResponse(text="ok", usage=Usage(1, 1), cost=0.0)
    inner = FunctionModel(lambda request: answer)
    request = _request(GOALS[0])
    models: dict[str, Model] = {
        "bare_function_model": inner,
        "retrying": Retrying(inner),
        "circuit_breaker": CircuitBreakerModel(inner, breaker=CircuitBreaker("mem")),
        "fallback": Fallback([inner]),
        "cache_exact_hit": CachedModel(inner),
    }
    return await _per_call_us(
        {name: _completer(model, request) for name, model in models.items()}, calls
    )


def _completer(model: Model, request: ModelRequest) -> Call:
    return lambda i: model.complete(request)


async def _local_model(name: str, threads: int | None) -> dict[str, Any]:
    from autonomic.models._llamacpp import engine
    from autonomic.models.local import LocalModel

    model = LocalModel(name, max_tokens=128, n_threads=threads)
    load_s = await model.load()
    loaded = engine(model.path, 4096, threads)
    long_prompt = " ".join(["The quick brown fox jumps over the lazy dog."] * 40)

    def timed(max_tokens: int) -> dict[str, Any]:
        return loaded.chat(
            {
                "messages": [{"role": "user", "content": long_prompt + " Write a long story."}],
                "max_tokens": max_tokens,
                "temperature": 0.0,
                "cache_prompt": False,
            }
        )

    timings = (await asyncio.to_thread(timed, 128))["timings"]
    prompt_tokens = timings["prompt_n"]
    latencies, valid, calls = [], 0, 0
    for goal in GOALS * 2:
        start = time.perf_counter()
        response = await model.complete(_request(goal))
        latencies.append(time.perf_counter() - start)
        valid += all(c.error is None for c in response.tool_calls)
        calls += bool(response.tool_calls)
    return {
        "model": model.path.name,
        "threads": threads or "llama.cpp default",
        "load_s": round(load_s, 3),
        "prompt_tokens": prompt_tokens,
        "prompt_tokens_per_s": round(timings["prompt_per_second"], 1),
        "generation_tokens_per_s": round(timings["predicted_per_second"], 1),
        "constrained_tool_call": {
            "runs": len(latencies),
            "mean_s": round(statistics.mean(latencies), 3),
            "median_s": round(statistics.median(latencies), 3),
            "max_s": round(max(latencies), 3),
            "well_formed_fraction": valid / len(latencies),
            "chose_a_tool_fraction": calls / len(latencies),
        },
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--skip-local", action="store_true")
    parser.add_argument("--local", default="tiny", help="bundled model: tiny or brain")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads")
    args = parser.parse_args()
    report: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "openai_adapter_per_call": await _adapter_overhead(args.calls),
        "wrappers_in_memory_us": await _wrappers_in_memory(args.calls),
    }
    if not args.skip_local:
        report["embedded_model"] = await _local_model(args.local, args.threads)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
