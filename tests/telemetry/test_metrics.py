"""``instrument(runtime)``: the commit tap feeds Prometheus metrics and live span export
from what the runs commit; a full queue drops batches and counts them, never blocks."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from autonomic import Agent, ConfigError, Runtime, ScriptedModel, tool, tool_call
from autonomic.loader import StoredEvent
from autonomic.store.base import Boards, TenantBudgets, Vaults
from autonomic.telemetry import CommitTap, instrument
from autonomic.telemetry.metrics import _Bounded


@tool
def add(a: int, b: int) -> int:
    "Add two integers."
    return a + b


@tool
def boom() -> str:
    "Always fails."
    raise RuntimeError("kaput")


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


async def test_metrics_count_runs_steps_tokens_and_tools(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    async with Runtime(f"sqlite:///{tmp_path / 'runs.db'}") as rt:
        kind = type(rt.store)
        inst = instrument(rt, exporter=exporter)
        # the store keeps its type: checks for what it can do still see it
        assert type(rt.store) is kind and isinstance(rt.store, (Boards, TenantBudgets, Vaults))
        with pytest.raises(ConfigError, match="already tapped"):
            instrument(rt)
        for script in ([tool_call("add", a=2, b=3), "5"], [tool_call("boom"), "gave up"]):
            agent = Agent(name="calc", model=ScriptedModel(script), tools=[add, boom])
            await (await rt.start(agent, "go")).wait()
        await inst.tap.drain()
        assert inst.metrics is not None
        m = samples(inst.metrics.exposition())
    assert m[("autonomic_runs_started_total", (("agent", "calc"),))] == 2
    assert m[("autonomic_runs_total", (("agent", "calc"), ("status", "completed")))] == 2
    assert m[("autonomic_steps_total", (("agent", "calc"), ("kind", "model")))] == 4
    assert m[("autonomic_steps_total", (("agent", "calc"), ("kind", "tool")))] == 2
    assert m[("autonomic_tool_calls_total", (("outcome", "ok"), ("tool", "add")))] == 1
    assert m[("autonomic_tool_calls_total", (("outcome", "error"), ("tool", "boom")))] == 1
    assert m[("autonomic_tokens_total", (("model", "scripted"), ("type", "input")))] > 0
    assert m[("autonomic_tokens_total", (("model", "scripted"), ("type", "output")))] > 0
    chat = (("gen_ai_operation_name", "chat"), ("gen_ai_request_model", "scripted"))
    assert m[("gen_ai_client_operation_duration_seconds_count", chat)] == 4
    usage = (*chat, ("gen_ai_token_type", "input"))
    assert m[("gen_ai_client_token_usage_count", tuple(sorted(usage)))] == 4
    assert (
        m[("autonomic_run_duration_seconds_count", (("agent", "calc"), ("status", "completed")))]
        == 2
    )
    # the agent KPIs per ended run: one used its tool's result, the other's tool failed
    assert m[("autonomic_run_tool_utility_count", (("agent", "calc"),))] == 2
    assert m[("autonomic_run_tool_utility_sum", (("agent", "calc"),))] == 1.0
    assert m[("autonomic_run_thought_to_action_sum", (("agent", "calc"),))] == 4.0
    assert m[("autonomic_telemetry_dropped_total", ())] == 0
    assert m[("autonomic_approvals_pending", ())] == 0
    assert not any("run_id" in dict(labels) for _, labels in m)
    # each run's spans were exported live when it ended
    names = [s.name for s in exporter.get_finished_spans()]
    assert names.count("invoke_agent calc") == 2 and names.count("execute_tool boom") == 1
    assert inst.exported_runs == 2 and inst.export_failures == 0


def test_labels_are_bounded() -> None:
    bounded = _Bounded(limit=3)
    assert [bounded(f"m{i}") for i in range(5)] == ["m0", "m1", "m2", "other", "other"]
    assert bounded("m1") == "m1" and _Bounded()("") == "unknown"


async def test_a_full_tap_drops_and_counts_instead_of_blocking() -> None:
    tap = CommitTap(maxsize=2)
    release = asyncio.Event()
    seen: list[int] = []

    async def slow(run_id: str, events: Sequence[StoredEvent]) -> None:
        await release.wait()
        seen.extend(e.seq for e in events)

    tap.observers.append(slow)
    from autonomic.events import RunStarted, encode_event

    new = encode_event(RunStarted(goal="g", agent="a"), 1.0)
    for _ in range(10):
        tap.offer("r", 1, [new])  # returns at once, whatever the observer does
    await asyncio.sleep(0)
    assert tap.dropped >= 7
    release.set()
    await tap.drain()
    assert len(seen) == 10 - tap.dropped == tap.seen
    await tap.stop()


async def test_the_metrics_route_serves_the_exposition(tmp_path: Path) -> None:
    import httpx
    from fastapi import FastAPI

    from autonomic.telemetry.routes import metrics_router

    async with Runtime(f"sqlite:///{tmp_path / 'runs.db'}") as rt:
        inst = instrument(rt)
        agent = Agent(name="calc", model=ScriptedModel(["done"]))
        await (await rt.start(agent, "go")).wait()
        await inst.tap.drain()
        app = FastAPI()
        app.include_router(metrics_router(rt, inst))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            reply = await http.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    m = samples(reply.content)
    assert m[("autonomic_runs_total", (("agent", "calc"), ("status", "completed")))] == 1
    assert m[("autonomic_runs_current", (("status", "pending"),))] == 0
    assert m[("autonomic_runs_driven", ())] == 0


async def test_health_and_readiness(tmp_path: Path) -> None:
    import httpx
    from fastapi import FastAPI

    from autonomic.telemetry.routes import health_router

    runtime = Runtime(f"sqlite:///{tmp_path / 'runs.db'}")
    app = FastAPI()
    app.include_router(health_router(runtime))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        async with runtime:
            assert (await http.get("/healthz")).json() == {"status": "ok"}
            assert (await http.get("/readyz")).status_code == 200
        closed = await http.get("/readyz")  # the store is closed now
        assert closed.status_code == 503 and "store" in closed.json()["detail"]
        assert (await http.get("/healthz")).status_code == 200
