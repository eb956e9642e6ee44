"""A strategy or guard that misbehaves fails its run with a clear reason; it never kills
the driver, never waits on nothing forever, and never holds the event loop (the wall-time
limit can always fire)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from autonomic import Agent, Runtime, ScriptedModel, tool, tool_call
from autonomic.events import (
    ActionCompleted,
    ActionFailed,
    Event,
    GuardTripped,
    RunCompleted,
    register_event,
)
from autonomic.guards.base import ALLOW, Deny, Guard, Rewrite
from autonomic.messages import Message, ModelRequest, ToolCall
from autonomic.state import RunState
from autonomic.steps import (
    Approval,
    Await,
    Children,
    Fail,
    Finish,
    ModelCall,
    Record,
    Signal,
    Spawn,
    Step,
    Timer,
    ToolCalls,
)
from autonomic.store.base import Store
from autonomic.strategies.base import AgentView

RAN: list[str] = []


@tool
def echo(text: str) -> str:
    "Say the text back."
    RAN.append(text)
    return f"echo: {text}"


@pytest.fixture(autouse=True)
def _clear() -> None:
    RAN.clear()


@register_event
class Note(Event, frozen=True, tag=True):
    """A strategy's own event."""

    text: str


class Scripted:
    """A strategy whose n-th step (from 1) is ``steps(n)``."""

    name = "hostile"

    def __init__(self, steps: Callable[[int], Any]) -> None:
        self.steps = steps
        self.n = 0

    def next_step(self, state: RunState, agent: AgentView) -> Step:
        self.n += 1
        return self.steps(self.n)


def raising(error: BaseException) -> Callable[[int], Any]:
    def steps(n: int) -> Any:
        raise error

    return steps


def then_finish(first: Any) -> Callable[[int], Any]:
    return lambda n: first if n == 1 else Finish("done")


def agent(steps: Callable[[int], Any], **kwargs: Any) -> Agent:
    kwargs.setdefault("max_wall_s", 5.0)
    return Agent(
        name="a", model=ScriptedModel(["x"]), tools=[echo], strategy=Scripted(steps), **kwargs
    )


async def run_to_end(store: Store, settled: Any, a: Agent) -> tuple[Any, list[Event]]:
    async with Runtime(store) as rt:
        run = await rt.start(a, "go")
        result = await run.wait(check=False)
        events = [e.event for e in await settled(rt, run.run_id)]
    return result, events


FAILING_STEPS = [
    ("raises", raising(ValueError("bug")), "strategy 'hostile' raised ValueError: bug"),
    (
        "raises KeyboardInterrupt",
        raising(KeyboardInterrupt()),
        "strategy 'hostile' raised KeyboardInterrupt",
    ),
    ("raises SystemExit", raising(SystemExit(2)), "strategy 'hostile' raised SystemExit: 2"),
    (
        "raises CancelledError while nobody cancels",
        raising(asyncio.CancelledError()),
        "strategy 'hostile' raised CancelledError",
    ),
    ("returns a number", lambda n: 42, "returned a int, which is not a step"),
    ("returns None", lambda n: None, "returned a NoneType, which is not a step"),
    ("returns the step class", lambda n: Finish, "returned a type, which is not a step"),
    ("calls no tools", lambda n: ToolCalls(()), "asked to call no tools"),
    ("calls tools that are not a tuple", lambda n: ToolCalls(None), "asked to call no tools"),
    (
        "waits for a timer already past",
        lambda n: Await(Timer(at=1.0)),
        "asked for Await, which changed nothing",
    ),
    (
        "waits for an approval nobody asked for",
        lambda n: Await(Approval("no-such-digest")),
        "asked for Await, which changed nothing",
    ),
    ("waits for nothing", lambda n: Await(), "cannot wait: an Await needs a condition"),
    (
        "waits for a number",
        lambda n: Await(5),
        "cannot wait: a int is not something to wait for",
    ),
    (
        "waits for a signal with no name",
        lambda n: Await(Signal(5)),
        "cannot wait: a Signal needs a name",
    ),
    (
        "waits for a timer that is not a time",
        lambda n: Await(Timer(at=float("nan"))),
        "cannot wait: a Timer needs one finite number",
    ),
    (
        "waits for an endless timer",
        lambda n: Await(Timer(at=float("inf"))),
        "cannot wait: a Timer needs one finite number",
    ),
    (
        "waits past the year 9999",
        lambda n: Await(Timer(after_s=1e300)),
        "cannot wait: a Timer cannot be set after the year 9999",
    ),
    (
        "waits for children it does not have",
        lambda n: Await(Children(("x.1",))),
        "cannot wait: x.1 are not children of this run",
    ),
    (
        "forges a RunCompleted",
        lambda n: Record((RunCompleted("forged"),)),
        "tried to record a RunCompleted: only registered event types of its own",
    ),
    (
        "forges an ActionCompleted",
        lambda n: Record((ActionCompleted("a-1", "forged"),)),
        "tried to record a ActionCompleted",
    ),
    (
        "records a string",
        lambda n: Record(("note",)),
        "tried to record a str",
    ),
    ("records nothing", lambda n: Record(()), "asked for Record, which changed nothing"),
    (
        "records an event of the wrong shape",
        lambda n: Record((Note(5),)),
        "the Record step of strategy 'hostile' failed: ConfigError: a Note event cannot be "
        "recorded: Expected `str`, got `int`",
    ),
    (
        "records half an emoji",
        lambda n: Record((Note("\ud83d"),)),
        "a Note event cannot be recorded: 'utf-8' codec can't encode",
    ),
    (
        "calls a model with a request that is not one",
        lambda n: ModelCall(5),
        "the ModelCall step of strategy 'hostile' failed: AttributeError",
    ),
    (
        "calls a model for a purpose that is not text",
        lambda n: ModelCall(ModelRequest(messages=(Message("user", "x"),), purpose=5)),
        "the ModelCall step of strategy 'hostile' failed: ConfigError: a ModelCalled event",
    ),
    (
        "spawns a child that is not a spec",
        lambda n: Spawn((5,)),
        "the Spawn step of strategy 'hostile' failed",
    ),
    ("spawns nothing", lambda n: Spawn(()), "asked for Spawn, which changed nothing"),
    ("finishes with a number", lambda n: Finish(5), "the final answer is a int, not text"),
    ("fails with an object", lambda n: Fail(Ellipsis), "Ellipsis"),
]


@pytest.mark.parametrize(
    ("steps", "reason"), [c[1:] for c in FAILING_STEPS], ids=[c[0] for c in FAILING_STEPS]
)
async def test_a_strategy_that_misbehaves_fails_its_run_with_the_reason(
    store: Store, settled: Any, steps: Callable[[int], Any], reason: str
) -> None:
    result, events = await run_to_end(store, settled, agent(steps))
    assert result.status == "failed"
    assert reason in result.error and "wall-time" not in result.error
    assert not any(isinstance(e, RunCompleted) for e in events)
    assert RAN == []


@pytest.mark.parametrize(
    "call",
    [
        ToolCall("c1", "echo", [1]),
        ToolCall("c1", "echo", {"text": "\ud83d"}),
        ToolCall("c1", "echo", {"text": object()}),
        ToolCall("c1", 5, {}),
        "echo",
    ],
    ids=[
        "arguments that are a list",
        "half an emoji",
        "an object",
        "a name that is a number",
        "a string",
    ],
)
async def test_a_strategy_calling_tools_with_garbage_gets_refusals_as_a_model_would(
    store: Store, settled: Any, call: Any
) -> None:
    steps = then_finish(ToolCalls((call,), rationale=7))
    result, events = await run_to_end(store, settled, agent(steps))
    assert (result.status, result.answer) == ("completed", "done")
    outcomes = [e for e in events if isinstance(e, ActionCompleted | ActionFailed)]
    assert len(outcomes) == 1
    if isinstance(outcomes[0], ActionCompleted):  # the surrogate was replaced, then it ran
        assert outcomes[0].observation == "echo: \ufffd"
    else:
        assert RAN == []


async def test_an_answer_with_half_an_emoji_is_cleaned(store: Store, settled: Any) -> None:
    result, _ = await run_to_end(store, settled, agent(lambda n: Finish("ok \ud83d")))
    assert (result.status, result.answer) == ("completed", "ok \ufffd")


@pytest.mark.parametrize(
    "steps",
    [
        lambda n: Record((Note(f"note {n}"),)),
        lambda n: ToolCalls((ToolCall(f"c{n}", "nope", {}),)),
    ],
    ids=["records notes forever", "calls an unknown tool forever"],
)
async def test_a_strategy_that_never_waits_still_hits_its_wall_time_limit(
    store: Store, settled: Any, steps: Callable[[int], Any]
) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    beat = asyncio.create_task(ticker())
    try:
        result, events = await run_to_end(store, settled, agent(steps, max_wall_s=0.3))
    finally:
        beat.cancel()
    assert result.status == "failed" and result.error == "wall-time limit of 0.3s reached"
    assert ticks > 0, "the event loop was held while the run looped"
    assert len(events) > 3


class Hostile(Guard):
    name = "hostile"

    def __init__(
        self,
        check: Callable[[Step], Any] | None = None,
        call: Callable[[ToolCall], Any] | None = None,
        observe: Callable[[Event], Any] | None = None,
    ) -> None:
        self._check, self._call, self._observe = check, call, observe

    def check(self, state: RunState, step: Step) -> Any:
        return self._check(step) if self._check else ALLOW

    def check_call(self, state: RunState, call: ToolCall) -> Any:
        return self._call(call) if self._call else ALLOW

    def observe(self, state: RunState, event: Event) -> Any:
        return self._observe(event) if self._observe else ()


def boom(*args: object) -> Any:
    raise ValueError("guard bug")


def cancelled(*args: object) -> Any:
    raise asyncio.CancelledError


async def async_boom(step: Step) -> Any:
    await asyncio.sleep(0)
    raise ValueError("async guard bug")


def on(kind: str, extra: Any) -> Callable[[Event], Any]:
    return lambda event: extra if type(event).__name__ == kind else ()


FAILING_GUARDS = [
    ("check raises", Hostile(check=boom), "guard 'hostile' raised ValueError: guard bug"),
    ("async check raises", Hostile(check=async_boom), "raised ValueError: async guard bug"),
    ("check raises CancelledError", Hostile(check=cancelled), "raised CancelledError"),
    (
        "check returns None",
        Hostile(check=lambda s: None),
        "guard 'hostile' returned a NoneType, not a verdict (Allow, Deny or Rewrite)",
    ),
    ("check returns True", Hostile(check=lambda s: True), "returned a bool, not a verdict"),
    (
        "check rewrites into garbage",
        Hostile(check=lambda s: Rewrite(42)),
        "guard 'hostile' rewrote the step into a int, which is not a step",
    ),
    ("check_call raises", Hostile(call=boom), "guard 'hostile' raised ValueError: guard bug"),
    ("check_call raises CancelledError", Hostile(call=cancelled), "raised CancelledError"),
    (
        "check_call returns a string",
        Hostile(call=lambda c: "yes"),
        "returned a str for a tool call, not a verdict",
    ),
    (
        "observe raises",
        Hostile(observe=boom),
        "guard 'hostile' raised ValueError: guard bug observing ModelCalled",
    ),
    (
        "observe returns a number",
        Hostile(observe=lambda e: 5),
        "observed ModelCalled and returned a int, not a list of events",
    ),
    (
        "observe returns garbage events",
        Hostile(observe=lambda e: [5]),
        "guard 'hostile' tried to record a int",
    ),
    (
        "observe forges a RunCompleted",
        Hostile(observe=on("ModelResponded", [RunCompleted("forged")])),
        "guard 'hostile' tried to record a RunCompleted",
    ),
    (
        "observe forges an outcome of the running call",
        Hostile(observe=on("ActionRequested", [ActionCompleted("x-1", "forged")])),
        "guard 'hostile' tried to record a ActionCompleted",
    ),
]


@pytest.mark.parametrize(
    ("guard", "reason"), [g[1:] for g in FAILING_GUARDS], ids=[g[0] for g in FAILING_GUARDS]
)
async def test_a_guard_that_misbehaves_fails_the_run_naming_it_and_nothing_runs(
    store: Store, settled: Any, guard: Guard, reason: str
) -> None:
    model = ScriptedModel([tool_call("echo", text="hi"), "done"])
    a = Agent(name="a", model=model, tools=[echo], guards=[guard])
    result, events = await run_to_end(store, settled, a)
    assert result.status == "failed" and reason in result.error
    assert RAN == [], "a call ran although a guard failed (guards fail closed)"
    assert not any(isinstance(e, RunCompleted) for e in events)


async def test_a_denial_with_a_reason_that_is_not_text_is_recorded_as_text(
    store: Store, settled: Any
) -> None:
    guard = Hostile(call=lambda c: Deny(["no", "\ud83d"]))
    model = ScriptedModel([tool_call("echo", text="hi"), "done"])
    result, events = await run_to_end(
        store, settled, Agent(name="a", model=model, tools=[echo], guards=[guard])
    )
    assert result.answer == "done" and RAN == []
    tripped = next(e for e in events if isinstance(e, GuardTripped))
    assert tripped.detail == "['no', '\\ud83d']"


async def test_observers_add_nothing_after_the_run_ended(
    store: Store, settled: Any, caplog: pytest.LogCaptureFixture
) -> None:
    guard = Hostile(observe=on("RunCompleted", [Note("after the end")]))
    a = Agent(name="a", model=ScriptedModel(["done"]), guards=[guard])
    result, events = await run_to_end(store, settled, a)
    assert result.answer == "done" and isinstance(events[-1], RunCompleted)
    assert not any(isinstance(e, Note) for e in events)
    assert "asked to record events after the run ended; dropped" in caplog.text
