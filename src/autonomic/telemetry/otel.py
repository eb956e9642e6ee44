"""Export a run's spans with the OpenTelemetry SDK: to any SpanExporter, over OTLP/HTTP,
or as an OTLP/JSON file.

The spans come from the log (``run_spans``), not from instrumentation that was live
when the run happened, so a run can be exported again at any time, with the same trace
and span ids: an exporter that was down loses nothing. Needs ``autonomic[otel]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from autonomic.errors import ConfigError
from autonomic.loader import read_events
from autonomic.store.base import Store
from autonomic.telemetry.spans import Span, run_spans

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = ["export_run", "otlp_exporter", "otlp_json", "readable_spans", "spans_of_run"]

SCOPE = "autonomic"
_RESOURCES: dict[str, Any] = {}


def _require_otel() -> None:
    try:
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        raise ConfigError(
            'OpenTelemetry export needs the SDK: pip install "autonomic[otel]"'
        ) from None


def readable_spans(spans: Sequence[Span], service_name: str = "autonomic") -> list[ReadableSpan]:
    """Our spans as the SDK's finished spans, ready for any SpanExporter."""
    _require_otel()
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

    from autonomic import __version__

    resource = _RESOURCES.get(service_name)
    if resource is None:  # creating one inspects the process: do it once
        resource = _RESOURCES[service_name] = Resource.create({"service.name": service_name})
    scope = InstrumentationScope(SCOPE, __version__)
    kinds = {"INTERNAL": SpanKind.INTERNAL, "CLIENT": SpanKind.CLIENT}
    codes = {"UNSET": StatusCode.UNSET, "OK": StatusCode.OK, "ERROR": StatusCode.ERROR}
    sampled = TraceFlags(TraceFlags.SAMPLED)
    result = []
    for span in spans:
        trace = int(span.trace_id, 16)
        parent = (
            SpanContext(trace, int(span.parent_span_id, 16), is_remote=False, trace_flags=sampled)
            if span.parent_span_id
            else None
        )
        code = codes[span.status]
        result.append(
            ReadableSpan(
                span.name,
                SpanContext(trace, int(span.span_id, 16), is_remote=False, trace_flags=sampled),
                parent,
                resource,
                span.attributes,
                [Event(e.name, e.attributes, e.time_ns) for e in span.events],
                kind=kinds[span.kind],
                status=Status(code, span.status_message if code is StatusCode.ERROR else None),
                start_time=span.start_ns,
                end_time=span.end_ns,
                instrumentation_scope=scope,
            )
        )
    return result


async def spans_of_run(store: Store, run_id: str, *, capture_content: bool = False) -> list[Span]:
    """The spans of a run, read from its log in the store."""
    return run_spans(run_id, await read_events(store, run_id), capture_content=capture_content)


async def export_run(
    store: Store,
    run_id: str,
    exporter: SpanExporter,
    *,
    capture_content: bool = False,
    service_name: str = "autonomic",
) -> int:
    """Export a run's spans to ``exporter``; returns how many. ConfigError if it refuses."""
    from opentelemetry.sdk.trace.export import SpanExportResult

    spans = await spans_of_run(store, run_id, capture_content=capture_content)
    result = exporter.export(readable_spans(spans, service_name))
    if result is not SpanExportResult.SUCCESS:
        raise ConfigError(f"the exporter refused the spans of run {run_id} ({result.name})")
    return len(spans)


def otlp_exporter(endpoint: str, headers: dict[str, str] | None = None) -> SpanExporter:
    """An OTLP/HTTP (protobuf) exporter. ``endpoint`` is the collector's base URL
    (``http://127.0.0.1:4318``) or its full traces URL (``.../v1/traces``)."""
    _require_otel()
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise ConfigError('OTLP export needs the exporter: pip install "autonomic[otel]"') from None
    if not endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"the OTLP endpoint {endpoint!r} must be an http:// or https:// URL")
    url = (
        endpoint
        if endpoint.rstrip("/").endswith("/v1/traces")
        else endpoint.rstrip("/") + "/v1/traces"
    )
    exporter: SpanExporter = OTLPSpanExporter(endpoint=url, headers=headers, timeout=10)
    return exporter


def otlp_json(spans: Sequence[Span], service_name: str = "autonomic") -> dict[str, Any]:
    """The spans as an OTLP/JSON ``ExportTraceServiceRequest`` (what a collector's
    file receiver or ``/v1/traces`` with ``application/json`` takes). Integers are
    encoded as the OTLP/JSON mapping says (``intValue`` as a string)."""
    _require_otel()
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    request = encode_spans(readable_spans(spans, service_name))
    body: dict[str, Any] = MessageToDict(request)
    # OTLP/JSON writes trace and span ids as hex, not protobuf's base64
    for resource in body.get("resourceSpans", []):
        for scope in resource.get("scopeSpans", []):
            for span in scope.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = _b64_to_hex(span[key])
    return body


def _b64_to_hex(value: str) -> str:
    import base64

    return base64.b64decode(value).hex()
