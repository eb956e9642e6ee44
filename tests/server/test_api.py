"""The /v1 API against a real server: runs as jobs, gap-free event streams, approvals,
control of runs, and errors as problem details."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends

from autonomic.events import ApprovalDenied, ApprovalGranted
from autonomic.loader import read_events
from autonomic.server import Principal, require_scope
from service_agents import PROMPTS
from service_harness import start_service
from sse_frames import collect, frames

PROBLEM = "application/problem+json"
JSON = {"Content-Type": "application/json"}


async def test_a_goal_becomes_a_run_and_its_events_stream_to_the_end(service) -> None:
    async with service.client(service.key()) as c:
        r = await c.post("/v1/runs", json={"agent": "calc", "goal": "2+3?"})
        assert r.status_code == 202
        run = r.json()
        assert r.headers["location"] == f"/v1/runs/{run['run_id']}"
        assert run["tenant"] == "acme" and run["agent"] == "calc"
        got = await collect(c, r.headers["location"] + "/events")
        assert [f.id for f in got] == list(range(1, len(got) + 1))
        assert got[0].event == "RunStarted" and got[-1].event == "RunCompleted"
        assert got[-1].data == {
            "seq": len(got),
            "ts": got[-1].data["ts"],
            "type": "RunCompleted",
            "answer": "5",
        }
        detail = (await c.get(r.headers["location"])).json()
        assert detail["status"] == "completed" and detail["answer"] == "5"
        assert detail["events"] == len(got) and detail["usage"]["total_tokens"] > 0


async def test_streams_resume_exactly_after_the_last_event_id(service) -> None:
    async with service.client(service.key()) as c:
        run_id = (await c.post("/v1/runs", json={"agent": "chatty", "goal": "go"})).json()["run_id"]
        path = f"/v1/runs/{run_id}/events"
        seen = await collect(c, path, limit=7)
        seen += await collect(c, path, limit=30, headers={"Last-Event-ID": str(seen[-1].id)})
        seen += await collect(c, path, params={"after": seen[-1].id})
        ids = [f.id for f in seen]
        assert ids == list(range(1, len(ids) + 1)) and seen[-1].event == "RunCompleted"
        assert len(ids) > 400
        done = await c.get(path, headers={"Last-Event-ID": str(ids[-1])})
        assert done.status_code == 204  # ended, and the client has it all: no reconnect loop
        page = (await c.get(f"/v1/runs/{run_id}/log", params={"after": 5, "limit": 3})).json()
        assert [e["seq"] for e in page["events"]] == [6, 7, 8] and page["last_seq"] == ids[-1]
        bad = await c.get(path, headers={"Last-Event-ID": "seven"})
        assert bad.status_code == 400 and "Last-Event-ID" in bad.json()["detail"]


async def test_a_stream_follows_a_run_live_with_heartbeats(tmp_path) -> None:
    service, task = await start_service(tmp_path, heartbeat_s=0.05)
    try:
        async with service.client(service.key()) as c:
            run_id = (await c.post("/v1/runs", json={"agent": "slow", "goal": "go"})).json()[
                "run_id"
            ]
            comments: list[str] = []
            async with c.stream("GET", f"/v1/runs/{run_id}/events") as response:
                got = [f async for f in frames(response, comments)]
            assert got[-1].event == "RunCompleted" and [f.id for f in got] == list(
                range(1, len(got) + 1)
            )
            assert ": keep-alive" in comments
    finally:
        service.server.should_exit = True
        await task


async def test_idempotency_key_gives_the_same_run_once(service) -> None:
    async with service.client(service.key()) as c:
        body, headers = {"agent": "calc", "goal": "2+3?"}, {"Idempotency-Key": "order-17"}
        first = await c.post("/v1/runs", json=body, headers=headers)
        again = await c.post("/v1/runs", json=body, headers=headers)
        assert (first.status_code, again.status_code) == (202, 200)
        assert first.json()["run_id"] == again.json()["run_id"]
        assert again.headers["location"] == first.headers["location"]
        other = await c.post("/v1/runs", json={**body, "goal": "7*6?"}, headers=headers)
        assert other.status_code == 409 and "Idempotency-Key" in other.json()["detail"]
        runs = (await c.get("/v1/runs")).json()["runs"]
        assert len(runs) == 1
        mine = await c.post("/v1/runs", json={**body, "run_id": "job-1"})
        dup = await c.post("/v1/runs", json={**body, "run_id": "job-1"})
        assert mine.status_code == 202 and dup.status_code == 409


async def test_listing_filters_and_pages_with_a_cursor(service) -> None:
    async with service.client(service.key()) as c:
        ids = {
            (await c.post("/v1/runs", json={"agent": "calc", "goal": f"{i}?"})).json()["run_id"]
            for i in range(5)
        }
        await c.post("/v1/runs", json={"agent": "payer", "goal": "pay"})
        paged: list[str] = []
        cursor = None
        while True:
            params = {"limit": 2, "agent": "calc", **({"cursor": cursor} if cursor else {})}
            page = (await c.get("/v1/runs", params=params)).json()
            paged += [r["run_id"] for r in page["runs"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert sorted(paged) == sorted(ids) and len(paged) == 5
        waiting = await _settle(c, "/v1/runs", {"waiting": "true"})
        assert [r["agent"] for r in waiting] == ["payer"]
        assert (await c.get("/v1/runs", params={"since": 4e9})).json()["runs"] == []
        bad = await c.get("/v1/runs", params={"cursor": "not-a-cursor"})
        assert bad.status_code == 400 and bad.headers["content-type"] == PROBLEM


async def _settle(c, path: str, params: dict[str, str]) -> list[dict]:
    for _ in range(200):
        runs = (await c.get(path, params=params)).json()["runs"]
        if runs:
            return runs
        await asyncio.sleep(0.02)
    return []


async def test_approvals_are_decided_by_digest_and_signed_by_the_key(service) -> None:
    async with service.client(service.key()) as c:
        approve_id = (await c.post("/v1/runs", json={"agent": "payer", "goal": "pay"})).json()[
            "run_id"
        ]
        deny_id = (await c.post("/v1/runs", json={"agent": "payer", "goal": "pay"})).json()[
            "run_id"
        ]
        for run_id in (approve_id, deny_id):
            r = await c.get(f"/v1/runs/{run_id}/wait", params={"timeout_s": 10})
            assert r.status_code == 200 and r.json()["waiting_for"].startswith("approval of pay")
        inbox = (await c.get("/v1/approvals")).json()
        assert {a["run_id"] for a in inbox} == {approve_id, deny_id}
        (pending,) = (await c.get(f"/v1/runs/{approve_id}/approvals")).json()
        assert pending["tool"] == "pay" and pending["args"] == {"account": "acme", "amount": 3}
        r = await c.post(f"/v1/runs/{approve_id}/approvals/{pending['digest']}/approve")
        assert r.status_code == 200
        again = await c.post(f"/v1/runs/{approve_id}/approvals/{pending['digest']}/approve")
        assert again.status_code == 409
        (other,) = (await c.get(f"/v1/runs/{deny_id}/approvals")).json()
        r = await c.post(
            f"/v1/runs/{deny_id}/approvals/{other['digest']}/deny", json={"reason": "no"}
        )
        assert r.status_code == 200
        for run_id in (approve_id, deny_id):
            done = (await c.get(f"/v1/runs/{run_id}/wait", params={"timeout_s": 10})).json()
            assert done["status"] == "completed"
        me = (await c.get("/v1/me")).json()
    events = [e.event for e in await read_events(service.runtime.store, approve_id)]
    (granted,) = [e for e in events if isinstance(e, ApprovalGranted)]
    assert granted.approver == f"key:test({me['id']})@acme" and granted.digest == pending["digest"]
    denials = [e for e in (s.event for s in await read_events(service.runtime.store, deny_id))]
    assert any(isinstance(e, ApprovalDenied) and e.reason == "no" for e in denials)


async def test_cancel_fork_replay_signal_and_wait(service) -> None:
    async with service.client(service.key()) as c:
        slow_id = (await c.post("/v1/runs", json={"agent": "slow", "goal": "go"})).json()["run_id"]
        r = await c.get(f"/v1/runs/{slow_id}/wait", params={"timeout_s": 0.05})
        assert r.status_code == 202 and r.json()["status"] == "running"
        r = await c.post(f"/v1/runs/{slow_id}/signals", json={"name": "nudge", "data": {"x": 1}})
        assert r.status_code == 202
        r = await c.post(f"/v1/runs/{slow_id}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        r = await c.post(f"/v1/runs/{slow_id}/cancel")
        assert r.status_code == 409 and "already cancelled" in r.json()["detail"]

        calc_id = (await c.post("/v1/runs", json={"agent": "calc", "goal": "2+3?"})).json()[
            "run_id"
        ]
        assert (await c.get(f"/v1/runs/{calc_id}/wait")).json()["status"] == "completed"
        replay = (await c.post(f"/v1/runs/{calc_id}/replay")).json()
        assert replay["ok"] is True
        r = await c.post(f"/v1/runs/{calc_id}/fork", json={"at_seq": 2, "run_id": "calc-fork"})
        assert r.status_code == 202 and r.headers["location"] == "/v1/runs/calc-fork"
        assert r.json()["forked_from"] == calc_id and r.json()["tenant"] == "acme"
        forked = (await c.get("/v1/runs/calc-fork/wait")).json()
        assert forked["status"] == "completed" and forked["answer"] == "5"
        r = await c.post(f"/v1/runs/{calc_id}/fork", json={"at_seq": 99})
        assert r.status_code == 400 and "cannot fork at 99" in r.json()["detail"]
        r = await c.post(f"/v1/runs/{calc_id}/resume")
        assert r.status_code == 409


async def test_bad_requests_get_one_line_problem_details(service) -> None:
    async with service.client(service.key()) as c:
        cases = [
            (await c.get("/v1/runs/nope"), 404, "no run 'nope'"),
            (
                await c.post("/v1/runs", json={"agent": "calc", "goal": "x", "extra": 1}),
                422,
                "extra: Extra inputs",
            ),
            (
                await c.post("/v1/runs", json={"agent": "nobody", "goal": "x"}),
                400,
                "serves no agent 'nobody'",
            ),
            (
                await c.post("/v1/runs", json={"agent": "calc", "goal": "   "}),
                400,
                "the goal is empty",
            ),
            (
                await c.post("/v1/runs", json={"agent": "calc", "goal": "x" * 20_001}),
                413,
                "the limit is 20000",
            ),
            (await c.post("/v1/runs", content=b"{" + b" " * 300_000 + b"}"), 413, "over the limit"),
            (await c.post("/v1/runs", content=b"{not json", headers=JSON), 422, "not valid JSON"),
            (await c.post("/v1/runs", content=b"[]", headers=JSON), 422, "must be a JSON object"),
            (await c.get("/v1/runs/bad id!"), 422, "run_id"),
            (await c.post("/v1/runs/nope/cancel"), 404, "no run 'nope'"),
        ]
        for response, status, words in cases:
            assert response.status_code == status, response.text
            assert response.headers["content-type"] == PROBLEM
            problem = response.json()
            assert problem["status"] == status and words in problem["detail"], problem
            assert "Traceback" not in response.text and "\n" not in problem["detail"]


async def test_the_openapi_document_describes_the_api(service) -> None:
    async with service.client() as c:
        spec = (await c.get("/openapi.json")).json()
    paths = spec["paths"]
    for path in (
        "/v1/runs",
        "/v1/runs/{run_id}",
        "/v1/runs/{run_id}/events",
        "/v1/runs/{run_id}/cancel",
        "/v1/runs/{run_id}/fork",
        "/v1/runs/{run_id}/approvals/{ref}/approve",
        "/v1/runs/{run_id}/wait",
    ):
        assert path in paths, path
    create = paths["/v1/runs"]["post"]
    assert (
        "202" in create["responses"]
        and "application/problem+json" in create["responses"]["401"]["content"]
    )
    assert create["security"] == [{"HTTPBearer": []}]


async def test_a_run_out_of_budget_goes_on_after_a_top_up(service) -> None:
    async with service.client(service.key()) as c:
        run_id = (await c.post("/v1/runs", json={"agent": "frugal", "goal": "count"})).json()[
            "run_id"
        ]
        waiting = (await c.get(f"/v1/runs/{run_id}/wait", params={"timeout_s": 10})).json()
        assert waiting["status"] == "waiting" and "tool-call limit" in waiting["waiting_for"]
        empty = await c.post(f"/v1/runs/{run_id}/budget", json={})
        assert empty.status_code == 400 and "say what to add" in empty.json()["detail"]
        r = await c.post(f"/v1/runs/{run_id}/budget", json={"tool_calls": 10})
        assert r.status_code == 202
        done = (await c.get(f"/v1/runs/{run_id}/wait", params={"timeout_s": 10})).json()
        assert done["status"] == "completed" and done["answer"] == "counted"


async def test_a_tenant_sees_and_tops_up_its_own_budget(service) -> None:
    await service.runtime.set_tenant_budget("acme", cost_usd=1.0, tokens=1000)
    async with service.client(service.key()) as c:
        budget = (await c.get("/v1/budget")).json()
        assert budget["tenant"] == "acme" and budget["limits"] == {"cost_usd": 1.0, "tokens": 1000}
        r = await c.post("/v1/budget", json={"cost_usd": 0.5})
        assert r.status_code == 200 and r.json()["limits"]["cost_usd"] == 1.5
        assert (await c.post("/v1/budget", json={})).status_code == 400
    async with service.client(service.key(tenant="globex")) as c:
        assert (await c.get("/v1/budget")).json()["limits"] == {}
        r = await c.post("/v1/budget", json={"tokens": 10})
        assert r.status_code == 409 and "has no budget" in r.json()["detail"]


async def test_mounted_routers_share_keys_scopes_and_error_format(tmp_path) -> None:
    def routers(runtime) -> list[APIRouter]:
        router = APIRouter(prefix="/extra")

        @router.get("/hello")
        async def hello(key: Annotated[Principal, Depends(require_scope("metrics:read"))]) -> dict:
            return {"tenant": key.tenant}

        @router.get("/crash")
        async def crash(key: Annotated[Principal, Depends(require_scope("runs:read"))]) -> dict:
            raise RuntimeError("secret internals")

        return [router]

    service, task = await start_service(tmp_path, routers=routers)
    try:
        async with service.client(service.key("metrics:read", "runs:read")) as c:
            assert (await c.get("/extra/hello")).json() == {"tenant": "acme"}
            r = await c.get("/extra/crash")
            assert r.status_code == 500 and r.headers["content-type"] == PROBLEM
            assert "secret internals" not in r.text and "Traceback" not in r.text
            assert r.json()["detail"] == "the server failed; its log says why"
        async with service.client(service.key("runs:read")) as c:
            assert (await c.get("/extra/hello")).status_code == 403
        async with service.client() as c:
            assert (await c.get("/extra/hello")).status_code == 401
    finally:
        service.server.should_exit = True
        await task


async def test_pii_sent_over_http_is_masked_and_revealed_only_to_a_key_that_may(
    service, monkeypatch
) -> None:
    monkeypatch.setenv("AUTONOMIC_VAULT_KEY", "ab" * 32)
    email = "alice.smith@example.com"
    PROMPTS.clear()
    async with service.client(service.key()) as c:
        r = await c.post("/v1/runs", json={"agent": "private", "goal": f"Write to {email}"})
        location = r.headers["location"]
        await c.get(location + "/wait")
        run = (await c.get(location)).json()
        log = (await c.get(location + "/events", params={"follow": "false"})).text
        listed = (await c.get("/v1/runs", params={"detail": "true"})).text
        refused = await c.get(location + "/revealed")
    assert run["status"] == "completed" and run["answer"] == "Noted: Write to [EMAIL_1]"
    assert PROMPTS == ["Write to [EMAIL_1]"]  # the model never saw the address
    assert email not in log and email not in listed and email not in str(run)
    assert refused.status_code == 403 and "pii:reveal" in refused.json()["detail"]
    async with service.client(service.key("pii:reveal")) as reader:
        shown = (await reader.get(location + "/revealed")).json()
    assert shown == {
        "run_id": run["run_id"],
        "goal": f"Write to {email}",
        "answer": f"Noted: Write to {email}",
    }
