"""Random model answers and tool behaviours, valid, malformed and hostile, through whole
runs: every run ends, ``wait()`` returns, the log reads back and renders, and replaying it
either matches or says where it diverged; nothing else ever escapes."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autonomic import Agent, ModelRequest, ReplayDivergence, Runtime, ToolError, tool
from autonomic.messages import ModelResponse, ToolCall, Usage


class Boom(BaseException):
    pass


RAISED = [
    ValueError("model bug"),
    KeyboardInterrupt(),
    SystemExit(1),
    GeneratorExit(),
    Boom("custom"),
    asyncio.CancelledError(),
    MemoryError(),
]

HOSTILE_VALUES = [
    None,
    True,
    5,
    2**70,
    -1.5,
    float("nan"),
    float("inf"),
    "",
    "\ud83d",
    "half \udc80 an emoji",
    b"\xff",
    object(),
    [object()],
    {1: 2},
    {"k": {"n": [1, "\ud83d", None]}},
    (1, 2),
    {"a", "b"},
    ToolCall("x", "act", {}),
]

text = st.one_of(st.text(max_size=30), st.sampled_from(["", "   ", "\ud83d", "ok \udc80"]))
value = st.one_of(
    st.sampled_from(HOSTILE_VALUES),
    st.integers(),
    st.floats(),
    text,
    st.lists(st.integers(), max_size=3),
)
kind = st.sampled_from(
    [
        "int",
        "str",
        "dict",
        "list",
        "none",
        "float",
        "bytes",
        "object",
        "iterator",
        "raise",
        "tool-error",
        "retry",
        "slow",
        "base-exception",
        "surrogate",
        "big",
    ]
)

good_call = st.builds(
    lambda i, k, v: ToolCall(f"c{i}", "act", {"kind": k, "value": v}),
    st.integers(0, 3),
    kind,
    st.integers(-5, 5),
)
hostile_call = st.one_of(
    st.builds(
        ToolCall,
        text,
        st.one_of(text, value),
        st.one_of(value, st.dictionaries(text, value, max_size=3)),
    ),
    value,
)
hostile_response = st.builds(
    ModelResponse,
    text=st.one_of(text, value),
    tool_calls=st.one_of(
        st.lists(st.one_of(good_call, hostile_call), max_size=3).map(tuple), value
    ),
    usage=st.one_of(
        st.just(Usage(1, 1)),
        st.builds(Usage, st.sampled_from([0, -1, True, 2**70]), st.just(1)),
        value,
    ),
    model=st.one_of(st.sampled_from(["m", "", "\ud83d"]), value),
    cost=st.sampled_from([None, 0.0, 0.5, True, -1.0, float("nan"), "1", 10**400, object()]),
    meta=st.one_of(
        st.dictionaries(text, value, max_size=3),
        st.fixed_dictionaries({"breaker": st.one_of(value, st.lists(value, max_size=2))}),
        value,
    ),
)
response = st.one_of(
    hostile_response,
    st.builds(ModelResponse, text=text),
    hostile_response,
    st.builds(
        lambda calls: ModelResponse(tool_calls=tuple(calls)),
        st.lists(good_call, min_size=1, max_size=3),
    ),
    hostile_response,
    st.sampled_from(RAISED),
    value,
)


@tool
async def act(kind: str, value: int) -> Any:
    "Do something; what depends on kind."
    match kind:
        case "int":
            return value
        case "str":
            return f"value {value}"
        case "dict":
            return {"value": value, "nested": [value, {"x": None}]}
        case "list":
            return [value] * 3
        case "none":
            return None
        case "float":
            return value / 3
        case "bytes":
            return b"\xff\x00"
        case "object":
            return object()
        case "iterator":
            return iter(range(value % 5))
        case "raise":
            raise ValueError(f"tool failed with {value}")
        case "tool-error":
            raise ToolError("refused", retryable=False)
        case "retry":
            raise ToolError("try again", retryable=True)
        case "slow":
            await asyncio.sleep(0.002)
            return "slept"
        case "base-exception":
            raise Boom("tool")
        case "surrogate":
            return "\ud83d"
        case "big":
            return "x" * 5000
    return kind


class Fuzzed:
    """A model answering turn k with ``answers[k]`` (returned, or raised), then "done"."""

    name = "fuzzed"

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers
        self.calls = 0

    async def complete(self, request: ModelRequest) -> Any:
        self.calls += 1
        if self.calls > len(self.answers):
            return ModelResponse(text="done")
        answer = self.answers[self.calls - 1]
        if isinstance(answer, BaseException):
            raise answer
        return answer


async def one_run(answers: list[Any], settled: Any) -> None:
    agent = Agent(name="fuzz", model=Fuzzed(answers), tools=[act], max_steps=8, max_wall_s=10)
    async with Runtime("memory://") as rt:
        run = await rt.start(agent, "fuzz")
        async with asyncio.timeout(20):
            result = await run.wait(check=False)
        assert result.status in ("completed", "failed"), result
        events = await settled(rt, run.run_id)
        assert events[-1].seq == result.events
        try:
            replayed = await rt.replay(run.run_id, agent=agent)
        except ReplayDivergence:
            return
        assert replayed.status == result.status and replayed.seq == result.events


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(answers=st.lists(response, max_size=6))
def test_random_models_and_tools_always_end_in_a_recorded_readable_replayable_run(
    answers: list[Any], settled: Any
) -> None:
    asyncio.run(one_run(answers, settled))
