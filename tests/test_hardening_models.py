"""A model that misbehaves never kills the driver: whatever it returns or raises, the run
ends in a state the store recorded, ``wait()`` returns, and the log reads back and renders.

Malformed output is recorded (what was wrong in ``meta["malformed"]``) and the model is
nudged, as for any malformed answer; an exception from the model fails the run with it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from autonomic import Agent, ConfigError, ModelRequest, Runtime, tool
from autonomic.events import ActionCompleted, ActionFailed, ModelResponded
from autonomic.messages import ModelResponse, ToolCall, Usage
from autonomic.store.base import Store


@tool
def echo(text: str) -> str:
    "Say the text back."
    return f"echo: {text}"


class Hostile:
    """A model whose first answer is ``first`` (returned, or raised if an exception);
    after that it answers "ok"."""

    def __init__(self, first: object) -> None:
        self.first = first
        self.calls = 0

    @property
    def name(self) -> str:
        return "hostile"

    async def complete(self, request: ModelRequest) -> Any:
        self.calls += 1
        if self.calls > 1:
            return ModelResponse(text="ok")
        if isinstance(self.first, BaseException):
            raise self.first
        return self.first


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no")


class Custom(BaseException):
    pass


def response(**fields: Any) -> ModelResponse:
    """A response built without validation, as a buggy adapter could build it."""
    return ModelResponse(**fields)


def call(name: Any = "echo", arguments: Any = None, call_id: Any = "c1") -> ToolCall:
    return ToolCall(call_id, name, {"text": "hi"} if arguments is None else arguments)


MALFORMED = [
    ("text that is a number", response(text=5), "its text is a int, not a string"),
    ("text that is bytes", response(text=b"hi"), "its text is a bytes, not a string"),
    (
        "arguments that are a list",
        response(tool_calls=(call(arguments=[1, 2]),)),
        "the arguments are a list, not a JSON object",
    ),
    (
        "arguments that are a string",
        response(tool_calls=(call(arguments='{"text": "hi"}'),)),
        "the arguments are a str, not a JSON object",
    ),
    (
        "a tool name that is a number",
        response(tool_calls=(call(name=7),)),
        "the tool name '7' is not a non-empty string",
    ),
    ("an empty tool name", response(tool_calls=(call(name=""),)), "is not a non-empty string"),
    (
        "a tool call that is a string",
        response(tool_calls=("echo",)),
        "a str is not a tool call",
    ),
    (
        "a tool call that is a dict",
        response(tool_calls=({"name": "echo"},)),
        "a dict is not a tool call",
    ),
    ("tool calls that are not a list", response(tool_calls=None), "its tool calls are a NoneType"),
    (
        "an unencodable argument",
        response(tool_calls=(call(arguments={"text": object()}),)),
        "the arguments are not JSON data: a object is not JSON data",
    ),
    (
        "an argument that is not a finite number",
        response(tool_calls=(call(arguments={"text": float("nan")}),)),
        "nan is not a JSON number",
    ),
    (
        "an argument key that is not a string",
        response(tool_calls=(call(arguments={1: "x"}),)),
        "key '1' is not a string",
    ),
    (
        "arguments nested too deeply",
        response(tool_calls=(call(arguments={"text": eval("[" * 100 + "]" * 100)}),)),
        "nested too deeply",
    ),
    ("an int instead of a response", 42, "the model returned a int"),
    ("None instead of a response", None, "the model returned a NoneType"),
    ("a string instead of a response", "the answer", "the model returned a str"),
    ("a dict instead of a response", {"text": "hi"}, "the model returned a dict"),
]


@pytest.mark.parametrize(
    ("first", "malformed"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
async def test_malformed_output_is_recorded_and_nudged(
    store: Store, settled: Any, first: object, malformed: str
) -> None:
    model = Hostile(first)
    async with Runtime(store) as rt:
        run = await rt.start(Agent(name="a", model=model, tools=[echo]), "go")
        result = await run.wait()
        events = await settled(rt, run.run_id)
    assert (result.status, result.answer, model.calls) == ("completed", "ok", 2)
    responded = [e.event for e in events if isinstance(e.event, ModelResponded)]
    assert malformed in responded[0].meta["malformed"]
    # a call that could not be used never ran: the model was told why
    assert not [e for e in events if isinstance(e.event, ActionCompleted)]


async def test_a_lone_surrogate_is_replaced_wherever_the_model_puts_it(
    store: Store, settled: Any
) -> None:
    half = "\ud83d"  # half of an emoji, as a real OpenAI-compatible server once sent
    first = response(
        text=f"thinking {half}",
        tool_calls=(ToolCall(f"c{half}", "echo", {f"k{half}": half, "text": f"a{half}"}),),
        model=f"m{half}",
        meta={f"note{half}": [half]},
    )
    async with Runtime(store) as rt:
        run = await rt.start(Agent(name="a", model=Hostile(first), tools=[echo]), "go")
        await run.wait(check=False)
        events = await settled(rt, run.run_id)
    responded = next(e.event for e in events if isinstance(e.event, ModelResponded))
    assert responded.text == "thinking \ufffd" and responded.model == "m\ufffd"
    assert responded.tool_calls[0].arguments == {"k\ufffd": "\ufffd", "text": "a\ufffd"}
    assert responded.meta == {"note\ufffd": ["\ufffd"]}
    # the tool refused the unexpected argument, or ran: either way the run went on
    outcomes = [e.event for e in events if isinstance(e.event, ActionCompleted | ActionFailed)]
    assert len(outcomes) == 1


async def test_a_lone_surrogate_in_the_answer_is_replaced(store: Store, settled: Any) -> None:
    async with Runtime(store) as rt:
        run = await rt.start(Agent(name="a", model=Hostile(response(text="done \udc80"))), "go")
        result = await run.wait()
        await settled(rt, run.run_id)
    assert result.answer == "done \ufffd"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"cost": True}, None),
        ({"cost": float("nan")}, None),
        ({"cost": -5.0}, None),
        ({"cost": "1.5"}, None),
        ({"cost": 10**400}, None),
        ({"cost": 0.25}, 0.25),
    ],
    ids=["True", "nan", "negative", "a string", "too large", "a price"],
)
async def test_a_cost_that_is_not_a_price_counts_the_call_as_unpriced(
    store: Store, settled: Any, fields: dict[str, Any], expected: float | None
) -> None:
    async with Runtime(store) as rt:
        run = await rt.start(Agent(name="a", model=Hostile(response(text="x", **fields))), "go")
        result = await run.wait()
        events = await settled(rt, run.run_id)
    responded = next(e.event for e in events if isinstance(e.event, ModelResponded))
    assert responded.cost == expected and result.cost == (expected or 0.0)


@pytest.mark.parametrize(
    "fields",
    [
        {"usage": Usage(-1, 5)},
        {"usage": Usage(True, 5)},
        {"usage": Usage(2**70, 5)},
        {"usage": "lots"},
        {"meta": {"k": object()}},
        {"meta": [1, 2]},
        {"meta": {"breaker": 5}},
        {"meta": {"breaker": [5, {"from": object()}]}},
        {"model": 5},
    ],
    ids=[
        "negative tokens",
        "tokens that are True",
        "too many tokens",
        "usage that is a string",
        "unencodable meta",
        "meta that is a list",
        "breaker changes that are not a list",
        "breaker changes that are garbage",
        "a model name that is a number",
    ],
)
async def test_garbage_around_a_good_answer_is_dropped(
    store: Store, settled: Any, fields: dict[str, Any]
) -> None:
    async with Runtime(store) as rt:
        run = await rt.start(Agent(name="a", model=Hostile(response(text="x", **fields))), "go")
        result = await run.wait()
        events = await settled(rt, run.run_id)
    assert result.answer == "x"
    responded = next(e.event for e in events if isinstance(e.event, ModelResponded))
    assert "malformed" not in responded.meta
    assert responded.usage.input_tokens >= 0


RAISED = [
    ("KeyboardInterrupt", KeyboardInterrupt(), "KeyboardInterrupt"),
    ("SystemExit", SystemExit(3), "SystemExit: 3"),
    ("GeneratorExit", GeneratorExit(), "GeneratorExit"),
    ("a custom BaseException", Custom("boom"), "Custom: boom"),
    ("CancelledError raised by the model", asyncio.CancelledError(), "it raised CancelledError"),
    ("an exception whose str() raises", Unprintable(), "<Unprintable whose str() failed>"),
    ("a MemoryError", MemoryError(), "MemoryError"),
]


@pytest.mark.parametrize(("raised", "reason"), [r[1:] for r in RAISED], ids=[r[0] for r in RAISED])
async def test_a_model_raising_anything_fails_the_run_with_the_reason(
    store: Store, settled: Any, raised: BaseException, reason: str
) -> None:
    async with Runtime(store) as rt:
        run = await rt.start(Agent(name="a", model=Hostile(raised)), "go")
        result = await run.wait(check=False)
        events = await settled(rt, run.run_id)
        # the process goes on: another run in the same runtime works
        again = await rt.start(Agent(name="b", model=Hostile(response(text="fine"))), "go")
        assert (await again.wait()).answer == "fine"
    assert result.status == "failed"
    assert result.error is not None and result.error.startswith("model 'hostile' failed: ")
    assert reason in result.error and "\n" not in result.error
    assert [type(e.event).__name__ for e in events] == ["RunStarted", "ModelCalled", "RunFailed"]


async def test_a_model_that_is_always_malformed_fails_after_max_malformed(
    store: Store, settled: Any
) -> None:
    class AlwaysBroken(Hostile):
        async def complete(self, request: ModelRequest) -> Any:
            self.calls += 1
            return response(text=self.calls)

    model = AlwaysBroken(None)
    async with Runtime(store) as rt:
        run = await rt.start(Agent(name="a", model=model, max_malformed=3), "go")
        result = await run.wait(check=False)
        await settled(rt, run.run_id)
    assert result.status == "failed" and model.calls == 3
    assert result.error == (
        "the model returned malformed output 3 times in a row (last: the model's response "
        "was malformed: its text is a int, not a string)"
    )


async def test_a_model_whose_name_is_not_text_is_refused_at_start(store: Store) -> None:
    class Nameless(Hostile):
        @property
        def name(self) -> Any:
            return 5

    async with Runtime(store) as rt:
        with pytest.raises(ConfigError, match="a RunStarted event cannot be recorded"):
            await rt.start(Agent(name="a", model=Nameless("x")), "go")
        assert await rt.list_runs() == []
