"""The OpenAI-compatible adapter against scripted servers: wire format, quirks, errors, streams."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from autonomic.errors import ConfigError, MalformedOutput, ModelError, ModelUnavailable
from autonomic.models import (
    CircuitBreakerModel,
    Message,
    Model,
    ModelRequest,
    Retrying,
    StreamingModel,
    ToolCall,
    ToolSpec,
    resolve_model,
)
from autonomic.models.openai import OpenAIModel

from .model_fakes import ADD, Reply, ServerFactory


def completion(
    message: dict[str, Any], *, usage: dict[str, int] | None = None, model: str = "served-model"
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": "stop"}
        ],
    }
    if usage is not None:
        body["usage"] = usage
    return body


USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


def ask(text: str = "hi", tools: tuple[ToolSpec, ...] = ()) -> ModelRequest:
    return ModelRequest((Message("user", text),), tools=tools)


async def model_for(start: ServerFactory, *replies: Reply, **options: Any) -> OpenAIModel:
    server = await start(list(replies))
    return OpenAIModel("served-model", base_url=f"{server.url}/v1", **options)


async def test_text_answer_with_usage(fake_server: ServerFactory) -> None:
    body = completion({"content": "hello"}, usage=USAGE)
    async with await model_for(fake_server, Reply(body=body)) as model:
        response = await model.complete(ask())
    assert isinstance(model, Model) and isinstance(model, StreamingModel)
    assert response.text == "hello" and response.tool_calls == ()
    assert (response.usage.input_tokens, response.usage.output_tokens) == (11, 7)
    assert response.model == "served-model"
    assert response.cost == 0.0 and "price_unknown" not in response.meta


async def test_request_wire_format(fake_server: ServerFactory) -> None:
    server = await fake_server([Reply(body=completion({"content": "ok"}, usage=USAGE))])
    request = ModelRequest(
        (
            Message("system", "be brief"),
            Message("user", "add 2 and 3"),
            Message("assistant", "", tool_calls=(ToolCall("call_1", "add", {"a": 2, "b": 3}),)),
            Message("tool", "5", tool_call_id="call_1"),
        ),
        tools=(ADD,),
    )
    async with OpenAIModel(
        "m", base_url=f"{server.url}/v1", api_key="sk-test", temperature=0.0
    ) as model:
        await model.complete(request)
    sent = server.requests[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-test"
    body = sent.json()
    assert body["model"] == "m" and body["temperature"] == 0.0
    assert body["tools"][0] == {
        "type": "function",
        "function": {"name": "add", "description": ADD.description, "parameters": ADD.parameters},
    }
    assistant, tool = body["messages"][2], body["messages"][3]
    assert assistant["content"] == ""  # a string: null makes llama-cpp-python's server fail
    assert assistant["tool_calls"][0]["function"] == {"name": "add", "arguments": '{"a":2,"b":3}'}
    assert tool == {"role": "tool", "tool_call_id": "call_1", "content": "5"}


async def test_a_local_server_needs_no_key(
    fake_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server = await fake_server([Reply(body=completion({"content": "ok"}))])
    async with OpenAIModel("m", base_url=f"{server.url}/v1") as model:
        await model.complete(ask())
    assert "authorization" not in server.requests[0].headers


def test_openai_itself_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAIModel("gpt-4o-mini")


@pytest.mark.parametrize(
    ("raw_call", "expected_id"),
    [
        (
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "add", "arguments": '{"a":1,"b":2}'},
            },
            "c1",
        ),
        ({"function": {"name": "add", "arguments": {"a": 1, "b": 2}}}, "call_0_0"),
        ({"id": "c2", "function": {"name": "ADD", "arguments": '{"a":1,"b":2} trailing'}}, "c2"),
        ({"id": "c3", "function": {"name": "add", "arguments": "{'a': 1, 'b': 2}"}}, "c3"),
        ({"id": "c4", "function": {"name": "add", "arguments": '"{\\"a\\":1,\\"b\\":2}"'}}, "c4"),
    ],
    ids=[
        "standard",
        "object-arguments-no-id",
        "wrong-case-trailing-text",
        "single-quotes",
        "double-encoded",
    ],
)
async def test_tool_call_variants(
    fake_server: ServerFactory, raw_call: dict[str, Any], expected_id: str
) -> None:
    body = completion({"content": None, "tool_calls": [raw_call]}, usage=USAGE)
    async with await model_for(fake_server, Reply(body=body)) as model:
        response = await model.complete(ask("add", (ADD,)))
    assert response.tool_calls == (ToolCall(expected_id, "add", {"a": 1, "b": 2}),)


async def test_unrepairable_arguments_become_a_call_with_an_error(
    fake_server: ServerFactory,
) -> None:
    raw = {"id": "c1", "function": {"name": "add", "arguments": '{"a": 1, "b": '}}
    body = completion({"tool_calls": [raw]}, usage=USAGE)
    async with await model_for(fake_server, Reply(body=body)) as model:
        response = await model.complete(ask("add", (ADD,)))
    (call,) = response.tool_calls
    assert call.name == "add" and call.arguments == {} and call.error


async def test_unknown_tool_is_reported_not_guessed(fake_server: ServerFactory) -> None:
    raw = {"id": "c1", "function": {"name": "multiply", "arguments": "{}"}}
    body = completion({"tool_calls": [raw]}, usage=USAGE)
    async with await model_for(fake_server, Reply(body=body)) as model:
        response = await model.complete(ask("add", (ADD,)))
    assert response.tool_calls[0].error is not None
    assert "multiply" in response.tool_calls[0].error


@pytest.mark.parametrize(
    "content",
    [
        '{"name": "add", "arguments": {"a": 1, "b": 2}}',
        '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>',
        '```json\n{"function": {"name": "add", "parameters": {"a": 1, "b": 2}}}\n```',
    ],
    ids=["bare-json", "hermes-tags", "fenced"],
)
async def test_tool_calls_written_in_the_text(fake_server: ServerFactory, content: str) -> None:
    body = completion({"content": content}, usage=USAGE)
    async with await model_for(fake_server, Reply(body=body)) as model:
        response = await model.complete(ask("add", (ADD,)))
    assert response.text == ""
    assert response.tool_calls == (ToolCall("call_0_0", "add", {"a": 1, "b": 2}),)
    assert response.meta["repaired"]


async def test_json_text_naming_no_tool_stays_text(fake_server: ServerFactory) -> None:
    body = completion({"content": '{"name": "Ada", "age": 36}'}, usage=USAGE)
    async with await model_for(fake_server, Reply(body=body)) as model:
        response = await model.complete(ask("who", (ADD,)))
    assert response.tool_calls == () and response.text == '{"name": "Ada", "age": 36}'


async def test_missing_usage_is_estimated_never_zero(fake_server: ServerFactory) -> None:
    body = completion({"content": "an answer of some length"})
    async with await model_for(fake_server, Reply(body=body)) as model:
        response = await model.complete(ask("a question"))
    assert response.meta["usage_estimated"] is True
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0


@pytest.mark.parametrize(
    ("reply", "error", "retry_after"),
    [
        (
            Reply(429, {"error": {"message": "slow down"}}, {"retry-after": "3"}),
            ModelUnavailable,
            3.0,
        ),
        (Reply(429, {"error": {}}, {"retry-after-ms": "250"}), ModelUnavailable, 0.25),
        (Reply(503, {"error": {"message": "overloaded"}}), ModelUnavailable, None),
        (Reply(400, {"error": {"message": "bad request"}}), ModelError, None),
        (Reply(401, {"error": {"message": "no key"}}), ModelError, None),
        (Reply(drop=True), ModelUnavailable, None),
        (Reply(200, b"<html>not json</html>"), MalformedOutput, None),
        (Reply(200, {"choices": []}), MalformedOutput, None),
    ],
    ids=["429", "429-ms", "503", "400", "401", "dropped", "not-json", "no-choices"],
)
async def test_errors_are_mapped(
    fake_server: ServerFactory,
    reply: Reply,
    error: type[ModelError],
    retry_after: float | None,
) -> None:
    async with await model_for(fake_server, reply) as model:
        with pytest.raises(error) as raised:
            await model.complete(ask())
    assert type(raised.value) is error
    if isinstance(raised.value, ModelUnavailable):
        assert raised.value.retry_after == retry_after


async def test_a_slow_server_times_out_as_unavailable(fake_server: ServerFactory) -> None:
    async with await model_for(fake_server, Reply(delay=30), timeout=0.2) as model:
        with pytest.raises(ModelUnavailable, match="timed out"):
            await model.complete(ask())


async def test_connection_refused_is_unavailable() -> None:
    async with OpenAIModel("m", base_url="http://127.0.0.1:9/v1") as model:
        with pytest.raises(ModelUnavailable):
            await model.complete(ask())


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
async def test_an_httpx2_client_fails_like_any_other(
    fake_server: ServerFactory, stream: bool
) -> None:
    """The MCP SDK's httpx fork raises its own errors; they are still transport errors."""
    httpx2 = pytest.importorskip("httpx2")
    server = await fake_server([Reply(drop=True)])
    async with httpx2.AsyncClient() as client:
        model = OpenAIModel("m", base_url=f"{server.url}/v1", http_client=client)
        with pytest.raises(ModelUnavailable, match="connection failed"):
            if stream:
                _ = [chunk async for chunk in model.stream(ask())]
            else:
                await model.complete(ask())
    async with httpx2.AsyncClient() as client:
        model = OpenAIModel("m", base_url="http://127.0.0.1:9/v1", http_client=client)
        with pytest.raises(ModelUnavailable):
            await model.complete(ask())


@pytest.mark.parametrize(("status", "attempts"), [(500, 2), (502, 4), (503, 4), (429, 4)])
async def test_a_500_is_tried_once_more_other_transient_statuses_four_times(
    fake_server: ServerFactory, status: int, attempts: int
) -> None:
    server = await fake_server([Reply(status, {"error": {"message": "failed"}})])
    async with OpenAIModel("m", base_url=f"{server.url}/v1") as inner:
        model = Retrying(inner, attempts=4, base_delay=0.0, jitter=0.0)
        with pytest.raises(ModelUnavailable, match=f"HTTP {status}"):
            await model.complete(ask())
    assert len(server.requests) == attempts


async def test_a_model_string_retries_and_breaks_by_default(fake_server: ServerFactory) -> None:
    server = await fake_server(
        [Reply(503, {"error": {"message": "busy"}}), Reply(body=completion({"content": "ok"}))]
    )
    model = resolve_model(f"openai:m@{server.url}/v1")
    assert isinstance(model, Retrying) and isinstance(model.inner, CircuitBreakerModel)
    adapter = model.inner.inner
    assert isinstance(adapter, OpenAIModel)
    async with adapter:
        response = await model.complete(ask())
    assert response.text == "ok" and response.meta["attempts"] == 2


async def test_a_model_string_without_resilience_fails_at_once(fake_server: ServerFactory) -> None:
    server = await fake_server([Reply(503, {"error": {"message": "busy"}})])
    model = resolve_model(f"openai:m@{server.url}/v1", resilience=None)
    assert isinstance(model, OpenAIModel)
    async with model:
        with pytest.raises(ModelUnavailable):
            await model.complete(ask())
    assert len(server.requests) == 1


def stream_of(*chunks: dict[str, Any], done: bool = True) -> Reply:
    events: list[Any] = [{"id": "chatcmpl-1", "model": "served-model", **c} for c in chunks]
    return Reply(events=[*events, "[DONE]"] if done else events)


def delta(finish: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": fields, "finish_reason": finish}]}


async def test_streaming_text(fake_server: ServerFactory) -> None:
    reply = stream_of(
        delta(role="assistant", content=""),
        delta(content="Hel"),
        delta(content="lo"),
        delta(finish="stop"),
        {"choices": [], "usage": USAGE},
    )
    async with await model_for(fake_server, reply) as model:
        chunks = [c async for c in model.stream(ask())]
    assert [c.text for c in chunks[:-1]] == ["Hel", "lo"]
    final = chunks[-1].response
    assert final is not None and final.text == "Hello"
    assert final.usage.input_tokens == 11 and final.meta["finish_reason"] == "stop"


async def test_streaming_tool_call_fragments(fake_server: ServerFactory) -> None:
    first = {
        "index": 0,
        "id": "call_x",
        "type": "function",
        "function": {"name": "add", "arguments": ""},
    }
    reply = stream_of(
        delta(tool_calls=[first]),
        delta(tool_calls=[{"index": 0, "function": {"arguments": '{"a": 1,'}}]),
        delta(tool_calls=[{"index": 0, "function": {"arguments": ' "b": 2}'}}]),
        delta(tool_calls=[{"index": 1, "id": "call_y", "function": {"name": "add"}}]),
        delta(tool_calls=[{"index": 1, "function": {"arguments": '{"a": 3, "b": 4}'}}]),
        delta(finish="tool_calls"),
    )
    async with await model_for(fake_server, reply) as model:
        chunks = [c async for c in model.stream(ask("add", (ADD,)))]
    final = chunks[-1].response
    assert final is not None
    assert final.tool_calls == (
        ToolCall("call_x", "add", {"a": 1, "b": 2}),
        ToolCall("call_y", "add", {"a": 3, "b": 4}),
    )
    assert final.meta["usage_estimated"] is True


async def test_stream_cut_before_the_end_is_unavailable(fake_server: ServerFactory) -> None:
    reply = stream_of(delta(content="Hel"), done=False)
    async with await model_for(fake_server, reply) as model:
        with pytest.raises(ModelUnavailable, match="ended"):
            [c async for c in model.stream(ask())]


async def test_stream_error_status(fake_server: ServerFactory) -> None:
    async with await model_for(
        fake_server, Reply(429, {"error": {}}, {"retry-after": "1"})
    ) as model:
        with pytest.raises(ModelUnavailable) as raised:
            [c async for c in model.stream(ask())]
    assert raised.value.retry_after == 1.0


async def test_response_schema_is_sent(fake_server: ServerFactory) -> None:
    server = await fake_server([Reply(body=completion({"content": "{}"}, usage=USAGE))])
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}}
    request = ModelRequest((Message("user", "x?"),), response_schema=schema)
    async with OpenAIModel("m", base_url=f"{server.url}/v1") as model:
        await model.complete(request)
    async with OpenAIModel("m", base_url=f"{server.url}/v1", schema_format="json_object") as model:
        await model.complete(request)
    first, second = (r.json()["response_format"] for r in server.requests)
    assert first == {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}
    assert second == {"type": "json_object", "schema": schema}


async def test_a_given_http_client_is_used() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=completion({"content": "mocked"}, usage=USAGE))

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:
        model = OpenAIModel("m", base_url="http://server.test/v1", api_key="k", http_client=client)
        response = await model.complete(ask())
    assert response.text == "mocked"
    assert response.meta["price_unknown"] is True and response.cost is not None
    assert response.cost > 0
    assert str(seen[0].url) == "http://server.test/v1/chat/completions"
    assert seen[0].headers["authorization"] == "Bearer k"


async def test_a_request_temperature_overrides_the_models_and_none_is_left_out(
    fake_server: ServerFactory,
) -> None:
    replies = [Reply(body=completion({"content": "ok"})) for _ in range(3)]
    server = await fake_server(replies)
    async with OpenAIModel("m", base_url=f"{server.url}/v1", temperature=0.2) as model:
        await model.complete(ask())
        await model.complete(ModelRequest((Message("user", "hi"),), temperature=1.1))
    async with OpenAIModel("m", base_url=f"{server.url}/v1") as model:
        await model.complete(ask())
    bodies = [r.json() for r in server.requests]
    assert [b.get("temperature") for b in bodies] == [0.2, 1.1, None]
    assert "temperature" not in bodies[2]
