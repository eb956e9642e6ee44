"""The Anthropic adapter against a loopback server replaying Messages API responses.

The responses in ``recordings/`` follow the Messages API wire format as documented;
no network and no key are used.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from autonomic.errors import ConfigError, ModelError, ModelUnavailable
from autonomic.models import Message, Model, ModelRequest, ToolCall
from autonomic.models.anthropic import AnthropicModel
from autonomic.models.pricing import default_prices

from .model_fakes import ADD, RECORDINGS, WEATHER, Reply, ServerFactory


def recording(name: str) -> Any:
    return json.loads((RECORDINGS / f"{name}.json").read_text())


def error_reply(kind: str) -> Reply:
    error = recording("anthropic_errors")[kind]
    return Reply(error["status"], error["body"], error["headers"])


async def model_for(start: ServerFactory, *replies: Reply) -> AnthropicModel:
    server = await start(list(replies))
    return AnthropicModel("claude-haiku-4-5", base_url=server.url, api_key="test-key")


CONVERSATION = (
    Message("system", "You are terse."),
    Message("user", "Weather in Paris and 2+3?"),
    Message(
        "assistant",
        "Looking both up.",
        tool_calls=(
            ToolCall("toolu_1", "get_weather", {"city": "Paris"}),
            ToolCall("toolu_2", "add", {"a": 2, "b": 3}),
        ),
    ),
    Message("tool", "18C, cloudy", tool_call_id="toolu_1"),
    Message("tool", "5", tool_call_id="toolu_2"),
)


async def test_tool_use(fake_server: ServerFactory) -> None:
    async with await model_for(fake_server, Reply(body=recording("anthropic_tool_use"))) as model:
        response = await model.complete(ModelRequest(CONVERSATION, tools=(ADD, WEATHER)))
    assert isinstance(model, Model)
    assert response.text == "I'll look up the weather in Paris."
    assert response.tool_calls == (
        ToolCall(
            "toolu_01A09q90qw90lq917835lq9", "get_weather", {"city": "Paris", "unit": "celsius"}
        ),
    )
    assert (response.usage.input_tokens, response.usage.output_tokens) == (384, 76)
    assert response.model == "claude-sonnet-4-5-20250929"
    assert response.meta["stop_reason"] == "tool_use"
    assert response.cost == pytest.approx((384 * 3.0 + 76 * 15.0) / 1e6)


async def test_wire_format(fake_server: ServerFactory) -> None:
    server = await fake_server([Reply(body=recording("anthropic_tool_use"))])
    async with AnthropicModel("claude-haiku-4-5", base_url=server.url, api_key="k-1") as model:
        await model.complete(ModelRequest(CONVERSATION, tools=(ADD, WEATHER)))
    sent = server.requests[0]
    assert sent.path == "/v1/messages"
    credentials = sent.headers.get("x-api-key", sent.headers.get("authorization", ""))
    assert credentials.endswith("k-1") and "anthropic-version" in sent.headers
    body = sent.json()
    assert body["system"] == "You are terse."
    assert body["max_tokens"] > 0
    assert [t["name"] for t in body["tools"]] == ["add", "get_weather"]
    assert body["tools"][0]["input_schema"] == ADD.parameters
    user, assistant, results = body["messages"]
    assert user == {
        "role": "user",
        "content": [{"type": "text", "text": "Weather in Paris and 2+3?"}],
    }
    assert assistant["content"][1] == {
        "type": "tool_use",
        "id": "toolu_1",
        "name": "get_weather",
        "input": {"city": "Paris"},
    }
    assert results["role"] == "user"
    assert [b["tool_use_id"] for b in results["content"]] == ["toolu_1", "toolu_2"]


async def test_text_answer_counts_prompt_cache_tokens(fake_server: ServerFactory) -> None:
    async with await model_for(fake_server, Reply(body=recording("anthropic_text"))) as model:
        response = await model.complete(ModelRequest((Message("user", "Weather?"),)))
    assert response.text == "It is 18 degrees and cloudy in Paris." and response.tool_calls == ()
    assert response.usage.input_tokens == 512 + 100 + 200
    assert response.cost is not None and response.cost > 0


async def test_structured_output_through_a_forced_tool(fake_server: ServerFactory) -> None:
    server = await fake_server([Reply(body=recording("anthropic_structured"))])
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    request = ModelRequest((Message("user", "Where?"),), response_schema=schema)
    async with AnthropicModel("claude-haiku-4-5", base_url=server.url, api_key="k") as model:
        response = await model.complete(request)
    assert json.loads(response.text) == {"city": "Paris", "temperature": 18}
    body = server.requests[0].json()
    assert body["tool_choice"] == {"type": "tool", "name": "respond"}
    assert body["tools"][0]["input_schema"] == schema


async def test_unknown_model_is_priced_pessimistically(fake_server: ServerFactory) -> None:
    body = {**recording("anthropic_text"), "model": "claude-future-9"}
    async with await model_for(fake_server, Reply(body=body)) as model:
        response = await model.complete(ModelRequest((Message("user", "Weather?"),)))
    assert response.meta["price_unknown"] is True
    highest = default_prices.highest()  # other tests may have taught the table pricier models
    assert highest.input >= 15.0 and highest.output >= 75.0
    assert response.cost == pytest.approx((812 * highest.input + 14 * highest.output) / 1e6)


@pytest.mark.parametrize(
    ("kind", "error", "retry_after"),
    [
        ("rate_limit", ModelUnavailable, 17.0),
        ("overloaded", ModelUnavailable, None),
        ("invalid_request", ModelError, None),
        ("authentication", ModelError, None),
    ],
)
async def test_errors(
    fake_server: ServerFactory, kind: str, error: type[ModelError], retry_after: float | None
) -> None:
    async with await model_for(fake_server, error_reply(kind)) as model:
        with pytest.raises(error) as raised:
            await model.complete(ModelRequest((Message("user", "hi"),)))
    assert type(raised.value) is error
    if isinstance(raised.value, ModelUnavailable):
        assert raised.value.retry_after == retry_after


async def test_dropped_connection_is_unavailable(fake_server: ServerFactory) -> None:
    async with await model_for(fake_server, Reply(drop=True)) as model:
        with pytest.raises(ModelUnavailable):
            await model.complete(ModelRequest((Message("user", "hi"),)))


def test_needs_a_key_for_the_real_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        AnthropicModel("claude-haiku-4-5")


async def test_a_request_temperature_is_sent_and_none_is_left_out(
    fake_server: ServerFactory,
) -> None:
    server = await fake_server([Reply(body=recording("anthropic_tool_use")) for _ in range(2)])
    async with AnthropicModel("claude-haiku-4-5", base_url=server.url, api_key="k") as model:
        await model.complete(ModelRequest(CONVERSATION))
        await model.complete(ModelRequest(CONVERSATION, temperature=0.9))
    first, second = (r.json() for r in server.requests)
    assert "temperature" not in first and second["temperature"] == 0.9
