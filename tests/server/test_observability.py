"""What ``autonomic serve`` mounts beside the API, through the real server: health and
readiness, /metrics behind its scope, and the A2A endpoint behind the API's keys and
tenants, with the official a2a-sdk client as the peer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from a2a.client import ClientConfig, create_client
from a2a.client.card_resolver import parse_agent_card
from a2a.client.errors import A2AClientError
from a2a.helpers.proto_helpers import get_artifact_text, new_text_message
from a2a.types.a2a_pb2 import GetTaskRequest, Role, SendMessageRequest, TaskState
from a2a.utils.errors import TaskNotFoundError
from prometheus_client.parser import text_string_to_metric_families

from autonomic.server.observability import observability_routers
from service_harness import Service, start_service


@pytest.fixture
async def service(tmp_path) -> AsyncIterator[Service]:
    svc, task = await start_service(tmp_path, routers=observability_routers)
    try:
        yield svc
    finally:
        svc.server.should_exit = True
        await asyncio.wait_for(task, 30)


def sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return 0.0


def completed_runs(text: str) -> float:
    return sample(text, "autonomic_runs_total", agent="calc", status="completed")


async def test_health_metrics_and_their_scope(service: Service) -> None:
    async with service.client() as anonymous:
        paths = (await anonymous.get("/openapi.json")).json()["paths"]
        assert {"/healthz", "/readyz", "/metrics", "/a2a/{agent}"} <= set(paths)
        assert (await anonymous.get("/healthz")).json() == {"status": "ok"}
        assert (await anonymous.get("/readyz")).json() == {"status": "ok"}
        assert (await anonymous.get("/metrics")).status_code == 401
    async with service.client(service.key("runs:read", "runs:write")) as c:
        assert (await c.get("/metrics")).status_code == 403
        run = (await c.post("/v1/runs", json={"agent": "calc", "goal": "2+3?"})).json()
        assert (await c.get(f"/v1/runs/{run['run_id']}/wait")).json()["status"] == "completed"
        payment = (await c.post("/v1/runs", json={"agent": "payer", "goal": "pay"})).json()
        waited = (await c.get(f"/v1/runs/{payment['run_id']}/wait")).json()
        assert waited["status"] == "waiting"
    async with service.client(service.key("metrics:read")) as scraper:
        for _ in range(200):  # the tap counts off the runs' path: soon, not at once
            reply = await scraper.get("/metrics")
            if completed_runs(reply.text) == 1:
                break
            await asyncio.sleep(0.02)
        assert reply.status_code == 200 and completed_runs(reply.text) == 1
        assert sample(reply.text, "autonomic_runs_current", status="waiting") == 1
        assert sample(reply.text, "autonomic_approvals_pending") == 1


def a2a_config(token: str | None, streaming: bool = False) -> ClientConfig:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return ClientConfig(streaming=streaming, httpx_client=httpx.AsyncClient(headers=headers))


def ask(text: str) -> SendMessageRequest:
    return SendMessageRequest(message=new_text_message(text, role=Role.ROLE_USER))


async def test_a2a_behind_the_api_keys_and_tenants(service: Service) -> None:
    card_url = f"{service.url}/a2a/calc"
    async with service.client() as anonymous:  # the card is public, and says a key is needed
        card = (await anonymous.get("/a2a/calc/.well-known/agent-card.json")).json()
    scheme = parse_agent_card(card).security_schemes["bearer"].http_auth_security_scheme
    assert scheme.scheme == "bearer"
    acme = a2a_config(service.key(tenant="acme"))
    client = await create_client(card_url, acme)
    try:
        [response] = [r async for r in client.send_message(ask("2+3?"))]
        task = response.task
        assert task.status.state == TaskState.TASK_STATE_COMPLETED
        assert get_artifact_text(task.artifacts[0]) == "5"
    finally:
        await client.close()
        await acme.httpx_client.aclose()  # type: ignore[union-attr]
    async with service.client(service.key(tenant="acme")) as api:  # the task is a run
        assert (await api.get(f"/v1/runs/{task.id}")).json()["status"] == "completed"
    streaming = a2a_config(service.key(tenant="acme"), streaming=True)
    client = await create_client(card_url, streaming)
    try:
        updates = [r async for r in client.send_message(ask("2+3?"))]
        assert updates[0].HasField("task")
        assert updates[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
    finally:
        await client.close()
        await streaming.httpx_client.aclose()  # type: ignore[union-attr]
    globex = a2a_config(service.key(tenant="globex"))
    reader = a2a_config(service.key("runs:read", tenant="acme"))
    nobody = a2a_config(None)
    try:
        other = await create_client(card_url, globex)
        with pytest.raises(TaskNotFoundError):
            await other.get_task(GetTaskRequest(id=task.id))
        read_only = await create_client(card_url, reader)
        assert (await read_only.get_task(GetTaskRequest(id=task.id))).id == task.id
        with pytest.raises(A2AClientError, match="403"):
            [r async for r in read_only.send_message(ask("2+3?"))]
        anonymous = await create_client(card_url, nobody)
        with pytest.raises(A2AClientError, match="401"):
            await anonymous.get_task(GetTaskRequest(id=task.id))
    finally:
        for config in (globex, reader, nobody):
            await config.httpx_client.aclose()  # type: ignore[union-attr]
