"""The command line for runs that wait: approve, signal, the waiting list, exit codes; and
the command's own edges (version, completion, python -m, output that is not UTF-8)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autonomic import Agent, ScriptedModel, run_sync
from autonomic.cli import EXIT_WAITING, main

AGENTS = """
from autonomic import Agent, AgentView, Await, Finish, ScriptedModel, Signal, tool, tool_call

@tool(requires_approval=True)
def transfer(account: str, amount: int) -> str:
    "Move money."
    with open("transfers.txt", "a") as f:
        f.write(f"{account} {amount}\\n")
    return f"sent {amount} to {account}"

payer = Agent(
    name="payer",
    model=ScriptedModel([tool_call("transfer", account="acme", amount=500), "paid"]),
    tools=[transfer],
)

class WaitForGo:
    name = "wait-for-go"

    def next_step(self, state, agent):
        if state.signals.get("go"):
            return Finish(f"went with {state.signals['go'][-1]}")
        return Await(Signal("go"), reason="a go signal")

waiter = Agent(name="waiter", model=ScriptedModel([]), strategy=WaitForGo())
"""


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "waiting_agents.py").write_text(AGENTS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUTONOMIC_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("AUTONOMIC_STORE", raising=False)
    return tmp_path


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def run_id_of(capsys: pytest.CaptureFixture[str]) -> str:
    code, out, _ = cli(capsys, "runs", "list", "--json")
    assert code == 0
    return str(json.loads(out)[0]["run_id"])


def test_a_run_waiting_for_approval_exits_3_and_approve_finishes_it(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(capsys, "run", "--agent", "waiting_agents.py:payer", "Pay acme")
    assert code == EXIT_WAITING
    assert "waiting for approval of transfer(account='acme', amount=500)" in err
    run_id = run_id_of(capsys)
    code, out, _ = cli(capsys, "runs", "list", "--waiting")
    assert code == 0 and run_id in out and "approval of transfer" in out
    code, out, _ = cli(capsys, "runs", "show", run_id)
    assert "autonomic approve" in out and not (env / "transfers.txt").exists()
    code, out, err = cli(capsys, "approve", run_id, "--by", "alice")
    assert code == 0, err
    assert "approved transfer" in out and out.strip().endswith("paid")
    assert (env / "transfers.txt").read_text() == "acme 500\n"
    code, out, _ = cli(capsys, "runs", "trace", run_id)
    assert "approval needed: transfer" in out and "approved by alice" in out


def test_approve_with_edited_arguments_and_deny(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli(capsys, "run", "--agent", "waiting_agents.py:payer", "Pay acme")
    first = run_id_of(capsys)
    code, _, err = cli(capsys, "approve", first, "--args", '{"account": "acme", "amount": 50}')
    assert code == 0, err
    assert (env / "transfers.txt").read_text() == "acme 50\n"
    cli(capsys, "run", "--agent", "waiting_agents.py:payer", "Pay acme again")
    second = run_id_of(capsys)
    code, out, _ = cli(capsys, "approve", second, "--deny", "--reason", "too much")
    assert code == 0 and "denied transfer" in out
    assert (env / "transfers.txt").read_text() == "acme 50\n"
    code, _, err = cli(capsys, "approve", second)
    assert code == 2 and err.startswith("autonomic: error: run") and err.count("\n") == 1


def test_a_signal_wakes_a_waiting_run(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "run", "--agent", "waiting_agents.py:waiter", "wait")
    assert code == EXIT_WAITING and "waiting for a go signal" in err
    run_id = run_id_of(capsys)
    code, out, _ = cli(capsys, "runs", "signal", run_id, "go", "--data", '{"n": 1}')
    assert code == 0 and out.strip().endswith("went with {'n': 1}")
    code, _, err = cli(capsys, "runs", "signal", run_id, "go", "--data", "{not json")
    assert code == 2 and "--data is not valid JSON" in err


def test_detach_submits_without_driving(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "run", "--detach", "--agent", "waiting_agents.py:waiter", "w")
    assert code == 0 and "submitted" in err
    run_id = out.strip()
    code, out, _ = cli(capsys, "runs", "show", run_id)
    assert "no process drives it yet" in out


def test_version_python_m_and_completion(env: Path) -> None:
    from autonomic import __version__

    done = subprocess.run(
        [sys.executable, "-m", "autonomic", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.strip() == f"autonomic {__version__}"
    for shell in ("bash", "zsh"):
        done = subprocess.run(
            [sys.executable, "-m", "autonomic", "completion", shell],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0 and "approve" in done.stdout and "signal" in done.stdout
    script = subprocess.run(
        [sys.executable, "-m", "autonomic", "completion", "bash"], capture_output=True, text=True
    ).stdout
    probe = subprocess.run(
        [
            "bash",
            "-c",
            script + "\nCOMP_WORDS=(autonomic runs s); COMP_CWORD=2; _autonomic; "
            'echo "${COMPREPLY[@]}"',
        ],
        capture_output=True,
        text=True,
    )
    assert probe.stdout.split() == ["show", "signal"]


def test_trace_prints_on_a_terminal_that_cannot_show_unicode(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    agent = Agent(name="emoji", model=ScriptedModel(["réponse ✓ 🎉"]))
    run_sync(agent, "dis bonjour ☀", store="sqlite:///autonomic.db")
    run_id = run_id_of(capsys)
    done = subprocess.run(
        [sys.executable, "-m", "autonomic", "runs", "trace", run_id],
        capture_output=True,
        env={**os.environ, "PYTHONIOENCODING": "ascii"},
    )
    assert done.returncode == 0, done.stderr
    assert b"\\u2713" in done.stdout and b"Traceback" not in done.stderr


def test_run_sync_works_inside_a_running_event_loop(tmp_path: Path) -> None:
    agent = Agent(name="nb", model=ScriptedModel(["from a notebook"]))

    async def notebook_cell() -> str:
        result = run_sync(agent, "hello", store=f"sqlite:///{tmp_path / 'nb.db'}")
        return result.answer or ""

    assert asyncio.run(notebook_cell()) == "from a notebook"
