"""The autonomic command: the happy path and every bad input as one readable line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from autonomic.cli import main

AGENT = """
from autonomic import Agent, ScriptedModel, tool, tool_call

@tool
def add(a: int, b: int) -> int:
    "Add two integers."
    return a + b

calc = Agent(name="calc", model=ScriptedModel([tool_call("add", a=2, b=3), "2 + 3 = 5"]),
             tools=[add])
stubborn = Agent(name="stubborn", model=ScriptedModel([tool_call("add", a=1, b=1)] * 9),
                 tools=[add], max_steps=2)
not_an_agent = 42
"""


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "agents.py").write_text(AGENT)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AUTONOMIC_STORE", raising=False)
    monkeypatch.delenv("AUTONOMIC_MODEL", raising=False)
    return tmp_path


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def first_run_id(capsys: pytest.CaptureFixture[str]) -> str:
    code, out, _ = run_cli(capsys, "runs", "list", "--json")
    assert code == 0
    return str(json.loads(out)[0]["run_id"])


def test_run_prints_the_answer_and_the_run_id(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "run", "--agent", "agents.py:calc", "What is 2+3?")
    assert code == 0 and out.strip() == "2 + 3 = 5"
    run_id = first_run_id(capsys)
    assert run_id in err and (env / "autonomic.db").exists()


def test_inspection_commands(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_cli(capsys, "run", "--agent", "agents.py:calc", "What is 2+3?")
    run_id = first_run_id(capsys)

    code, out, _ = run_cli(capsys, "runs", "list")
    assert code == 0 and run_id in out and "completed" in out

    code, out, _ = run_cli(capsys, "runs", "show", run_id[:6])
    assert code == 0
    assert "status     completed" in out and "answer     2 + 3 = 5" in out and "tokens" in out

    code, out, _ = run_cli(capsys, "runs", "events", run_id, "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert [e["seq"] for e in lines] == list(range(1, 9))
    assert lines[0]["type"] == "RunStarted" and lines[-1]["type"] == "RunCompleted"

    code, out, _ = run_cli(capsys, "runs", "trace", run_id)
    assert code == 0
    assert "action add(a=2, b=3)" in out and "add → 5" in out and "completed: 2 + 3 = 5" in out
    assert "total: 2 model call(s)" in out

    code, out, _ = run_cli(capsys, "runs", "replay", run_id)
    assert code == 0 and "every step matched the log" in out


def test_fork_and_cancel(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_cli(capsys, "run", "--agent", "agents.py:calc", "What is 2+3?")
    run_id = first_run_id(capsys)
    code, out, err = run_cli(capsys, "runs", "fork", run_id, "--at", "5")
    assert code == 0 and out.strip() == "2 + 3 = 5" and f"forked from {run_id} at event 5" in err
    code, _, err = run_cli(capsys, "runs", "cancel", run_id)
    assert code == 2 and "already completed" in err


def test_a_failed_run_exits_non_zero_with_the_reason(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(capsys, "run", "--agent", "agents.py:stubborn", "loop")
    assert code == 1 and "step limit reached" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["runs", "show", "nope"], "no run with id 'nope'"),
        (["run", "--agent", "agents.py:calc", "   "], "the goal is empty"),
        (["run", "--agent", "no_such_module:calc", "hi"], "cannot import 'no_such_module'"),
        (["run", "--agent", "agents.py:missing", "hi"], "is nothing, not an autonomic.Agent"),
        (["run", "--agent", "agents.py:not_an_agent", "hi"], "is int, not an autonomic.Agent"),
        (["run", "--agent", "calc", "hi"], "must look like module:attr"),
        (["--store", "bogus://x", "runs", "list"], "unknown store URL 'bogus://x'"),
        (["--store", "sqlite:///missing.db", "runs", "list"], "no store at missing.db"),
        # after the subcommand too, winning over the global option
        (["runs", "list", "--store", "sqlite:///gone.db"], "no store at gone.db"),
        (["runs", "show", "x", "--store", "bogus://y"], "unknown store URL 'bogus://y'"),
        (["approve", "x", "--store", "bogus://z"], "unknown store URL 'bogus://z'"),
    ],
)
def test_bad_input_is_one_line_and_a_non_zero_exit(
    env: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    run_cli(capsys, "run", "--agent", "agents.py:calc", "make the store exist")
    if args[-1] == "   ":
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
    else:
        code, _, err = run_cli(capsys, *args)
        assert code != 0
    assert message in err and "Traceback" not in err


def test_a_file_that_is_not_a_store(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (env / "notes.db").write_text("just some text")
    code, _, err = run_cli(capsys, "--store", "sqlite:///notes.db", "runs", "list")
    assert code == 1 and "notes.db is not an autonomic store" in err
    assert err.count("\n") == 1


def test_debug_shows_the_traceback(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_cli(capsys, "run", "--agent", "agents.py:calc", "make the store exist")
    with pytest.raises(Exception, match="no run with id"):
        main(["--debug", "runs", "show", "nope"])


def test_the_console_script_works(env: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "autonomic.cli", "run", "--agent", "agents.py:calc", "2+3?"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.strip() == "2 + 3 = 5"
    done = subprocess.run(
        [sys.executable, "-m", "autonomic.cli", "runs", "show", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == "autonomic: error: no run with id 'nope' in this store"


def test_the_default_assistant_can_be_continued_by_another_process(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from autonomic import ScriptedModel
    from autonomic.models import registry

    monkeypatch.setitem(
        registry._providers, "script", lambda name, url: ScriptedModel([name], name=name)
    )
    code, out, _ = run_cli(capsys, "run", "--model", "script:first answer", "say something")
    assert code == 0 and out.strip() == "first answer"
    run_id = first_run_id(capsys)
    code, out, _ = run_cli(capsys, "runs", "show", run_id)
    assert "(autonomic.assistant:assistant)" in out
    # fork, as a resume would, rebuilds the agent from its recorded import path
    code, out, err = run_cli(capsys, "runs", "fork", run_id, "--at", "1", "--model", "script:again")
    assert code == 0 and out.strip() == "again", err
