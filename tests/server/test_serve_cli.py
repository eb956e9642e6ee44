"""``autonomic keys`` and ``autonomic serve`` as a user runs them: a key created on the
command line opens the API of a served process, and Ctrl-C stops that process cleanly
even while an event stream is open."""

from __future__ import annotations

import json
import signal
import time

import httpx
import pytest

from autonomic.cli import main
from service_harness import cli_key, free_port, launch


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


@pytest.mark.slow
def test_serve_answers_and_stops_cleanly_on_ctrl_c(tmp_path) -> None:
    token = cli_key(tmp_path)
    port = free_port()
    server = launch(tmp_path, port)
    try:
        url = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {token}"}
        agents = httpx.get(f"{url}/v1/agents", headers=headers).json()
        assert {a["name"] for a in agents} == {
            "calc",
            "payer",
            "chatty",
            "slow",
            "frugal",
            "private",
        }
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        assert httpx.get(f"{url}/a2a/calc/.well-known/agent-card.json").json()["name"] == "calc"
        assert httpx.get(f"{url}/metrics", headers=headers).status_code == 403  # no metrics:read
        run = httpx.post(f"{url}/v1/runs", headers=headers, json={"agent": "payer", "goal": "pay"})
        assert run.status_code == 202
        assert "<title>autonomic</title>" in httpx.get(url + "/").text
        events = f"{url}/v1/runs/{run.json()['run_id']}/events"
        with httpx.stream("GET", events, headers=headers, timeout=30) as stream:
            lines = stream.iter_lines()
            assert next(line for line in lines if line.startswith("id:")) == "id: 1"
            started = time.monotonic()
            server.send_signal(signal.SIGINT)  # the stream is open and the run waits
            rest = list(lines)  # ends: the server drains its streams
        _, err = server.communicate(timeout=20)
        assert server.returncode == 0, err
        assert time.monotonic() - started < 8, err
        assert "Traceback" not in err and "id: 1" not in rest
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
