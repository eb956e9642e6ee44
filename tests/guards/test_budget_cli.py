"""``autonomic runs topup``: a run waiting for budget goes on from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autonomic.cli import EXIT_WAITING, main

AGENTS = """
from autonomic import Agent, Budget, ScriptedModel, tool, tool_call

@tool
def step(n: int) -> str:
    "One step."
    return f"step {n} done"

frugal = Agent(
    name="frugal",
    model=ScriptedModel([tool_call("step", n=1), "summary so far", "all done"]),
    tools=[step],
    guards=[Budget(model_calls=2)],
)
"""


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "budget_agents.py").write_text(AGENTS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUTONOMIC_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("AUTONOMIC_STORE", raising=False)
    return tmp_path


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_topup_lets_a_run_waiting_for_budget_finish(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(capsys, "run", "--agent", "budget_agents.py:frugal", "two steps")
    assert code == EXIT_WAITING and "budget: model-call limit of 2 reached" in err
    code, out, _ = cli(capsys, "runs", "list", "--json")
    run_id = str(json.loads(out)[0]["run_id"])
    code, out, _ = cli(capsys, "runs", "trace", run_id)
    assert code == 0 and "budget" in out
    code, out, err = cli(capsys, "runs", "topup", run_id, "--model-calls", "3")
    assert code == 0, err
    assert "budget of run" in out and "all done" in out
    code, _, err = cli(capsys, "runs", "topup", run_id, "--cost", "-1")
    assert code != 0 and "positive" in err
