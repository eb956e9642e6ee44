"""``autonomic keys`` and ``autonomic serve`` as a user runs them: a key created on the
command line opens the API of a served process, and Ctrl-C stops that process cleanly
even while an event stream is open."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from autonomic.cli import main

TESTS = Path(__file__).parents[1]
SRC = TESTS.parent / "src"


def test_keys_create_list_revoke(tmp_path, capsys) -> None:
    keys = str(tmp_path / "keys.json")
    assert (
        main(
            [
                "keys",
                "create",
                "--keys",
                keys,
                "--name",
                "ci",
                "--tenant",
                "acme",
                "--scopes",
                "runs:read,runs:write",
            ]
        )
        == 0
    )
    token = capsys.readouterr().out.strip()
    assert token.startswith("ak_")
    assert main(["keys", "list", "--keys", keys, "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["tenant"] == "acme" and listed["scopes"] == ["runs:read", "runs:write"]
    assert "hash" not in listed and token not in json.dumps(listed)
    assert main(["keys", "revoke", "--keys", keys, listed["id"]]) == 0
    assert main(["keys", "list", "--keys", keys]) == 0
    assert "revoked" in capsys.readouterr().out
    assert (
        main(["keys", "create", "--keys", keys, "--name", "ci", "--scopes", "runs:everything"]) == 2
    )
    assert "unknown scope(s) runs:everything" in capsys.readouterr().err
    assert main(["serve", "--keys", keys]) == 2
    assert "--agents" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_serve_answers_and_stops_cleanly_on_ctrl_c(tmp_path) -> None:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{TESTS}", "AUTONOMIC_HOME": str(tmp_path)}
    keys = str(tmp_path / "keys.json")
    token = subprocess.run(
        [
            sys.executable,
            "-m",
            "autonomic",
            "keys",
            "create",
            "--keys",
            keys,
            "--name",
            "ci",
            "--scopes",
            "runs:read,runs:write",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "autonomic",
            "--store",
            f"sqlite:///{tmp_path / 'runs.db'}",
            "serve",
            "--agents",
            "service_agents",
            "--port",
            str(port),
            "--keys",
            keys,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {token}"}
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/openapi.json").status_code == 200:
                    break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, server.communicate()
                time.sleep(0.05)
        agents = httpx.get(f"{url}/v1/agents", headers=headers).json()
        assert {a["name"] for a in agents} == {"calc", "payer", "chatty", "slow", "frugal"}
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        assert httpx.get(f"{url}/a2a/calc/.well-known/agent-card.json").json()["name"] == "calc"
        assert httpx.get(f"{url}/metrics", headers=headers).status_code == 403  # no metrics:read
        run = httpx.post(f"{url}/v1/runs", headers=headers, json={"agent": "payer", "goal": "pay"})
        assert run.status_code == 202
        page = httpx.get(url + "/").text
        assert "<title>autonomic</title>" in page
        with httpx.stream(
            "GET", f"{url}/v1/runs/{run.json()['run_id']}/events", headers=headers, timeout=30
        ) as stream:
            lines = stream.iter_lines()
            assert next(line for line in lines if line.startswith("id:")) == "id: 1"
            started = time.monotonic()
            server.send_signal(signal.SIGINT)  # the stream is open and the run waits
            rest = list(lines)  # ends: the server drains its streams
        _, err = server.communicate(timeout=20)
        assert server.returncode == 0, err
        assert time.monotonic() - started < 8, err
        assert "Traceback" not in err and all(not line.startswith("id: 1") for line in rest)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
