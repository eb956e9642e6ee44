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


def forced_call(text: str) -> ModelRequest:
    """A request whose answer must be a call of ``add``, written as JSON (llama.cpp's
    server renders the tools but returns calls as text; the adapter reads them)."""
    schema = {
        "type": "object",
        "properties": {"name": {"const": "add"}, "arguments": ADD.parameters},
        "required": ["name", "arguments"],
    }
    return ModelRequest((Message("user", text),), tools=(ADD, WEATHER), response_schema=schema)


async def test_forced_tool_call(llama_server: str) -> None:
    async with OpenAIModel(
        "smollm2", base_url=llama_server, max_tokens=160, schema_format="json_object"
    ) as model:
        response = await model.complete(forced_call("What is 2 plus 3?"))
    (call,) = response.tool_calls
    assert call.name == "add" and call.id and call.error is None
    assert set(call.arguments) <= {"a", "b"}


async def test_streamed_tool_call(llama_server: str) -> None:
    async with OpenAIModel(
        "smollm2", base_url=llama_server, max_tokens=160, schema_format="json_object"
    ) as model:
        chunks = [c async for c in model.stream(forced_call("What is 2 plus 3?"))]
    final = chunks[-1].response
    assert final is not None
    assert len(final.tool_calls) == 1, final.text
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


async def test_a_tool_loop_goes_on_after_the_first_call(llama_server: str) -> None:
    """The second call carries the assistant turn with tool calls and the tool's result;
    the server must take it (llama-cpp-python's answered 500 to ``"content": null``)."""
    async with OpenAIModel(
        "smollm2", base_url=llama_server, max_tokens=160, schema_format="json_object"
    ) as model:
        first = await model.complete(forced_call("What is 2 plus 3?"))
        (call,) = first.tool_calls
        follow_up = ModelRequest(
            (
                Message("user", "What is 2 plus 3?"),
                Message("assistant", first.text, tool_calls=(call,)),
                Message("tool", "5", tool_call_id=call.id),
            ),
            tools=(ADD, WEATHER),
        )
    async with OpenAIModel("smollm2", base_url=llama_server, max_tokens=16) as model:
        second = await model.complete(follow_up)
    assert second.usage.input_tokens > first.usage.input_tokens
    assert second.text or second.tool_calls
