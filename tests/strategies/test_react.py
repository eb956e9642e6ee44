"""ReAct decides from plain data: no model, no store, no mocks."""

from __future__ import annotations

from autonomic.events import ModelResponded, RunStarted
from autonomic.models.base import ToolCall, ToolSpec
from autonomic.state import RunState
from autonomic.steps import Fail, Finish, ModelCall, ToolCalls
from autonomic.strategies import AgentView, ReAct

VIEW = AgentView(
    instructions="Be brief.",
    tools=(ToolSpec("add", "Add.", {"type": "object", "properties": {}}),),
    max_malformed=2,
)


def state_after(*responses: ModelResponded) -> RunState:
    state = RunState(run_id="r")
    state.apply(RunStarted(goal="2+3?", agent="calc"), 1, 0.0)
    for i, response in enumerate(responses):
        state.apply(response, i + 2, 0.0)
    return state


def test_first_step_asks_the_model_with_instructions_goal_and_tools() -> None:
    step = ReAct().next_step(state_after(), VIEW)
    assert isinstance(step, ModelCall)
    roles = [(m.role, m.content) for m in step.request.messages]
    assert roles == [("system", "Be brief."), ("user", "2+3?")]
    assert step.request.tools == VIEW.tools


def test_tool_calls_are_run_all_together_with_the_text_as_rationale() -> None:
    calls = (ToolCall("a", "add", {"a": 1}), ToolCall("b", "add", {"a": 2}))
    step = ReAct().next_step(state_after(ModelResponded(text="both", tool_calls=calls)), VIEW)
    assert step == ToolCalls(calls, rationale="both")


def test_plain_text_is_the_answer() -> None:
    assert ReAct().next_step(state_after(ModelResponded(text="5")), VIEW) == Finish("5")


def test_an_empty_reply_is_retried_with_a_nudge_then_fails_after_the_cap() -> None:
    once = ReAct().next_step(state_after(ModelResponded(text=" ")), VIEW)
    assert isinstance(once, ModelCall)
    assert "empty" in once.request.messages[-1].content
    twice = ReAct().next_step(state_after(ModelResponded(), ModelResponded()), VIEW)
    assert isinstance(twice, Fail) and "malformed output 2 times in a row" in twice.reason


def test_next_step_is_pure() -> None:
    state = state_after(ModelResponded(text="5"))
    before = list(state.messages)
    assert ReAct().next_step(state, VIEW) == ReAct().next_step(state, VIEW)
    assert state.messages == before
