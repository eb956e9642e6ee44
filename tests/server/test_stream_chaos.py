"""The stream chaos drill: a run of 10,000+ events read by a client that disconnects
every 100 events, while the server is killed with SIGKILL mid-stream and started again
over the same store. The client, resuming with Last-Event-ID each time, gets every event
exactly once, in order, to the end."""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from autonomic.server import KeyStore
from service_harness import free_port, launch
from sse_frames import parse

TURNS = 455  # 22 events a turn: 10,014 events in all


@pytest.mark.slow
def test_ten_thousand_events_through_disconnects_and_a_kill(tmp_path) -> None:
    _, token = KeyStore(tmp_path / "keys.json").create(
        "ci", tenant="acme", scopes=["runs:read", "runs:write"], rate_per_s=1000, burst=1000
    )
    port = free_port()
    env = {"CHATTY_TURNS": str(TURNS), "CHATTY_LATENCY": "0.01"}
    server = launch(tmp_path, port, **env)
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"}
    try:
        run_id = httpx.post(
            f"{url}/v1/runs", headers=headers, json={"agent": "chatty", "goal": "go"}
        ).json()["run_id"]
        got: list[int] = []
        resumed: list[str] = []
        killed_at = None
        finished = False
        while not finished:
            last = {"Last-Event-ID": str(got[-1])} if got else {}
            try:
                with httpx.stream(
                    "GET", f"{url}/v1/runs/{run_id}/events", headers=headers | last, timeout=30
                ) as stream:
                    if stream.status_code == 204:
                        break
                    for n, frame in enumerate(parse(stream.iter_lines()), 1):
                        got.append(frame.id)
                        if frame.event == "Resumed":
                            resumed.append(frame.data["reason"])
                        if frame.event == "RunCompleted":
                            finished = True
                            break
                        if killed_at is None and len(got) >= 1050:
                            server.send_signal(signal.SIGKILL)  # mid-stream, mid-run
                            server.communicate()
                            killed_at = len(got)
                            server = launch(tmp_path, port, **env)
                            break
                        if n == 100:
                            break  # the client drops the connection every 100 events
            except (httpx.TransportError, httpx.RemoteProtocolError):
                time.sleep(0.05)
        info = httpx.get(f"{url}/v1/runs/{run_id}", headers=headers).json()
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=20)
    assert killed_at is not None and info["status"] == "completed"
    assert got == list(range(1, info["events"] + 1))  # 0 lost, 0 duplicated, in order
    assert len(got) >= 10_000
    # claimed at first, then adopted at once by the new process (its old one died here)
    assert resumed[:2] == ["claimed", "resumed"], resumed
