"""A run's log as spans that follow the OpenTelemetry GenAI semantic conventions.

Pure: events in, spans out, no I/O and no OpenTelemetry import, so the mapping is tested
with plain data and any past run can be turned into the same spans again. The run is an
``invoke_agent {agent}`` span; each model call a ``chat {model}`` span under it, with
``gen_ai.usage.*`` token counts and its cost; each tool call an ``execute_tool {tool}``
span. Trace and span ids are derived from the run id and the seq of the event that
opened the span, so exporting a run twice gives the same ids (a backend sees one trace,
not two), and a child run's spans join the trace of its root run, under its parent's
agent span.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import msgspec

from autonomic.events import (
    ActionCompleted,
    ActionDeferred,
    ActionFailed,
    ActionRequested,
    ApprovalDenied,
    ApprovalGranted,
    ApprovalRequested,
    ChildSpawned,
    GuardTripped,
    ModelCalled,
    ModelResponded,
    Resumed,
    RunCancelled,
    RunCompleted,
    RunDead,
    RunFailed,
    RunForked,
    RunStarted,
    Suspended,
)
from autonomic.kpis import run_kpis
from autonomic.loader import StoredEvent

__all__ = ["Span", "SpanEvent", "run_spans", "span_id", "trace_id"]

AttributeValue = str | bool | int | float | list[str]


class SpanEvent(msgspec.Struct, frozen=True):
    """Something that happened at one instant inside a span (a guard trip, a wait)."""

    name: str
    time_ns: int
    attributes: dict[str, AttributeValue] = {}


class Span(msgspec.Struct, frozen=True):
    """One span, in OpenTelemetry's terms; ids are lowercase hex (32 and 16 digits)."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    """``INTERNAL`` or ``CLIENT``."""
    start_ns: int
    end_ns: int
    attributes: dict[str, AttributeValue]
    status: str = "UNSET"
    """``UNSET``, ``OK`` or ``ERROR``."""
    status_message: str = ""
    events: tuple[SpanEvent, ...] = ()


def _digest(*parts: object) -> bytes:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()


def trace_id(root_run_id: str) -> str:
    """The trace of a run tree: derived from its root run's id."""
    return _nonzero(_digest("autonomic-trace", root_run_id)[:16]).hex()


def span_id(run_id: str, seq: int) -> str:
    """The span opened by event ``seq`` of ``run_id``; seq 0 is the run's own span."""
    return _nonzero(_digest("autonomic-span", run_id, seq)[:8]).hex()


def _nonzero(raw: bytes) -> bytes:
    """An all-zero id is invalid in OpenTelemetry (a 2**-64 chance, but never emit one)."""
    return raw if any(raw) else b"\x01" + raw[1:]


def _ns(ts: float) -> int:
    return round(ts * 1e9)


def provider_of(model: str) -> str:
    """``gen_ai.provider.name`` from a model name such as ``openai:gpt-4o``."""
    prefix, sep, _ = model.partition(":")
    return prefix if sep and prefix else "autonomic"


class _Open(msgspec.Struct):
    seq: int
    ts: float
    name: str
    attributes: dict[str, AttributeValue]
    kind: str = "INTERNAL"


def run_spans(
    run_id: str, events: Sequence[StoredEvent], *, capture_content: bool = False
) -> list[Span]:
    """The spans of one run, from its whole log (events 1..n, in order).

    ``capture_content`` adds the opt-in attributes (tool arguments and results, the
    goal, the answer); off by default, as the conventions ask, because they may hold
    personal data. A span still open when the log ends (a model call in flight, a run
    still going) ends at the last event, with status UNSET.
    """
    if not events:
        return []
    first = events[0].event
    if not isinstance(first, RunStarted):
        raise ValueError(
            f"run {run_id}: its log starts with {type(first).__name__}, not RunStarted"
        )
    root = first.root_run_id or first.parent_run_id or run_id
    tid = trace_id(root)
    own = span_id(run_id, 0)
    parent = span_id(first.parent_run_id, 0) if first.parent_run_id else None
    agent_attrs: dict[str, AttributeValue] = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": first.agent,
        "gen_ai.agent.id": first.agent_digest or first.agent,
        "gen_ai.conversation.id": run_id,
        "autonomic.run.id": run_id,
    }
    if first.model:
        agent_attrs["gen_ai.request.model"] = first.model
        agent_attrs["gen_ai.provider.name"] = provider_of(first.model)
    if first.parent_run_id:
        agent_attrs["autonomic.run.parent_id"] = first.parent_run_id
    if first.tenant:
        agent_attrs["autonomic.tenant"] = first.tenant
    if capture_content:
        agent_attrs["autonomic.run.goal"] = first.goal

    spans: list[Span] = []
    notes: list[SpanEvent] = []
    calls: list[_Open] = []
    actions: dict[str, _Open] = {}
    input_tokens = output_tokens = 0
    cost = 0.0
    unpriced = 0
    status, message = "UNSET", ""
    end = events[-1].ts

    def close(
        o: _Open,
        end_ts: float,
        extra: dict[str, AttributeValue],
        err: str = "",
        status: str | None = None,
    ) -> None:
        spans.append(
            Span(
                tid,
                span_id(run_id, o.seq),
                own,
                o.name,
                o.kind,
                _ns(o.ts),
                _ns(max(end_ts, o.ts)),
                o.attributes | extra,
                status or ("ERROR" if err else "OK"),
                err,
            )
        )

    for stored in events[1:]:
        e, ts = stored.event, stored.ts
        match e:
            case ModelCalled():
                model = e.model or first.model
                calls.append(
                    _Open(stored.seq, ts, f"chat {model}", _chat(model, e.purpose), "CLIENT")
                )
            case ModelResponded():
                call = calls.pop(0) if calls else None
                if call is None:  # recorded without a ModelCalled before it: its latency says when
                    model = e.model or first.model
                    call = _Open(
                        stored.seq,
                        ts - e.latency_ms / 1000,
                        f"chat {model}",
                        _chat(model, e.purpose),
                        "CLIENT",
                    )
                input_tokens += e.usage.input_tokens
                output_tokens += e.usage.output_tokens
                extra: dict[str, AttributeValue] = {
                    "gen_ai.usage.input_tokens": e.usage.input_tokens,
                    "gen_ai.usage.output_tokens": e.usage.output_tokens,
                    "gen_ai.response.finish_reasons": ["tool_calls" if e.tool_calls else "stop"],
                }
                if e.model:
                    extra["gen_ai.response.model"] = e.model
                if e.cost is None:
                    unpriced += 1
                    extra["autonomic.cost.unpriced"] = True
                else:
                    cost += e.cost
                    extra["autonomic.cost.usd"] = e.cost
                if e.meta.get("cached"):
                    extra["autonomic.model.cached"] = True
                close(call, ts, extra)
            case ActionRequested():
                attrs: dict[str, AttributeValue] = {
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": e.tool,
                    "gen_ai.tool.call.id": e.call_id,
                    "gen_ai.tool.type": "function",
                    "autonomic.action.id": e.action_id,
                }
                if capture_content:
                    attrs["gen_ai.tool.call.arguments"] = msgspec.json.encode(e.args).decode()
                actions[e.action_id] = _Open(stored.seq, ts, f"execute_tool {e.tool}", attrs)
            case ActionCompleted():
                if (action := actions.pop(e.action_id, None)) is not None:
                    extra = {"autonomic.action.attempts": e.attempts}
                    if capture_content:
                        extra["gen_ai.tool.call.result"] = e.observation
                    close(action, ts, extra)
            case ActionFailed():
                if (action := actions.pop(e.action_id, None)) is not None:
                    extra = {"error.type": "tool_error", "autonomic.action.attempts": e.attempts}
                    close(action, ts, extra, e.error[:500] or "failed")
            case ActionDeferred():
                notes.append(_note("autonomic.action.deferred", ts, children=list(e.children)))
            case ApprovalRequested():
                notes.append(
                    _note("autonomic.approval.requested", ts, tool=e.tool, digest=e.digest)
                )
            case ApprovalGranted():
                notes.append(_note("autonomic.approval.granted", ts, approver=e.approver))
            case ApprovalDenied():
                notes.append(_note("autonomic.approval.denied", ts, approver=e.approver))
            case GuardTripped():
                notes.append(_note("autonomic.guard.tripped", ts, guard=e.guard, detail=e.detail))
            case Suspended():
                notes.append(_note("autonomic.run.suspended", ts, reason=e.reason))
            case Resumed():
                notes.append(_note("autonomic.run.resumed", ts, by=e.by))
                for call in calls:  # their process stopped before the model answered
                    close(call, ts, {"error.type": "interrupted"}, "the process stopped")
                calls.clear()
            case ChildSpawned():
                notes.append(_note("autonomic.child.spawned", ts, child_run_id=e.child_run_id))
            case RunForked():
                agent_attrs["autonomic.run.forked_from"] = e.from_run_id
                agent_attrs["autonomic.run.forked_at"] = e.at_seq
            case RunCompleted():
                status, end = "OK", ts
                if capture_content:
                    agent_attrs["autonomic.run.answer"] = e.answer
            case RunFailed():
                status, message, end = "ERROR", e.error[:500], ts
                agent_attrs["error.type"] = "run_failed"
            case RunCancelled():
                status, message, end = "ERROR", f"cancelled by {e.by}", ts
                agent_attrs["error.type"] = "cancelled"
            case RunDead():
                status, message, end = "ERROR", e.reason[:500], ts
                agent_attrs["error.type"] = "run_dead"

    for o in [*calls, *actions.values()]:  # still open when the log ends
        close(o, end, {}, status="UNSET")
    kpis = run_kpis([s.event for s in events])
    agent_attrs |= {
        f"autonomic.kpi.{name}": value
        for name in ("tool_utility", "thought_to_action", "plan_fidelity")
        if (value := getattr(kpis, name)) is not None
    }
    agent_attrs |= {
        "gen_ai.usage.input_tokens": input_tokens,
        "gen_ai.usage.output_tokens": output_tokens,
        "autonomic.cost.usd": cost,
        "autonomic.cost.unpriced_calls": unpriced,
    }
    agent_span = Span(
        tid,
        own,
        parent,
        f"invoke_agent {first.agent}",
        "INTERNAL",
        _ns(events[0].ts),
        _ns(end),
        agent_attrs,
        status,
        message,
        tuple(notes),
    )
    return [agent_span, *spans]


def _chat(model: str, purpose: str) -> dict[str, AttributeValue]:
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider_of(model),
        "gen_ai.request.model": model,
        "autonomic.model.purpose": purpose,
    }


def _note(name: str, ts: float, **attributes: Any) -> SpanEvent:
    return SpanEvent(name, _ns(ts), {k: v for k, v in attributes.items() if v is not None})
