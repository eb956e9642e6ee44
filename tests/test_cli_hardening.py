"""The autonomic command answers every bad input in one line, and keeps its runs safe when
the disk fills up or a run keeps killing the process that drives it.

Through ``main()`` where nothing can take the test process down, through a real process
where something could (an agent module calling ``sys.exit`` or ``os._exit``, bytes that are
not UTF-8, a full disk).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from autonomic import Runtime
from autonomic.cli import main
from autonomic.events import ActionFailed, Event, Resumed, RunCompleted, RunDead
from autonomic.loader import read_events

AGENTS = """
import os
from pathlib import Path
from autonomic import Agent, ScriptedModel, tool, tool_call

@tool
def add(a: int, b: int) -> int:
    "Add two integers."
    return a + b

@tool(idempotent=True)
def crash() -> str:
    "Kill the process that runs it, while the flag file exists."
    if Path(os.environ.get("CRASH_FLAG", "/nonexistent")).exists():
        os._exit(1)
    return "survived"

@tool
def charge(amount: int) -> str:
    "Charge a card (not idempotent), filling the disk as it does when FILL_DIR is set."
    with open(os.environ["EFFECTS"], "a") as effects:
        effects.write(f"charge {amount}\\n")
    if os.environ.get("FILL_DIR"):
        try:
            with open(Path(os.environ["FILL_DIR"]) / "filler", "wb") as filler:
                while True:
                    filler.write(bytes(65536))
                    filler.flush()
        except OSError:
            pass
    return "charged " + "x" * 20000

calc = Agent(name="calc", model=ScriptedModel([tool_call("add", a=2, b=3), "5"]), tools=[add])
crasher = Agent(name="crasher", model=ScriptedModel([tool_call("crash"), "done"]), tools=[crash])
payer = Agent(name="payer", model=ScriptedModel([tool_call("charge", amount=5), "paid"]),
              tools=[charge])
"""

BROKEN_MODULES = {
    "raises.py": 'raise RuntimeError("the agent module is broken")\n',
    "syntax.py": "def f(:\n",
    "exits.py": "import sys\nsys.exit(3)\n",
    "exits_text.py": 'import sys\nsys.exit("bye \\ud83d")\n',
    "unprintable.py": (
        "class E(Exception):\n    def __str__(self):\n        raise ValueError\nraise E()\n"
    ),
    "empty.py": "x = 1\n",
}


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "agents.py").write_text(AGENTS)
    for name, text in BROKEN_MODULES.items():
        (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUTONOMIC_STORE", f"sqlite:///{tmp_path / 'runs.db'}")
    monkeypatch.setenv("EFFECTS", str(tmp_path / "effects.txt"))
    monkeypatch.delenv("AUTONOMIC_MODEL", raising=False)
    return tmp_path


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as e:  # argparse's usage errors
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def process(*args: str | bytes, **env: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "autonomic", *args],
        capture_output=True,
        timeout=120,
        check=False,
        env={**os.environ, **env},
    )


def one_error_line(err: str) -> str:
    """The error, checking that it is all there is: one line, no traceback."""
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("autonomic: error: "), err
    return lines[0].removeprefix("autonomic: error: ")


def usage_error(err: str) -> str:
    """argparse's answer: the usage, then one error line."""
    assert "Traceback" not in err, err
    assert err.startswith("usage: autonomic"), err
    return err.splitlines()[-1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["runs", "list", "--limit", "9" * 30], f"argument --limit: {'9' * 30} is out of range"),
        (["runs", "list", "--limit", "-1"], "argument --limit: -1 is out of range"),
        (["runs", "list", "--limit", "1e9"], "argument --limit: '1e9' is not a whole number"),
        (["runs", "events", "abc", "--after", "9" * 30], "argument --after: 9999"),
        (["runs", "fork", "abc", "--at", str(2**63)], f"argument --at: {2**63} is out of range"),
        (["runs", "fork", "abc", "--at", "0"], "argument --at: 0 is out of range"),
    ],
    ids=[
        "huge --limit",
        "negative --limit",
        "--limit not whole",
        "huge --after",
        "huge --at",
        "--at 0",
    ],
)
def test_numbers_out_of_range_are_usage_errors(
    env: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, out, err = cli(capsys, *args)
    assert code == 2 and out == ""
    assert message in usage_error(err)


def test_a_goal_that_is_not_utf8_is_a_usage_error(env: Path) -> None:
    done = process("run", "--agent", "agents.py:calc", b"add \xff\xfe to 2")
    assert done.returncode == 2 and done.stdout == b""
    assert usage_error(done.stderr.decode()) == (
        "autonomic: error: the goal is not valid UTF-8 text: check the terminal's encoding"
    )
    assert not (env / "runs.db").exists()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("raises.py:agent", "failed: RuntimeError: the agent module is broken"),
        ("syntax.py:agent", "failed: SyntaxError: invalid syntax ("),
        ("exits.py:agent", "failed: the module called sys.exit(3) while being imported"),
        ("exits_text.py:agent", "the module called sys.exit('bye \\ud83d') while being imported"),
        ("unprintable.py:agent", "failed: E: <E whose str() failed>"),
        ("empty.py:agent", "'empty.py:agent' is nothing, not an autonomic.Agent"),
        ("missing.py:agent", "ImportError: no file missing.py"),
        ("..:agent", "agent path '..:agent' must look like module:attr or file.py:attr"),
        (":x", "agent path ':x' must look like"),
        ("a:", "agent path 'a:' must look like"),
        ("a:b:c", "agent path 'a:b:c' must look like"),
        ("", "agent path '' must look like"),
        ("agents.py:1x", "agent path 'agents.py:1x' must look like"),
    ],
)
def test_a_bad_agent_is_one_line_and_exit_2(env: Path, spec: str, message: str) -> None:
    done = process("run", "--agent", spec, "go")
    assert done.returncode == 2 and done.stdout == b""
    assert message in one_error_line(done.stderr.decode())


def test_a_bad_agent_through_main_leaves_the_process_running(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for spec in ("exits.py:agent", "raises.py:agent", "syntax.py:agent"):
        code, _, err = cli(capsys, "run", "--agent", spec, "go")
        assert code == 2 and "failed" in one_error_line(err)


def test_a_missing_store_is_one_line_and_is_not_created(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "--store", f"sqlite:///{env / 'nowhere.db'}", "runs", "list")
    assert code == 1 and out == ""
    assert one_error_line(err).startswith(f"no store at {env / 'nowhere.db'}")
    assert not (env / "nowhere.db").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["runs", "show", "nope"],
        ["runs", "trace", "nope"],
        ["runs", "events", "nope"],
        ["runs", "resume", "nope"],
        ["runs", "fork", "nope", "--at", "1"],
        ["runs", "cancel", "nope"],
        ["runs", "replay", "nope"],
        ["runs", "signal", "nope", "go"],
        ["approve", "nope"],
    ],
    ids=lambda args: " ".join(args[:2]),
)
def test_an_unknown_run_is_one_line(
    env: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    assert cli(capsys, "run", "--agent", "agents.py:calc", "make the store")[0] == 0
    code, out, err = cli(capsys, *args)
    assert code == 1 and out == ""
    assert one_error_line(err) == "no run with id 'nope' in this store"


def test_approving_a_run_with_nothing_pending_is_one_line(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(capsys, "run", "--agent", "agents.py:calc", "2+3")[0] == 0
    run_id = json.loads(cli(capsys, "runs", "list", "--json")[1])[0]["run_id"]
    code, _, err = cli(capsys, "approve", run_id)
    assert code == 2 and one_error_line(err) == f"run {run_id} has 0 pending approvals"
    code, _, err = cli(capsys, "approve", run_id, "some-digest")
    assert code == 2
    assert one_error_line(err) == f"run {run_id} is completed; nothing waits for approval"
    code, _, err = cli(capsys, "approve", run_id, "some-digest", "--deny")
    assert code == 2 and "nothing waits for approval" in one_error_line(err)


# -- damaged stores, read through the command ---------------------------------------------


def damage(db: Path, statement: str, *args: object) -> None:
    conn = sqlite3.connect(db, timeout=10)
    try:
        with conn:
            conn.execute(statement, args)
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("DELETE FROM blobs", "event 1 (RunStarted) refers to blob"),
        ("DELETE FROM events WHERE seq = 3 AND run_id = ?", "event 3 is missing from its log"),
        ("UPDATE events SET body = x'ff00' WHERE seq = 2 AND run_id = ?", "event 2 (ModelCalled)"),
        ("UPDATE events SET type = 'Bogus' WHERE seq = 2 AND run_id = ?", "unknown type 'Bogus'"),
        ("UPDATE events SET version = 99 WHERE seq = 2 AND run_id = ?", "written by a newer"),
        ("UPDATE events SET version = 0 WHERE seq = 2 AND run_id = ?", "cannot upgrade"),
        ("UPDATE runs SET last_seq = last_seq + 5 WHERE run_id = ?", "row says ends at event 13"),
    ],
    ids=[
        "blobs gone",
        "an event gone",
        "an event of garbage",
        "an unknown event type",
        "a newer schema",
        "an unknown old schema",
        "a row ahead of its log",
    ],
)
@pytest.mark.parametrize("command", ["show", "trace", "events"])
def test_a_damaged_run_is_one_line_naming_it(
    env: Path, capsys: pytest.CaptureFixture[str], statement: str, message: str, command: str
) -> None:
    goal = "add " + "two numbers " * 300  # long enough to be stored as a blob
    assert cli(capsys, "run", "--agent", "agents.py:calc", goal)[0] == 0
    run_id = json.loads(cli(capsys, "runs", "list", "--json")[1])[0]["run_id"]
    damage(env / "runs.db", statement, *([run_id] if "?" in statement else []))
    code, _, err = cli(capsys, "runs", command, run_id)
    assert code == 1
    error = one_error_line(err)
    assert error.startswith(f"run {run_id}: ") and message in error


# -- the disk fills up ----------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, which the payer's charge tool fills up (this needs root)."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_one_line_and_resume_finishes_without_charging_twice(
    env: Path, small_disk: Path
) -> None:
    store = f"sqlite:///{small_disk / 'runs.db'}"
    done = process(
        "--store", store, "run", "--agent", "agents.py:payer", "pay", FILL_DIR=str(small_disk)
    )
    assert done.returncode == 1 and done.stdout == b""
    err = done.stderr.decode()
    assert "Traceback" not in err
    error = err.splitlines()[-1]  # after any warning the runtime logged
    assert error.startswith("autonomic: error: "), err
    assert "full" in error or "No space left on device" in error, err
    (small_disk / "filler").unlink()  # the fault is fixed

    listed = process("--store", store, "runs", "list", "--json")
    [run] = json.loads(listed.stdout)
    assert run["status"] == "running"
    resumed = process("--store", store, "runs", "resume", run["run_id"])
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert resumed.stdout.decode().strip() == "paid"
    assert (env / "effects.txt").read_text() == "charge 5\n"
    events = asyncio.run(events_of(store, run["run_id"]))
    assert any(isinstance(e, ActionFailed) and "outcome unknown" in e.error for e in events)


async def events_of(store: str, run_id: str) -> list[Event]:
    async with Runtime(store, wake=False) as rt:
        return [e.event for e in await read_events(rt.store, run_id)]


# -- a run that keeps killing its process ----------------------------------------------------


@pytest.mark.slow
def test_a_run_that_keeps_killing_its_process_goes_dead_then_is_revived_by_hand(
    env: Path,
) -> None:
    flag = env / "crash.flag"
    flag.touch()
    first = process("run", "--agent", "agents.py:crasher", "crash", CRASH_FLAG=str(flag))
    assert first.returncode == 1 and first.stdout == b""  # os._exit(1): no goodbye
    run_id = json.loads(process("runs", "list", "--json").stdout)[0]["run_id"]

    codes = []
    for _ in range(10):
        resumed = process("runs", "resume", run_id, CRASH_FLAG=str(flag))
        codes.append(resumed.returncode)
        if b"dead" in resumed.stderr:
            break
    # the first start and five recoveries crashed; the sixth claim buried it
    assert codes == [1, 1, 1, 1, 1, 1], codes
    err = resumed.stderr.decode()
    assert "Traceback" not in err
    assert (
        "run dead: the run crashed the process driving it 6 times; resume it by hand "
        "(autonomic runs resume) to try again"
    ) in err.splitlines()
    store = os.environ["AUTONOMIC_STORE"]
    events = asyncio.run(events_of(store, run_id))
    assert isinstance(events[-1], RunDead) and events[-1].recoveries == 6
    listed = json.loads(process("runs", "list", "--json").stdout)
    assert listed[0]["status"] == "dead"

    flag.unlink()  # whatever killed it is fixed: a person resumes it
    revived = process("runs", "resume", run_id, CRASH_FLAG=str(flag))
    assert revived.returncode == 0, revived.stderr.decode()
    assert revived.stdout.decode().strip() == "done"
    events = asyncio.run(events_of(store, run_id))
    dead_at = max(i for i, e in enumerate(events) if isinstance(e, RunDead))
    assert isinstance(events[dead_at + 1], Resumed) and isinstance(events[-1], RunCompleted)
