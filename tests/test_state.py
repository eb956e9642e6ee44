"""The fold: how each event changes a run's state (plain data, no I/O)."""

from __future__ import annotations

from autonomic.events import (
    ActionCompleted,
    ActionFailed,
    ActionRequested,
    Event,
    ModelResponded,
    Resumed,
    RunCompleted,
    RunForked,
    RunStarted,
)
from autonomic.models.base import ToolCall, Usage
from autonomic.state import RunState


def fold(*events: Event, start: float = 100.0) -> RunState:
    state = RunState(run_id="r")
    for i, event in enumerate(events):
        state.apply(event, i + 1, start + i)
    return state


CALL = ToolCall("c1", "add", {"a": 1})


def test_started_run_has_the_goal_as_first_message() -> None:
    state = fold(RunStarted(goal="sum", agent="calc"))
    assert state.status == "running" and state.seq == 1
    assert [(m.role, m.content) for m in state.messages] == [("user", "sum")]


def test_usage_and_cost_accumulate_and_unpriced_calls_are_counted() -> None:
    state = fold(
        RunStarted(goal="g", agent="a"),
        ModelResponded(text="x", usage=Usage(10, 2), cost=0.25),
        ModelResponded(text="y", usage=Usage(5, 1), cost=None),
    )
    assert state.usage == Usage(15, 3)
    assert state.cost == 0.25 and state.unpriced_calls == 1


def test_actions_are_pending_until_they_complete_or_fail() -> None:
    state = fold(
        RunStarted(goal="g", agent="a"),
        ModelResponded(tool_calls=(CALL, ToolCall("c2", "add", {}))),
        ActionRequested("r-1", "c1", "add", {"a": 1}),
        ActionRequested("r-2", "c2", "add", {}),
    )
    assert list(state.pending) == ["r-1", "r-2"]
    state.apply(ActionCompleted("r-1", "2"), 5, 105)
    state.apply(ActionFailed("r-2", "boom"), 6, 106)
    assert state.pending == {}
    tool_messages = [(m.tool_call_id, m.content) for m in state.messages if m.role == "tool"]
    assert tool_messages == [("c1", "2"), ("c2", "Error: boom")]


def test_malformed_responses_count_in_a_row_and_reset() -> None:
    bad = ModelResponded(tool_calls=(ToolCall("c", "add", error="invalid JSON"),))
    state = fold(RunStarted(goal="g", agent="a"), ModelResponded(text=""), bad)
    assert state.malformed_streak == 2 and "invalid JSON" in state.last_malformed
    state.apply(ModelResponded(text="fine"), 4, 104)
    assert state.malformed_streak == 0


def test_terminal_events_and_forks() -> None:
    state = fold(RunStarted(goal="g", agent="a"), RunCompleted("42"))
    assert state.terminal and state.answer == "42"
    state.apply(RunForked(from_run_id="r0", at_seq=2), 3, 200.0)
    assert state.status == "running" and state.answer is None and state.forked_from == "r0"


def test_active_time_excludes_time_spent_crashed() -> None:
    state = fold(RunStarted(goal="g", agent="a"), ModelResponded(text="x"), start=100.0)
    state.apply(Resumed(by="p2"), 3, 1000.0)
    assert state.active_seconds(1002.0) == 1.0 + 2.0
