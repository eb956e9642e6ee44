"""Spans of real runs (scripted models, real store) follow the GenAI conventions, and an
export through the OpenTelemetry SDK carries them unchanged, with stable ids."""

from __future__ import annotations

from pathlib import Path

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from autonomic import Agent, Runtime, ScriptedModel, tool, tool_call
from autonomic.loader import read_events
from autonomic.telemetry import run_spans, span_id, trace_id
from autonomic.telemetry.otel import export_run, otlp_json, spans_of_run


@tool
def add(a: int, b: int) -> int:
    "Add two integers."
    return a + b


@tool
def boom() -> str:
    "Always fails."
    raise RuntimeError("kaput")


def calc(script: list[object]) -> Agent:
    return Agent(name="calc", model=ScriptedModel(script), tools=[add, boom])


async def finished_run(db: str, script: list[object], goal: str = "What is 2+3?") -> str:
    async with Runtime(db) as rt:
        run = await rt.start(calc(script), goal)
        await run.wait(check=False)
        return run.run_id


async def test_a_run_becomes_agent_chat_and_tool_spans(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    run_id = await finished_run(db, [tool_call("add", a=2, b=3), "5"])
    async with Runtime(db, wake=False) as rt:
        events = await read_events(rt.store, run_id)
    spans = run_spans(run_id, events)
    names = [s.name for s in spans]
    assert names == ["invoke_agent calc", "chat scripted", "execute_tool add", "chat scripted"]
    agent, chat1, tool_span, chat2 = spans
    assert agent.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert agent.attributes["gen_ai.agent.name"] == "calc"
    assert agent.parent_span_id is None and agent.status == "OK"
    assert agent.span_id == span_id(run_id, 0) and agent.trace_id == trace_id(run_id)
    for child in (chat1, tool_span, chat2):
        assert child.parent_span_id == agent.span_id and child.trace_id == agent.trace_id
        assert agent.start_ns <= child.start_ns <= child.end_ns <= agent.end_ns
    for chat in (chat1, chat2):
        assert chat.kind == "CLIENT"
        assert chat.attributes["gen_ai.operation.name"] == "chat"
        assert chat.attributes["gen_ai.request.model"] == "scripted"
        assert isinstance(chat.attributes["gen_ai.usage.input_tokens"], int)
        assert chat.attributes["gen_ai.usage.input_tokens"] > 0
        assert chat.attributes["gen_ai.usage.output_tokens"] > 0
    assert chat1.attributes["gen_ai.response.finish_reasons"] == ["tool_calls"]
    assert chat2.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert tool_span.attributes["gen_ai.operation.name"] == "execute_tool"
    assert tool_span.attributes["gen_ai.tool.name"] == "add"
    assert tool_span.attributes["gen_ai.tool.type"] == "function"
    assert tool_span.attributes["gen_ai.tool.call.id"]
    assert "gen_ai.tool.call.arguments" not in tool_span.attributes  # content is opt-in
    # the run's totals are the sum of its calls
    for key in ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"):
        assert agent.attributes[key] == chat1.attributes[key] + chat2.attributes[key]  # type: ignore[operator]
    assert agent.attributes["autonomic.kpi.tool_utility"] == 1.0
    assert agent.attributes["autonomic.kpi.thought_to_action"] == 2.0
    assert "autonomic.kpi.plan_fidelity" not in agent.attributes  # no plan, no figure
    # the same log gives the same spans: re-export is idempotent
    assert run_spans(run_id, events) == spans
    captured = run_spans(run_id, events, capture_content=True)
    assert captured[2].attributes["gen_ai.tool.call.arguments"] == '{"a":2,"b":3}'
    assert captured[2].attributes["gen_ai.tool.call.result"] == "5"
    assert captured[0].attributes["autonomic.run.answer"] == "5"


async def test_failures_are_error_spans(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    run_id = await finished_run(db, [tool_call("boom"), RuntimeError("model down")])
    async with Runtime(db, wake=False) as rt:
        spans = await spans_of_run(rt.store, run_id)
    by_name = {s.name: s for s in spans}
    tool_span = by_name["execute_tool boom"]
    assert tool_span.status == "ERROR" and "kaput" in tool_span.status_message
    assert tool_span.attributes["error.type"] == "tool_error"
    agent = by_name["invoke_agent calc"]
    assert agent.status == "ERROR" and agent.attributes["error.type"] == "run_failed"


async def test_the_sdk_exports_them_unchanged_with_the_same_ids(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    run_id = await finished_run(db, [tool_call("add", a=1, b=1), "2"])
    exporter = InMemorySpanExporter()
    async with Runtime(db, wake=False) as rt:
        assert await export_run(rt.store, run_id, exporter) == 4
        assert await export_run(rt.store, run_id, exporter) == 4
    finished = exporter.get_finished_spans()
    first, second = finished[:4], finished[4:]
    assert [(s.context.trace_id, s.context.span_id) for s in first] == [
        (s.context.trace_id, s.context.span_id) for s in second
    ]
    agent, chat = first[0], first[1]
    assert agent.name == "invoke_agent calc" and agent.kind is SpanKind.INTERNAL
    assert agent.status.status_code is StatusCode.OK
    assert chat.kind is SpanKind.CLIENT and chat.parent is not None
    assert chat.parent.span_id == agent.context.span_id
    assert chat.attributes is not None and chat.attributes["gen_ai.usage.input_tokens"] > 0
    assert agent.resource.attributes["service.name"] == "autonomic"
    assert chat.instrumentation_scope is not None
    assert chat.instrumentation_scope.name == "autonomic"


async def test_otlp_json_keeps_token_counts_and_hex_ids(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    run_id = await finished_run(db, ["just an answer"])
    async with Runtime(db, wake=False) as rt:
        body = otlp_json(await spans_of_run(rt.store, run_id))
    spans = body["resourceSpans"][0]["scopeSpans"][0]["spans"]
    chat = next(s for s in spans if s["name"] == "chat scripted")
    attrs = {a["key"]: a["value"] for a in chat["attributes"]}
    assert int(attrs["gen_ai.usage.input_tokens"]["intValue"]) > 0
    assert int(attrs["gen_ai.usage.output_tokens"]["intValue"]) > 0
    assert chat["traceId"] == trace_id(run_id) and chat["parentSpanId"] == span_id(run_id, 0)


async def test_a_child_run_joins_its_parents_trace(tmp_path: Path) -> None:
    researcher = Agent(name="researcher", model=ScriptedModel(["Paris"]))
    boss = Agent(
        name="boss",
        model=ScriptedModel([tool_call("researcher", goal="capital of France?"), "Paris."]),
        tools=[researcher.as_tool()],
    )
    async with Runtime(f"sqlite:///{tmp_path / 'runs.db'}") as rt:
        run = await rt.start(boss, "Find the capital of France")
        await run.wait()
        [child] = await rt.list_runs(parent_run_id=run.run_id)
        parent_spans = await spans_of_run(rt.store, run.run_id)
        child_spans = await spans_of_run(rt.store, child.run_id)
    boss_span = parent_spans[0]
    tool_span = next(s for s in parent_spans if s.name == "execute_tool researcher")
    assert tool_span.status == "OK" and tool_span.end_ns >= child_spans[0].end_ns
    assert child_spans[0].name == "invoke_agent researcher"
    assert child_spans[0].parent_span_id == boss_span.span_id
    assert {s.trace_id for s in child_spans} == {boss_span.trace_id} == {trace_id(run.run_id)}
