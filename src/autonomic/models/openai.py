"""OpenAI-compatible chat completions over plain HTTP: OpenAI, vLLM, Ollama, llama.cpp, SGLang...

One adapter serves every server that speaks ``/v1/chat/completions``: give it a base URL,
a model id and (where the server wants one) an API key. It talks ``httpx`` directly
rather than through a vendor SDK so that the small differences between servers (tool
call arguments as a string or an object, missing ids, calls written into the text) are
handled in one place, and so that a call adds well under a millisecond of overhead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal

import msgspec

from autonomic.errors import ConfigError, MalformedOutput, MissingExtra, ModelUnavailable
from autonomic.models._http import is_loopback, status_error
from autonomic.models._loops import PerLoop
from autonomic.models.base import (
    Message,
    ModelChunk,
    ModelRequest,
    ModelResponse,
    ToolCall,
    ToolSpec,
    Usage,
)
from autonomic.models.pricing import FREE, Price, PriceTable, cost_meta
from autonomic.models.repair import calls_from_text, make_call, turn_of
from autonomic.models.tokens import estimate_usage

try:
    import httpx
except ImportError as e:
    raise MissingExtra("openai", "the OpenAI-compatible model adapter") from e

__all__ = ["OPENAI_URL", "OpenAIModel"]

OPENAI_URL = "https://api.openai.com/v1"
_KEY_ENV_BY_HOST = {"openrouter.ai": "OPENROUTER_API_KEY"}
_JSON = {"content-type": "application/json"}


def _api_key(base_url: str, explicit: str | None) -> str | None:
    if explicit is not None:
        return explicit or None
    host = httpx.URL(base_url).host
    for suffix, env in _KEY_ENV_BY_HOST.items():
        if host.endswith(suffix) and os.environ.get(env):
            return os.environ[env]
    return os.environ.get("OPENAI_API_KEY") or None


def _errors_of(client: object) -> tuple[type[Exception], type[Exception]]:
    """The timeout and transport error classes of the package ``client`` comes from."""
    package = sys.modules.get(type(client).__module__.partition(".")[0]) if client else None
    timeout = getattr(package, "TimeoutException", None)
    transport = getattr(package, "TransportError", None)
    if isinstance(timeout, type) and isinstance(transport, type):
        return timeout, transport
    return httpx.TimeoutException, httpx.TransportError


def _wire_call(call: ToolCall) -> dict[str, Any]:
    function = {"name": call.name, "arguments": msgspec.json.encode(call.arguments).decode()}
    return {"id": call.id, "type": "function", "function": function}


def _wire_message(message: Message) -> dict[str, Any]:
    if message.role == "tool":
        call_id = message.tool_call_id or ""
        return {"role": "tool", "tool_call_id": call_id, "content": message.content}
    wire: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.name:
        wire["name"] = message.name
    if message.tool_calls:
        # Content stays a string, "" when empty: null (or no content at all) on a turn with
        # tool calls makes some servers fail (llama-cpp-python's answers 500).
        wire["tool_calls"] = [_wire_call(c) for c in message.tool_calls]
    return wire


def _wire_tool(spec: ToolSpec) -> dict[str, Any]:
    function = {"name": spec.name, "description": spec.description, "parameters": spec.parameters}
    return {"type": "function", "function": function}


def _content_text(content: object) -> str:
    """Message content as text: a string, null, or a list of typed parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


class _Stream:
    """Accumulates streamed deltas into the message a non-streamed call would have returned."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.data: dict[str, Any] = {}
        self.finish_reason: str | None = None
        self.done = False

    def add(self, chunk: dict[str, Any]) -> str:
        if chunk.get("error"):
            raise ModelUnavailable(f"the server failed mid-stream: {chunk['error']!r:.300}")
        for key in ("id", "model", "usage"):
            if chunk.get(key):
                self.data[key] = chunk[key]
        choices = chunk.get("choices") or []
        if not choices:
            return ""
        choice = choices[0]
        self.finish_reason = choice.get("finish_reason") or self.finish_reason
        delta = choice.get("delta") or {}
        for position, part in enumerate(delta.get("tool_calls") or []):
            self._add_call(part.get("index", position), part)
        text = _content_text(delta.get("content"))
        self.text.append(text)
        return text

    def _add_call(self, index: int, part: dict[str, Any]) -> None:
        call = self.calls.setdefault(index, {"id": None, "name": "", "arguments": ""})
        call["id"] = part.get("id") or call["id"]
        function = part.get("function") or {}
        name = function.get("name") or ""
        if name != call["name"]:  # some servers repeat the whole name in every chunk
            call["name"] += name
        arguments = function.get("arguments")
        if isinstance(arguments, str) and isinstance(call["arguments"], str):
            call["arguments"] += arguments
        elif arguments is not None:
            call["arguments"] = arguments

    def message(self) -> dict[str, Any]:
        calls = [
            {"id": c["id"], "function": {"name": c["name"], "arguments": c["arguments"]}}
            for _, c in sorted(self.calls.items())
        ]
        message = {"content": "".join(self.text), "tool_calls": calls}
        return {**self.data, "choices": [{"message": message, "finish_reason": self.finish_reason}]}


class OpenAIModel:
    """A model behind an OpenAI-compatible chat completions endpoint.

    ``api_key`` defaults to ``OPENROUTER_API_KEY`` for openrouter.ai, else ``OPENAI_API_KEY``;
    OpenAI itself needs one, a local server does not.

    Cost comes from ``price``, else the price table; a model the table does not know is
    free on a server on this machine (self-hosted) and counted pessimistically elsewhere.

    ``schema_format="json_object"`` sends a response schema the way llama-cpp-python's
    server reads it (``{"type": "json_object", "schema": ...}``) instead of OpenAI's
    ``json_schema``. ``http_client`` (proxies, TLS, a mock transport) is used as given
    and closed by whoever made it; it may be an ``httpx.AsyncClient`` or a client with the
    same API from another package (``httpx2``), whose errors are mapped the same way.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
        temperature: float | None = None,
        max_tokens: int | None = None,
        extra_body: Mapping[str, Any] | None = None,
        schema_format: Literal["json_schema", "json_object"] = "json_schema",
        price: Price | None = None,
        prices: PriceTable | None = None,
        http_client: httpx.AsyncClient | Any = None,
    ) -> None:
        if not model:
            raise ConfigError("an OpenAI-compatible model needs a model id: openai:gpt-4o-mini")
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_URL).rstrip("/")
        self._api_key = _api_key(self.base_url, api_key)
        if self._api_key is None and self.base_url == OPENAI_URL:
            raise ConfigError("OpenAI needs an API key: set OPENAI_API_KEY (or pass api_key=)")
        self._name = f"openai:{model}" if base_url is None else f"openai:{model}@{self.base_url}"
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        self._options: dict[str, Any] = dict(extra_body or {})
        if temperature is not None:
            self._options["temperature"] = temperature
        if max_tokens is not None:
            self._options["max_tokens"] = max_tokens
        self._schema_format = schema_format
        self._price = price
        self._unknown_price = FREE if is_loopback(self.base_url) else None
        self._prices = prices
        self._given_client = http_client
        self._timeout_errors, self._transport_errors = _errors_of(http_client)
        self._url = f"{self.base_url}/chat/completions"
        self._headers = dict(_JSON)
        if self._api_key:
            self._headers["authorization"] = f"Bearer {self._api_key}"
        self._clients = PerLoop(lambda: httpx.AsyncClient(timeout=self._timeout))

    @property
    def name(self) -> str:
        return self._name

    @property
    def endpoint(self) -> str:
        """What a circuit breaker is keyed by: one per server, shared by its models."""
        return self.base_url

    def _http(self) -> httpx.AsyncClient:
        return self._given_client or self._clients.get()

    async def aclose(self) -> None:
        """Close this loop's connection pool, if the model opened one (a later call reopens)."""
        client = self._clients.pop()
        if client is not None:
            await client.aclose()

    async def __aenter__(self) -> OpenAIModel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _body(self, request: ModelRequest, *, stream: bool) -> bytes:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [_wire_message(m) for m in request.messages],
        }
        if request.tools:
            body["tools"] = [_wire_tool(t) for t in request.tools]
        if request.response_schema is not None:
            body["response_format"] = self._response_format(request.response_schema)
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        body.update(self._options)
        if request.temperature is not None:
            body["temperature"] = request.temperature
        return msgspec.json.encode(body)

    def _response_format(self, schema: dict[str, Any]) -> dict[str, Any]:
        if self._schema_format == "json_object":
            return {"type": "json_object", "schema": schema}
        return {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}

    async def complete(self, request: ModelRequest) -> ModelResponse:
        try:
            response = await self._http().post(
                self._url, content=self._body(request, stream=False), headers=self._headers
            )
        except self._timeout_errors as e:
            raise ModelUnavailable(f"{self._name}: timed out ({type(e).__name__})") from None
        except self._transport_errors as e:
            raise ModelUnavailable(f"{self._name}: connection failed: {e!r:.300}") from None
        if response.status_code >= 400:
            raise status_error(response.status_code, response.text, response.headers, self._name)
        try:
            data = msgspec.json.decode(response.content)
        except msgspec.DecodeError:
            detail = f"{self._name}: the body is not JSON: {response.text:.200}"
            raise MalformedOutput(detail) from None
        return self._response(data, request)

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        """Text deltas as they arrive, then the whole response (tool calls, usage, cost)."""
        state = _Stream()
        body = self._body(request, stream=True)
        try:
            async with self._http().stream(
                "POST", self._url, content=body, headers=self._headers
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise status_error(
                        response.status_code, response.text, response.headers, self._name
                    )
                async for line in response.aiter_lines():
                    payload = line.removeprefix("data:").strip()
                    if not line.startswith("data:") or not payload:
                        continue
                    if payload == "[DONE]":
                        state.done = True
                        break
                    try:
                        text = state.add(msgspec.json.decode(payload))
                    except msgspec.DecodeError:
                        detail = f"{self._name}: bad stream chunk {payload:.200}"
                        raise MalformedOutput(detail) from None
                    if text:
                        yield ModelChunk(text=text)
        except self._timeout_errors as e:
            raise ModelUnavailable(f"{self._name}: timed out ({type(e).__name__})") from None
        except self._transport_errors as e:
            raise ModelUnavailable(f"{self._name}: connection failed: {e!r:.300}") from None
        if not state.done and state.finish_reason is None:
            raise ModelUnavailable(f"{self._name}: the stream ended before the answer did")
        yield ModelChunk(response=self._response(state.message(), request))

    def _response(self, data: object, request: ModelRequest) -> ModelResponse:
        if not isinstance(data, dict):
            raise MalformedOutput(f"{self._name}: expected a JSON object, got {data!r:.200}")
        choices = data.get("choices") or []
        if not choices or not isinstance(choices[0], dict):
            raise MalformedOutput(f"{self._name}: the response has no choices: {data!r:.300}")
        message = choices[0].get("message") or {}
        if not isinstance(message, dict):
            raise MalformedOutput(f"{self._name}: the message is not an object: {data!r:.300}")
        text = _content_text(message.get("content"))
        calls, text, repairs = _calls_from_message(message, text, request)
        meta: dict[str, Any] = {}
        usage = _usage(data.get("usage"))
        if usage is None:
            usage = estimate_usage(request, text, calls)
            meta["usage_estimated"] = True
        model_id = str(data.get("model") or self.model)
        cost, price_meta = cost_meta(
            model_id, usage, price=self._price, table=self._prices, unknown=self._unknown_price
        )
        meta.update(price_meta)
        if choices[0].get("finish_reason"):
            meta["finish_reason"] = choices[0]["finish_reason"]
        if repairs:
            meta["repaired"] = repairs
        return ModelResponse(
            text=text, tool_calls=tuple(calls), usage=usage, model=model_id, cost=cost, meta=meta
        )


def _calls_from_message(
    message: dict[str, Any], text: str, request: ModelRequest
) -> tuple[list[ToolCall], str, list[str]]:
    """The tool calls of a message (or written in its text), the text left, the repairs."""
    turn = turn_of(request)
    raw_calls = [c for c in message.get("tool_calls") or () if isinstance(c, dict)]
    if not raw_calls and isinstance(message.get("function_call"), dict):
        raw_calls = [{"function": message["function_call"]}]
    calls: list[ToolCall] = []
    repairs: list[str] = []
    for index, raw in enumerate(raw_calls):
        function = raw.get("function") or raw
        call, fixed = make_call(
            raw.get("id") or f"call_{turn}_{index}",
            str(function.get("name") or ""),
            function.get("arguments"),
            request.tools,
        )
        calls.append(call)
        repairs.extend(fixed)
    if not calls and request.tools:
        found = calls_from_text(text, request.tools, turn)
        if found is not None:
            return list(found[0]), "", list(found[1])
    return calls, text, repairs


def _usage(raw: object) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    prompt, completion = raw.get("prompt_tokens"), raw.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage(prompt, completion)
