"""Telemetry derived from the event log: OpenTelemetry GenAI spans, Prometheus metrics,
and a commit tap that feeds them live. ``spans`` needs nothing; ``otel`` needs
``autonomic[otel]`` and ``metrics`` ``autonomic[metrics]``."""

from autonomic.telemetry.instrument import Instrumentation, instrument
from autonomic.telemetry.spans import Span, SpanEvent, run_spans, span_id, trace_id
from autonomic.telemetry.tap import CommitTap, tap_store

__all__ = [
    "CommitTap",
    "Instrumentation",
    "Span",
    "SpanEvent",
    "instrument",
    "run_spans",
    "span_id",
    "tap_store",
    "trace_id",
]
