"""Repairing model output: only what is unambiguous, the rest becomes an error the model sees."""

from __future__ import annotations

from typing import Any

import pytest

from autonomic.errors import MalformedOutput
from autonomic.models import ToolCall, ToolSpec
from autonomic.models.base import Message
from autonomic.models.constrained import (
    decision_messages,
    decision_schema,
    read_decision,
    repeated_call,
)
from autonomic.models.repair import calls_from_text, make_call, match_tool_name, parse_arguments

from .model_fakes import ADD, WEATHER

TOOLS = (ADD, WEATHER)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, {}),
        ("", {}),
        ({"a": 1}, {"a": 1}),
        ('{"a": 1}', {"a": 1}),
        ('{"a": 1} and then some prose', {"a": 1}),
        ('Sure! {"a": 1}', {"a": 1}),
        ('```json\n{"a": 1}\n```', {"a": 1}),
        ("{'a': 1, 'b': True, 'c': None}", {"a": 1, "b": True, "c": None}),
        ('"{\\"a\\": 1}"', {"a": 1}),
    ],
)
def test_arguments_that_can_be_repaired(raw: object, expected: dict[str, Any]) -> None:
    parsed = parse_arguments(raw)
    assert parsed.error is None and parsed.value == expected


@pytest.mark.parametrize(
    "raw",
    ['{"a": 1', '{"a": 1} {"b": 2}', "[1, 2]", 42, "{1: 2}", "{'a': {1, 2}}"],
)
def test_arguments_that_cannot(raw: object) -> None:
    parsed = parse_arguments(raw)
    assert parsed.error is not None and parsed.value == {}


@pytest.mark.parametrize(
    ("name", "expected"),
    [("add", "add"), ("ADD", "add"), ("Get-Weather", "get_weather"), ("functions.add", "add")],
)
def test_tool_names_matched_when_unique(name: str, expected: str) -> None:
    real, repair, error = match_tool_name(name, TOOLS)
    assert (real, error) == (expected, None)
    assert (repair is None) == (name == expected)


def test_ambiguous_or_unknown_names_are_errors() -> None:
    twins = (ToolSpec("get_data", "a", {}), ToolSpec("GET_DATA", "b", {}))
    assert match_tool_name("Get-Data", twins)[2] is not None
    assert match_tool_name("multiply", TOOLS)[2] is not None


def test_make_call_reports_both_problems_in_one_call() -> None:
    call, _ = make_call("c1", "multiply", "{oops", TOOLS)
    assert call == ToolCall("c1", "multiply", {}, call.error) and call.error


def test_several_calls_in_the_text() -> None:
    text = (
        '[{"name": "add", "arguments": {"a": 1, "b": 2}},'
        ' {"tool": "get_weather", "args": {"city": "Oslo"}}]'
    )
    found = calls_from_text(text, TOOLS, turn=3)
    assert found is not None
    assert found[0] == (
        ToolCall("call_3_0", "add", {"a": 1, "b": 2}),
        ToolCall("call_3_1", "get_weather", {"city": "Oslo"}),
    )


@pytest.mark.parametrize(
    "text",
    ["just prose", '{"name": "multiply", "arguments": {}}', '{"a": 1}', "", "{'a': (1, 2)}"],
)
def test_text_that_is_not_a_call(text: str) -> None:
    assert calls_from_text(text, TOOLS, turn=0) is None


def test_decision_schema_hoists_definitions() -> None:
    nested = ToolSpec(
        "book",
        "Book.",
        {
            "type": "object",
            "properties": {"trip": {"$ref": "#/$defs/Trip"}},
            "$defs": {"Trip": {"type": "object", "properties": {"to": {"type": "string"}}}},
        },
    )
    schema = decision_schema((nested, ADD))
    assert set(schema["$defs"]) == {"t0_Trip"}
    book = schema["anyOf"][0]["properties"]
    assert book["tool"] == {"const": "book"}
    assert book["arguments"]["properties"]["trip"] == {"$ref": "#/$defs/t0_Trip"}
    assert schema["anyOf"][-1]["properties"]["tool"] == {"const": "final_answer"}


def test_the_schema_has_one_branch_per_tool_and_can_leave_one_out() -> None:
    names = [b["properties"]["tool"]["const"] for b in decision_schema(TOOLS)["anyOf"]]
    assert names == ["add", "get_weather", "final_answer"]
    without = decision_schema(TOOLS, without={"add"})["anyOf"]
    assert [b["properties"]["tool"]["const"] for b in without] == ["get_weather", "final_answer"]


def test_answer_action_avoids_a_tool_of_that_name() -> None:
    clash = ToolSpec("final_answer", "x", {"type": "object", "properties": {}})
    assert decision_schema((clash,))["anyOf"][-1]["properties"]["tool"] == {"const": "finish"}


@pytest.mark.parametrize(
    ("output", "text", "call"),
    [
        (
            '{"tool": "add", "arguments": {"a": 1, "b": 2}}',
            "",
            ToolCall("c", "add", {"a": 1, "b": 2}),
        ),
        ('{"tool": "final_answer", "arguments": {"text": "done"}}', "done", None),
        ('{"tool": "final_answer", "arguments": {"text": "cut sh', "cut sh", None),
        ('{"tool": "add", "arguments": {"a": 1, "b"', "", "error"),
    ],
    ids=["call", "answer", "answer-cut-short", "call-cut-short"],
)
def test_read_decision(output: str, text: str, call: ToolCall | str | None) -> None:
    answer, calls, _ = read_decision(output, TOOLS, "c")
    assert answer == text
    if call is None:
        assert calls == ()
    elif call == "error":
        assert calls[0].name == "add" and calls[0].error
    else:
        assert calls == (call,)


def test_read_decision_rejects_garbage() -> None:
    with pytest.raises(MalformedOutput):
        read_decision("no json here", TOOLS, "c")


def test_decision_messages_render_calls_and_results() -> None:
    history = (
        Message("system", "Be brief."),
        Message("user", "2+3?"),
        Message("assistant", tool_calls=(ToolCall("c1", "add", {"a": 2, "b": 3}),)),
        Message("tool", "5", tool_call_id="c1"),
    )
    rendered = decision_messages(history, TOOLS)
    assert [m["role"] for m in rendered] == ["system", "user", "assistant", "tool"]
    system = rendered[0]["content"]
    assert system.startswith("Be brief.") and "- add(a, b): Add two numbers." in system
    assert system.index("- final_answer(text)") < system.index("- add(a, b)")
    assert "Never make up a value" in system
    assert rendered[2]["content"] == '{"tool": "add", "arguments": {"a": 2, "b": 3}}'
    assert rendered[3]["content"].startswith("add: 5\n\nGoal: 2+3?\nIf the observation answers")
    as_user = decision_messages(history, TOOLS, tool_role=False)
    assert as_user[3]["role"] == "user"
    assert as_user[3]["content"].startswith("Observation from add: 5")


def test_only_the_last_of_several_results_carries_the_reminder() -> None:
    calls = (ToolCall("c1", "add", {"a": 1, "b": 1}), ToolCall("c2", "add", {"a": 2, "b": 2}))
    rendered = decision_messages(
        (
            Message("user", "Add twice."),
            Message("assistant", tool_calls=calls),
            Message("tool", "2", tool_call_id="c1"),
            Message("tool", "4", tool_call_id="c2"),
        ),
        TOOLS,
    )
    assert [m["content"].count("Goal:") for m in rendered[-2:]] == [0, 1]


def test_a_repeated_call_is_found_by_tool_and_arguments() -> None:
    earlier = (Message("assistant", tool_calls=(ToolCall("c1", "add", {"a": 2, "b": 3}),)),)
    assert repeated_call((ToolCall("c2", "add", {"b": 3, "a": 2}),), earlier) == "add"
    assert repeated_call((ToolCall("c2", "add", {"a": 2, "b": 4}),), earlier) is None
