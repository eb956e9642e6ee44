"""``autonomic runs export-otel``: re-create a past run's spans from its log and send them."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autonomic.errors import ConfigError

if TYPE_CHECKING:
    from autonomic.runtime import Runtime

__all__ = ["add_runs_parsers"]


def add_runs_parsers(sub: Any) -> None:
    """Add the telemetry subcommands to ``autonomic runs``."""
    export = sub.add_parser(
        "export-otel",
        help="export a run's OpenTelemetry GenAI spans (again) from its log",
        description="Spans keep the same trace and span ids on every export.",
    )
    export.add_argument("run_id", help="run id (or an unambiguous prefix)")
    where = export.add_mutually_exclusive_group()
    where.add_argument(
        "--endpoint",
        default=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"),
        help="OTLP/HTTP collector URL, e.g. http://127.0.0.1:4318 "
        "(default: $OTEL_EXPORTER_OTLP_ENDPOINT)",
    )
    where.add_argument("--file", type=Path, help="write OTLP/JSON to this file instead")
    export.add_argument(
        "--capture-content",
        action="store_true",
        help="include goals, answers, tool arguments and results (off by default)",
    )
    export.set_defaults(handler=cmd_export_otel)


async def cmd_export_otel(args: argparse.Namespace, runtime: Runtime) -> int:
    from autonomic.cli import _resolve_run_id
    from autonomic.telemetry.otel import export_run, otlp_exporter, otlp_json, spans_of_run

    run_id = await _resolve_run_id(runtime, args.run_id)
    if args.file is not None:
        spans = await spans_of_run(runtime.store, run_id, capture_content=args.capture_content)
        try:
            args.file.write_text(json.dumps(otlp_json(spans), indent=1) + "\n")
        except OSError as e:
            raise ConfigError(f"cannot write {args.file}: {e.strerror}") from None
        print(f"{len(spans)} spans of run {run_id} written to {args.file}")
        return 0
    if not args.endpoint:
        raise ConfigError(
            "say where to: --endpoint URL (an OTLP/HTTP collector) or --file out.json"
        )
    exporter = otlp_exporter(args.endpoint)
    try:
        count = await export_run(
            runtime.store, run_id, exporter, capture_content=args.capture_content
        )
    finally:
        exporter.shutdown()
    print(f"{count} spans of run {run_id} exported to {args.endpoint}")
    return 0
