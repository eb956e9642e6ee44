"""The OpenAI-compatible adapter over real HTTP against a real llama.cpp server (bundled model).

The model is tiny, so these tests check the structure of what comes back, never the answer.
"""

from __future__ import annotations

import json

import pytest

from autonomic.models import Message, ModelRequest, ToolSpec
from autonomic.models.openai import OpenAIModel

from .model_fakes import ADD, WEATHER

pytestmark = pytest.mark.slow

FORCE_ADD = {"tool_choice": {"type": "function", "function": {"name": "add"}}}


def ask(text: str, tools: tuple[ToolSpec, ...] = ()) -> ModelRequest:
    return ModelRequest((Message("user", text),), tools=tools)


async def test_text_completion(llama_server: str) -> None:
    async with OpenAIModel("smollm2", base_url=llama_server, max_tokens=16) as model:
        response = await model.complete(ask("Say hello."))
    assert isinstance(response.text, str) and response.tool_calls == ()
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert "usage_estimated" not in response.meta
    assert response.cost == 0.0 and "price_unknown" not in response.meta


async def test_streamed_text_adds_up(llama_server: str) -> None:
    async with OpenAIModel("smollm2", base_url=llama_server, max_tokens=16) as model:
        chunks = [c async for c in model.stream(ask("Count to five."))]
    *deltas, last = chunks
    assert deltas and all(c.response is None for c in deltas)
    assert last.response is not None
    assert last.response.text == "".join(c.text for c in deltas)
    assert last.response.usage.output_tokens > 0


async def test_forced_tool_call(llama_server: str) -> None:
    async with OpenAIModel(
        "smollm2", base_url=llama_server, max_tokens=48, extra_body=FORCE_ADD
    ) as model:
        response = await model.complete(ask("What is 2 plus 3?", (ADD, WEATHER)))
    (call,) = response.tool_calls
    assert call.name == "add" and call.id and call.error is None
    assert set(call.arguments) <= {"a", "b"}


async def test_streamed_tool_call(llama_server: str) -> None:
    async with OpenAIModel(
        "smollm2", base_url=llama_server, max_tokens=48, extra_body=FORCE_ADD
    ) as model:
        chunks = [c async for c in model.stream(ask("What is 2 plus 3?", (ADD, WEATHER)))]
    final = chunks[-1].response
    assert final is not None
    (call,) = final.tool_calls
    assert call.name == "add" and call.error is None


async def test_tool_call_written_as_json_text(llama_server: str) -> None:
    """A server without native tool calls: the call comes back as JSON text and is read."""
    schema = {
        "type": "object",
        "properties": {"name": {"const": "add"}, "arguments": ADD.parameters},
        "required": ["name", "arguments"],
    }
    request = ModelRequest(
        (Message("user", "What is 2 plus 3? Reply with a tool call as JSON."),),
        tools=(ADD,),
        response_schema=schema,
    )
    async with OpenAIModel(
        "smollm2", base_url=llama_server, max_tokens=96, schema_format="json_object"
    ) as model:
        response = await model.complete(request)
    (call,) = response.tool_calls
    assert call.name == "add" and call.error is None and call.id == "call_0_0"
    assert response.meta["repaired"]


async def test_constrained_json_answer(llama_server: str) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "sunny": {"type": "boolean"}},
        "required": ["city", "sunny"],
    }
    request = ModelRequest((Message("user", "Describe Paris weather."),), response_schema=schema)
    async with OpenAIModel(
        "smollm2", base_url=llama_server, max_tokens=96, schema_format="json_object"
    ) as model:
        response = await model.complete(request)
    answer = json.loads(response.text)
    assert isinstance(answer["city"], str) and isinstance(answer["sunny"], bool)
