"""Human-readable views of a run: the one-screen summary and the rationale → action →
observation tree that ``autonomic runs trace`` prints."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

from autonomic.events import (
    ActionCompleted,
    ActionFailed,
    ActionRequested,
    ActionRetried,
    CircuitChanged,
    EgressRequested,
    GuardTripped,
    ModelResponded,
    Resumed,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunForked,
    RunStarted,
    Suspended,
)
from autonomic.loader import StoredEvent
from autonomic.state import RunState
from autonomic.store.base import RunInfo

__all__ = ["cost_text", "render_summary", "render_trace", "short"]


def short(text: str, width: int = 100) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def cost_text(state: RunState) -> str:
    text = f"${state.cost:.4f}"
    if state.unpriced_calls:
        text += f" ({state.unpriced_calls} call(s) without a known price)"
    return text


def render_summary(info: RunInfo, state: RunState) -> str:
    lines = [
        f"run        {info.run_id}",
        f"status     {info.status}",
        f"agent      {info.agent}" + (f"  ({state.agent_path})" if state.agent_path else ""),
        f"goal       {short(state.goal, 200)}",
        f"created    {_when(info.created_at)}",
        f"updated    {_when(info.updated_at)}",
        f"events     {info.last_seq}",
        f"steps      {state.model_calls} model call(s), {state.actions_requested} action(s)",
        f"tokens     {state.usage.input_tokens} in, {state.usage.output_tokens} out",
        f"cost       {cost_text(state)}",
    ]
    if info.forked_from:
        lines.append(f"forked     from {info.forked_from} at event {info.forked_at}")
    if info.recoveries:
        lines.append(f"recovered  {info.recoveries} time(s)")
    if info.lease_owner and info.status == "running":
        lines.append(f"driven by  {info.lease_owner}")
    if state.answer is not None:
        lines.append(f"answer     {state.answer}")
    if state.error is not None:
        lines.append(f"error      {state.error}")
    return "\n".join(lines)


def _args(args: dict[str, object]) -> str:
    return ", ".join(f"{k}={json.dumps(v, default=str)}" for k, v in args.items())


def _price(e: ModelResponded) -> str:
    if e.cost is None:
        return "unpriced"
    if e.meta.get("price_unknown"):
        return f"${e.cost:.4f} (price unknown: counted at the highest known price)"
    return f"${e.cost:.4f}"


def _flags(meta: dict[str, object]) -> str:
    flags = [f"tier {meta['tier']}"] if "tier" in meta else []
    if meta.get("cached"):
        flags.append(f"cached ({meta.get('cache', 'exact')})")
    if meta.get("fallback_from"):
        flags.append(f"fallback from {meta['fallback_from']}")
    attempts = meta.get("attempts")
    if isinstance(attempts, int) and attempts > 1:
        flags.append(f"{attempts} attempts")
    if meta.get("repaired"):
        flags.append(f"repaired: {meta['repaired']}")
    return f"  [{', '.join(flags)}]" if flags else ""


def render_trace(events: Sequence[StoredEvent]) -> str:
    """Rationale → action → observation, with timings and tokens, one line per fact."""
    if not events:
        return "(no events)"
    start = events[0].ts
    lines: list[str] = []
    requests: dict[str, ActionRequested] = {}

    def at(stored: StoredEvent) -> str:
        return f"{stored.seq:>4} +{stored.ts - start:8.3f}s "

    for stored in events:
        e = stored.event
        if isinstance(e, RunStarted):
            lines.append(f"{at(stored)}▶ run started: agent {e.agent}, model {e.model or '?'}")
            lines.append(f"{'':16}goal: {short(e.goal, 200)}")
        elif isinstance(e, RunForked):
            lines.append(f"{at(stored)}⑂ forked from {e.from_run_id} at event {e.at_seq}")
        elif isinstance(e, ModelResponded):
            lines.append(
                f"{at(stored)}● model {e.model}: {e.usage.input_tokens} in / "
                f"{e.usage.output_tokens} out tokens, {e.latency_ms:.1f} ms, {_price(e)}"
                + _flags(e.meta)
            )
            if e.text.strip():
                label = "thought" if e.tool_calls else "reply"
                lines.append(f"{'':18}{label}: {short(e.text)}")
        elif isinstance(e, ActionRequested):
            requests[e.action_id] = e
            lines.append(f"{at(stored)}  ├─ action {e.tool}({short(_args(e.args), 80)})")
        elif isinstance(e, ActionCompleted):
            name = requests[e.action_id].tool if e.action_id in requests else e.action_id
            extra = f", {e.attempts} attempts" if e.attempts > 1 else ""
            if e.full_output:
                extra += f", cut to fit: {len(e.full_output):,} characters in the log"
            lines.append(
                f"{at(stored)}  │  └─ {name} → {short(e.observation)}  "
                f"({e.duration_ms:.1f} ms{extra})"
            )
        elif isinstance(e, ActionRetried):
            lines.append(
                f"{at(stored)}  │  ↻ attempt {e.attempt} failed: {short(e.error, 80)}; "
                f"retrying in {e.delay_s:.2f}s"
            )
        elif isinstance(e, ActionFailed):
            name = requests[e.action_id].tool if e.action_id in requests else e.action_id
            lines.append(f"{at(stored)}  │  └─ {name} ✗ {short(e.error)}")
        elif isinstance(e, EgressRequested):
            verdict = "allowed" if e.allowed else "refused"
            lines.append(f"{at(stored)}  │  ⇄ egress {e.method} {e.host}:{e.port} {verdict}")
        elif isinstance(e, CircuitChanged):
            lines.append(
                f"{at(stored)}  ⚡ circuit {e.target}: {e.from_state} → {e.to_state}"
                + (f" ({e.reason})" if e.reason else "")
            )
        elif isinstance(e, GuardTripped):
            lines.append(f"{at(stored)}  ⚠ guard {e.guard}: {e.detail}")
        elif isinstance(e, Suspended):
            lines.append(f"{at(stored)}⏸ suspended: {e.reason}")
        elif isinstance(e, Resumed):
            lines.append(
                f"{at(stored)}↻ resumed by {e.by}" + (f" ({e.reason})" if e.reason else "")
            )
        elif isinstance(e, RunCompleted):
            lines.append(f"{at(stored)}■ completed: {short(e.answer, 200)}")
        elif isinstance(e, RunFailed):
            lines.append(f"{at(stored)}■ failed: {e.error}")
        elif isinstance(e, RunCancelled):
            lines.append(f"{at(stored)}■ cancelled by {e.by}")
    return "\n".join(lines)
