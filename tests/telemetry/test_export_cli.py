"""``autonomic runs export-otel`` against a real OTLP/HTTP receiver on loopback: the
protobuf it receives decodes, its token counts are not zero, and a second export of the
same run carries the same ids."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from autonomic import Agent, Runtime, ScriptedModel, tool, tool_call
from autonomic.cli import main


@tool
def add(a: int, b: int) -> int:
    "Add two integers."
    return a + b


class Receiver(ThreadingHTTPServer):
    requests: list[ExportTraceServiceRequest]
    paths: list[str]


class Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        assert self.headers["Content-Type"] == "application/x-protobuf"
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.server.requests.append(request)
        self.server.paths.append(self.path)
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(("127.0.0.1", 0), Handler)
    server.requests, server.paths = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def make_run(db: str) -> str:
    async def go() -> str:
        agent = Agent(
            name="calc", model=ScriptedModel([tool_call("add", a=2, b=3), "5"]), tools=[add]
        )
        async with Runtime(db) as rt:
            run = await rt.start(agent, "What is 2+3?")
            await run.wait()
            return run.run_id

    return asyncio.run(go())


def test_export_to_a_real_otlp_receiver_twice_with_the_same_ids(
    tmp_path: Path, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    run_id = make_run(db)
    endpoint = f"http://127.0.0.1:{receiver.server_address[1]}"
    for _ in range(2):
        assert main(["--store", db, "runs", "export-otel", run_id[:6], "--endpoint", endpoint]) == 0
        assert f"4 spans of run {run_id} exported" in capsys.readouterr().out
    assert receiver.paths == ["/v1/traces", "/v1/traces"]
    exports = []
    for request in receiver.requests:
        spans = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
        exports.append([(s.trace_id, s.span_id, s.parent_span_id, s.name) for s in spans])
        tokens = [
            (a.key, a.value.int_value)
            for s in spans
            if s.name.startswith("chat ")
            for a in s.attributes
            if a.key.startswith("gen_ai.usage.")
        ]
        assert len(tokens) == 4 and all(value > 0 for _, value in tokens), tokens
    assert exports[0] == exports[1]
    assert [name for *_, name in exports[0]] == [
        "invoke_agent calc",
        "chat scripted",
        "execute_tool add",
        "chat scripted",
    ]


def test_export_to_a_file_and_clear_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    run_id = make_run(db)
    out = tmp_path / "trace.json"
    assert main(["--store", db, "runs", "export-otel", run_id, "--file", str(out)]) == 0
    body = json.loads(out.read_text())
    assert len(body["resourceSpans"][0]["scopeSpans"][0]["spans"]) == 4
    capsys.readouterr()
    assert main(["--store", db, "runs", "export-otel", run_id]) == 2
    assert "--endpoint URL" in capsys.readouterr().err
    code = main(["--store", db, "runs", "export-otel", run_id, "--endpoint", "ftp://x"])
    assert code == 2 and "must be an http:// or https:// URL" in capsys.readouterr().err


async def test_live_export_of_ended_runs_over_otlp(tmp_path: Path, receiver: Receiver) -> None:
    from autonomic.telemetry import instrument
    from autonomic.telemetry.otel import otlp_exporter

    exporter = otlp_exporter(f"http://127.0.0.1:{receiver.server_address[1]}/v1/traces")
    agent = Agent(name="calc", model=ScriptedModel([tool_call("add", a=2, b=3), "5"]), tools=[add])
    async with Runtime(f"sqlite:///{tmp_path / 'runs.db'}") as rt:
        inst = instrument(rt, exporter=exporter, metrics=False)
        await (await rt.start(agent, "What is 2+3?")).wait()
        await inst.tap.drain()
    exporter.shutdown()
    assert inst.exported_runs == 1 and inst.export_failures == 0
    [request] = receiver.requests
    spans = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert len(spans) == 4 and spans[0].name == "invoke_agent calc"
