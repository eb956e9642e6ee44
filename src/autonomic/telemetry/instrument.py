"""``instrument(runtime)``: metrics and live span export for everything a runtime commits."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from autonomic.events import TERMINAL_EVENTS, RunDead
from autonomic.loader import StoredEvent
from autonomic.store.base import Store
from autonomic.telemetry.metrics import RunMetrics
from autonomic.telemetry.tap import CommitTap, tap_store

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

    from autonomic.runtime import Runtime

__all__ = ["Instrumentation", "instrument"]

log = logging.getLogger("autonomic.telemetry")


class Instrumentation:
    """What ``instrument`` attached: the tap, the metrics (if any), the exporter (if any)."""

    def __init__(
        self,
        store: Store,
        tap: CommitTap,
        metrics: RunMetrics | None,
        exporter: SpanExporter | None,
        capture_content: bool,
    ) -> None:
        self.store, self.tap, self.metrics, self.exporter = store, tap, metrics, exporter
        self.capture_content = capture_content
        self.exported_runs = 0
        self.export_failures = 0

    async def export_ended(self, run_id: str, events: Sequence[StoredEvent]) -> None:
        """Export a run's spans when it ends (or goes dead): it has its final shape."""
        if self.exporter is None or not any(
            isinstance(s.event, (*TERMINAL_EVENTS, RunDead)) for s in events
        ):
            return
        from autonomic.telemetry.otel import readable_spans, spans_of_run

        exporter = self.exporter
        try:
            spans = await spans_of_run(self.store, run_id, capture_content=self.capture_content)
            await asyncio.to_thread(exporter.export, readable_spans(spans))
            self.exported_runs += 1
        except Exception as e:  # the log keeps the run: 'autonomic runs export-otel' redoes it
            self.export_failures += 1
            log.warning("could not export the spans of run %s: %s", run_id, e)

    def telemetry_families(self) -> Iterator[Any]:
        """The tap's own health, as metric families computed at scrape time."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        yield GaugeMetricFamily(
            "autonomic_telemetry_queue_depth",
            "Committed batches not yet counted.",
            self.tap.queue.qsize(),
        )
        yield CounterMetricFamily(
            "autonomic_telemetry_dropped", "Batches left uncounted (queue full).", self.tap.dropped
        )


def instrument(
    runtime: Runtime,
    *,
    metrics: bool = True,
    exporter: SpanExporter | None = None,
    capture_content: bool = False,
    queue_size: int = 10_000,
) -> Instrumentation:
    """Watch everything ``runtime`` commits: count it in Prometheus metrics (``metrics``)
    and export each run's spans to ``exporter`` when it ends. Call it before or after
    opening the runtime; runs keep their speed (see ``telemetry.tap``)."""
    tap = CommitTap(queue_size)
    store = runtime.store
    tap_store(store, tap)
    instrumentation = Instrumentation(store, tap, None, exporter, capture_content)
    if metrics:
        instrumentation.metrics = RunMetrics(store, extra=instrumentation.telemetry_families)
        tap.observers.append(instrumentation.metrics.observe)
    if exporter is not None:
        tap.observers.append(instrumentation.export_ended)
    return instrumentation
