"""KPIs from a run's log: plain events in, figures out; and the CLI prints them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autonomic.cli import main
from autonomic.events import (
    ActionCompleted,
    ActionFailed,
    ActionRequested,
    ChildCompleted,
    ModelCalled,
    ModelResponded,
    RunCompleted,
    RunStarted,
)
from autonomic.kpis import kpi_lines, run_kpis
from autonomic.messages import Usage
from autonomic.strategies import PlanNode, PlanRecorded

PLAN = PlanRecorded(
    "rewoo", 1, (PlanNode("E1", "t"), PlanNode("E2", "t"), PlanNode("E3", "t", deps=("E2",)))
)


def test_kpis_of_a_planned_run() -> None:
    events = [
        RunStarted(goal="g", agent="a"),
        ModelCalled("plan", "d"),
        ModelResponded(text="plan", usage=Usage(100, 20), purpose="plan"),
        PLAN,
        ActionRequested("a-1", "p1.E1", "t"),
        ActionRequested("a-2", "p1.E2", "t"),
        ActionCompleted("a-1", "ok"),
        ActionFailed("a-2", "boom"),
        ModelCalled("solve", "d"),
        ModelResponded(text="answer", usage=Usage(200, 10), purpose="solve"),
        ChildCompleted("c", "completed", usage=Usage(5, 5)),
        RunCompleted("answer"),
    ]
    kpis = run_kpis(events)
    assert kpis.success and (kpis.model_calls, kpis.tool_calls, kpis.tokens) == (2, 2, 340)
    # E3 was never run (its input failed): 2 of 3 steps; only E1 succeeded and was read
    assert (kpis.plan_fidelity, kpis.tool_utility, kpis.thought_to_action) == (0.667, 0.5, 1.0)
    assert kpi_lines(kpis)[0] == "plan       fidelity 67% (2 of 3 planned steps run)"


def test_a_result_no_model_read_is_not_counted_as_used() -> None:
    events = [
        ModelCalled("act", "d"),
        ModelResponded(text="", usage=Usage(1, 1)),
        ActionRequested("a-1", "c1", "t"),
        ActionCompleted("a-1", "ok"),
    ]
    kpis = run_kpis(events)
    assert (kpis.success, kpis.tool_utility, kpis.plan_fidelity) == (False, 0.0, None)
    assert kpi_lines(kpis) == [
        "kpis       tool utility 0%, thought/action 1, 2 tokens for the task"
    ]


AGENTS = """
from autonomic import Agent, ScriptedModel, tool
from autonomic.strategies import ReWOO

@tool
def twice(n: int) -> int:
    "Twice a number."
    return 2 * n

planner = Agent(name="planner", tools=[twice], strategy=ReWOO(), model=ScriptedModel(
    ['#E1 = twice[{"n": 2}]\\n#E2 = twice[{"n": "#E1"}]', "8"]))
"""


def test_runs_show_and_trace_print_the_kpis_and_the_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "agents.py").write_text(AGENTS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AUTONOMIC_STORE", raising=False)
    assert main(["run", "--agent", "agents.py:planner", "2 doubled twice?"]) == 0
    capsys.readouterr()
    assert main(["runs", "list", "--json"]) == 0
    run_id = json.loads(capsys.readouterr().out)[0]["run_id"]
    assert main(["runs", "show", run_id]) == 0
    out = capsys.readouterr().out
    assert "plan       fidelity 100% (2 of 2 planned steps run)" in out
    assert "tool utility 100%, thought/action 1" in out
    assert main(["runs", "trace", run_id]) == 0
    out = capsys.readouterr().out
    assert "◆ plan 1 (rewoo, 2 steps): E1 twice; E2 twice ← E1" in out
    assert "twice → 8" in out and "plan       fidelity 100%" in out
    assert main(["runs", "show", run_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kpis"]["plan_steps_run"] == 2


@pytest.mark.parametrize("agent", ["rewoo", "dag"])
def test_the_planner_example_runs(
    agent: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = Path(__file__).parent.parent / "examples" / "planner.py"
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AUTONOMIC_STORE", raising=False)
    assert main(["run", "--agent", f"{example}:{agent}", "Paris or Rome?"]) == 0
    assert capsys.readouterr().out.strip() == "Rome (2,873 thousand people)"
