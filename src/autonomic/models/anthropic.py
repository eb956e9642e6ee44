"""Anthropic's Messages API with tool use, through the official ``anthropic`` SDK.

The SDK's own retries are switched off: retrying, circuit breaking and fallback are the
job of the wrapper models, so that every attempt is visible and counted once.
"""

from __future__ import annotations

import os
from typing import Any, cast

import msgspec

from autonomic.errors import ConfigError, MissingExtra, ModelUnavailable
from autonomic.models._http import status_error
from autonomic.models._loops import PerLoop
from autonomic.models.base import Message, ModelRequest, ModelResponse, ToolCall, Usage
from autonomic.models.pricing import Price, PriceTable, cost_meta
from autonomic.models.repair import make_call

try:
    import anthropic
except ImportError as e:
    raise MissingExtra("anthropic", "the Anthropic model adapter") from e

__all__ = ["AnthropicModel"]

_RESPOND = "respond"
_LOCAL_KEY = "unused-by-a-local-server"


def _blocks(message: Message) -> list[dict[str, Any]]:
    if message.role == "tool":
        result = {"type": "tool_result", "tool_use_id": message.tool_call_id or ""}
        return [{**result, "content": message.content}]
    blocks: list[dict[str, Any]] = []
    if message.content:
        blocks.append({"type": "text", "text": message.content})
    blocks.extend(
        {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
        for c in message.tool_calls
    )
    return blocks


def _wire_messages(messages: tuple[Message, ...]) -> tuple[str, list[dict[str, Any]]]:
    """The system prompt and the alternating user/assistant turns the API requires."""
    system = "\n\n".join(m.content for m in messages if m.role == "system" and m.content)
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _blocks(message)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


def _object_schema(schema: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """A tool input schema for ``schema`` and whether the answer was wrapped in ``value``."""
    if schema.get("type") == "object":
        return schema, False
    return {"type": "object", "properties": {"value": schema}, "required": ["value"]}, True


class AnthropicModel:
    """A Claude model. The key comes from ``api_key`` or ``ANTHROPIC_API_KEY``.

    ``response_schema`` is honoured by forcing a single ``respond`` tool whose input is
    the answer, the documented way to get structured output from the Messages API.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        max_tokens: int = 4096,
        temperature: float | None = None,
        timeout: float = 120.0,
        price: Price | None = None,
        prices: PriceTable | None = None,
    ) -> None:
        if not model:
            raise ConfigError("an Anthropic model needs a model id: anthropic:claude-haiku-4-5")
        key = api_key or os.environ.get("ANTHROPIC_API_KEY")
        if key is None and base_url is None:
            raise ConfigError("Anthropic needs an API key: set ANTHROPIC_API_KEY or pass api_key=")
        self.model = model
        self.base_url = base_url
        self._key = key or _LOCAL_KEY
        self._name = f"anthropic:{model}" if base_url is None else f"anthropic:{model}@{base_url}"
        self._max_tokens = max_tokens
        self._temperature = temperature
        self._timeout = timeout
        self._price = price
        self._prices = prices
        self._clients = PerLoop(self._new_client)

    @property
    def name(self) -> str:
        return self._name

    @property
    def endpoint(self) -> str:
        return self.base_url or "https://api.anthropic.com"

    def _new_client(self) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(
            api_key=self._key, base_url=self.base_url, timeout=self._timeout, max_retries=0
        )

    async def aclose(self) -> None:
        """Close this loop's SDK client, if one was opened (a later call reopens)."""
        client = self._clients.pop()
        if client is not None:
            await client.close()

    async def __aenter__(self) -> AnthropicModel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _arguments(self, request: ModelRequest) -> tuple[dict[str, Any], bool]:
        system, turns = _wire_messages(request.messages)
        arguments: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self._max_tokens,
            "messages": turns,
        }
        if system:
            arguments["system"] = system
        temperature = self._temperature if request.temperature is None else request.temperature
        if temperature is not None:  # in the body: recent SDKs no longer take it as an argument
            arguments["extra_body"] = {"temperature": temperature}
        tools = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters}
            for t in request.tools
        ]
        wrapped = False
        if request.response_schema is not None and not tools:
            schema, wrapped = _object_schema(request.response_schema)
            tools = [{"name": _RESPOND, "description": "Give the answer.", "input_schema": schema}]
            arguments["tool_choice"] = {"type": "tool", "name": _RESPOND}
        if tools:
            arguments["tools"] = tools
        return arguments, wrapped

    async def complete(self, request: ModelRequest) -> ModelResponse:
        arguments, wrapped = self._arguments(request)
        messages = cast(Any, self._clients.get().messages)
        try:
            message = await messages.create(**arguments)
        except anthropic.APIStatusError as e:
            raise status_error(e.status_code, e.message, e.response.headers, self._name) from None
        except anthropic.APITimeoutError:
            raise ModelUnavailable(f"{self._name}: timed out") from None
        except anthropic.APIConnectionError as e:
            raise ModelUnavailable(f"{self._name}: connection failed: {e}") from None
        return self._response(message, request, wrapped)

    def _response(self, message: Any, request: ModelRequest, wrapped: bool) -> ModelResponse:
        texts: list[str] = []
        calls: list[ToolCall] = []
        repairs: list[str] = []
        for block in message.content:
            if block.type == "text":
                texts.append(block.text)
            elif block.type == "tool_use" and request.tools:
                call, fixed = make_call(block.id, block.name, block.input, request.tools)
                calls.append(call)
                repairs.extend(fixed)
            elif block.type == "tool_use" and block.name == _RESPOND:
                answer = block.input.get("value") if wrapped else block.input
                texts = [msgspec.json.encode(answer).decode()]
        usage = _usage(message.usage)
        cost, meta = cost_meta(message.model, usage, price=self._price, table=self._prices)
        meta["stop_reason"] = message.stop_reason
        if repairs:
            meta["repaired"] = repairs
        return ModelResponse(
            text="".join(texts),
            tool_calls=tuple(calls),
            usage=usage,
            model=message.model,
            cost=cost,
            meta=meta,
        )


def _usage(usage: Any) -> Usage:
    """Input tokens include prompt-cache writes and reads, so none go uncounted."""
    cached = (getattr(usage, "cache_creation_input_tokens", 0) or 0) + (
        getattr(usage, "cache_read_input_tokens", 0) or 0
    )
    return Usage(usage.input_tokens + cached, usage.output_tokens)
