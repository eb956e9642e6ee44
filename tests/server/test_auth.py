"""Keys, scopes, tenants and rate limits: every endpoint refuses a key without its scope,
a tenant never sees another's runs, expired and revoked keys are refused, and a key
over its rate is told when to retry."""

from __future__ import annotations

import asyncio
import time

import pytest

from autonomic.errors import ConfigError
from autonomic.server import KeyStore
from autonomic.server.keys import SCOPES, KeyRefused

ENDPOINTS = {
    ("POST", "/v1/runs"): ("runs:write", {"agent": "calc", "goal": "1?"}),
    ("GET", "/v1/runs"): ("runs:read", None),
    ("GET", "/v1/runs/{run_id}"): ("runs:read", None),
    ("GET", "/v1/runs/{run_id}/events"): ("runs:read", None),
    ("GET", "/v1/runs/{run_id}/log"): ("runs:read", None),
    ("GET", "/v1/runs/{run_id}/context?at=3"): ("runs:read", None),
    ("POST", "/v1/runs/{run_id}/cancel"): ("runs:write", None),
    ("POST", "/v1/runs/{run_id}/resume"): ("runs:write", None),
    ("POST", "/v1/runs/{run_id}/fork"): ("runs:write", {"at_seq": 1}),
    ("POST", "/v1/runs/{run_id}/replay"): ("runs:read", None),
    ("POST", "/v1/runs/{run_id}/signals"): ("runs:write", {"name": "go"}),
    ("GET", "/v1/runs/{run_id}/wait"): ("runs:read", None),
    ("GET", "/v1/runs/{run_id}/revealed"): ("pii:reveal", None),
    ("GET", "/v1/runs/{run_id}/approvals"): ("runs:read", None),
    ("GET", "/v1/approvals"): ("runs:read", None),
    ("POST", "/v1/runs/{run_id}/approvals/{ref}/approve"): ("approvals:write", None),
    ("POST", "/v1/runs/{run_id}/approvals/{ref}/deny"): ("approvals:write", None),
    ("GET", "/v1/agents"): ("runs:read", None),
    ("GET", "/v1/budget"): ("runs:read", None),
    ("POST", "/v1/budget"): ("budgets:write", {"cost_usd": 1}),
    ("POST", "/v1/runs/{run_id}/budget"): ("budgets:write", {"tokens": 10}),
}


def _url(path: str, run_id: str) -> str:
    return path.replace("{run_id}", run_id).replace("{ref}", "0123456789abcdef")


async def test_the_table_covers_every_endpoint(service) -> None:
    paths = service.server.app.openapi()["paths"]
    routes = {
        (method.upper(), path)
        for path, operations in paths.items()
        if path.startswith("/v1") and path != "/v1/me"
        for method in operations
    }
    assert routes == {(method, path.partition("?")[0]) for method, path in ENDPOINTS}


async def test_every_endpoint_refuses_a_key_without_its_scope(service) -> None:
    async with service.client(service.key()) as c:
        run_id = (await c.post("/v1/runs", json={"agent": "payer", "goal": "pay"})).json()["run_id"]
    for scope in SCOPES:
        others = [s for s in SCOPES if s != scope]
        async with service.client(service.key(*others)) as c:
            for (method, path), (needed, body) in ENDPOINTS.items():
                if needed != scope:
                    continue
                r = await c.request(method, _url(path, run_id), json=body)
                assert r.status_code == 403, (method, path, r.text)
                assert f"lacks the scope {scope!r}" in r.json()["detail"]
    async with service.client() as anonymous:
        for method, path in ENDPOINTS:
            r = await anonymous.request(method, _url(path, run_id))
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            assert "Authorization: Bearer" in r.json()["detail"]


async def test_a_tenant_never_sees_another_tenants_runs(service) -> None:
    async with service.client(service.key(tenant="acme")) as acme:
        run_id = (await acme.post("/v1/runs", json={"agent": "payer", "goal": "pay"})).json()[
            "run_id"
        ]
        await acme.get(f"/v1/runs/{run_id}/wait")
    async with service.client(service.key(*SCOPES, tenant="globex")) as globex:
        for (method, path), (_, body) in ENDPOINTS.items():
            if "{run_id}" not in path:
                continue
            r = await globex.request(method, _url(path, run_id), json=body)
            assert r.status_code == 404, (method, path, r.text)
            assert r.json()["detail"] == f"no run {run_id!r} (for tenant 'globex')"
        assert (await globex.get("/v1/runs")).json()["runs"] == []
        assert (await globex.get("/v1/approvals")).json() == []
    async with service.client(service.key(tenant="acme")) as acme:
        assert [r["run_id"] for r in (await acme.get("/v1/runs")).json()["runs"]] == [run_id]
        assert len((await acme.get("/v1/approvals")).json()) == 1


async def test_expired_revoked_and_wrong_keys_are_refused(service) -> None:
    record, expiring = service.keys.create(
        "test", tenant="acme", scopes=["runs:read"], expires_in_s=2.0
    )
    async with service.client(expiring) as c:
        assert (await c.get("/v1/runs")).status_code == 200
        await asyncio.sleep(record.expires_at - time.time() + 0.05)
        r = await c.get("/v1/runs")
        assert r.status_code == 401 and "expired" in r.json()["detail"]
    revoked = service.key()
    async with service.client(revoked) as c:
        assert (await c.get("/v1/runs")).status_code == 200
        key_id = revoked.split(".")[0].removeprefix("ak_")
        KeyStore(service.keys.path).revoke(key_id)  # as 'autonomic keys revoke' would
        r = await c.get("/v1/runs")
        assert r.status_code == 401 and r.json()["detail"] == f"API key {key_id} was revoked"
    wrong = revoked.split(".")[0] + ".x" + revoked.split(".")[1][1:]
    for token, why in (
        (wrong, "wrong secret"),
        ("hunter2", "malformed"),
        ("ak_abcdefabcdef.xxxxxxxxxxxxxxxxxxxxxxxx", "unknown"),
    ):
        async with service.client(token) as c:
            r = await c.get("/v1/runs")
            assert r.status_code == 401 and why in r.json()["detail"]


async def test_a_key_over_its_rate_gets_429_with_retry_after(service) -> None:
    async with service.client(service.key(rate_per_s=0.05, burst=3)) as c:
        codes = [(await c.get("/v1/runs")).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = await c.get("/v1/runs")
        assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 20
        assert "limited to 0.05 requests/s" in r.json()["detail"]
    async with service.client(service.key()) as other:  # limits are per key
        assert (await other.get("/v1/runs")).status_code == 200


def test_keys_are_stored_hashed_and_checked(tmp_path) -> None:
    keys = KeyStore(tmp_path / "keys.json")
    record, token = keys.create("ci", tenant="acme", scopes=["runs:read"])
    stored = (tmp_path / "keys.json").read_text()
    assert token.split(".")[1] not in stored and record.hash in stored
    assert (tmp_path / "keys.json").stat().st_mode & 0o777 == 0o600
    assert KeyStore(tmp_path / "keys.json").verify(token) == record
    with pytest.raises(ConfigError, match="unknown scope"):
        keys.create("ci", tenant="acme", scopes=["runs:raed"])
    with pytest.raises(ConfigError, match="tenant"):
        keys.create("ci", tenant="bad tenant", scopes=["runs:read"])
    with pytest.raises(KeyRefused, match="revoked"):
        keys.revoke(record.id)
        keys.verify(token)
