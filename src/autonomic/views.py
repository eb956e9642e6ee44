"""Human-readable views of a run for the command line: the one-screen summary, the
status of a run as people need it, and the rationale → action → observation tree that
``autonomic runs trace`` prints."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from autonomic.events import (
    ActionCompleted,
    ActionDeferred,
    ActionFailed,
    ActionRequested,
    ActionRetried,
    ApprovalDenied,
    ApprovalGranted,
    ApprovalRequested,
    ChildCompleted,
    ChildSpawned,
    CircuitChanged,
    EgressRequested,
    Event,
    GuardTripped,
    InboxRefused,
    ModelResponded,
    Resumed,
    RunCancelled,
    RunCompleted,
    RunDead,
    RunFailed,
    RunForked,
    RunStarted,
    SignalReceived,
    Suspended,
    TimerFired,
)
from autonomic.loader import StoredEvent
from autonomic.owner import owner_is_dead_here
from autonomic.state import RunState
from autonomic.store.base import RunInfo

__all__ = ["cost_text", "render_summary", "render_trace", "short", "status_text"]


def short(text: str, width: int = 100) -> str:
    """One line of at most ``width`` characters, with control characters (a terminal's
    escape sequences from sandboxed output, say) shown escaped, never acted on."""
    flat = " ".join(text.split()).translate(_CONTROL)
    return flat if len(flat) <= width else flat[: width - 1] + "…"


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)} | {
    c: f"\\u{c:04x}" for c in range(0x80, 0xA0)
}


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def cost_text(state: RunState) -> str:
    text = f"${state.cost:.4f}"
    if state.unpriced_calls:
        text += f" ({state.unpriced_calls} call(s) without a known price)"
    return text


def status_text(info: RunInfo, now: float) -> str:
    """The run's status as a person needs it: a run whose process died says so."""
    if info.status == "running":
        if info.lease_owner is None:
            return "running (no process drives it yet)"
        if (info.lease_expires_at or 0) <= now or owner_is_dead_here(info.lease_owner):
            return "running (orphaned: its process died; resume it with 'autonomic runs resume')"
    if info.status == "waiting" and info.wait is not None and info.wait.reason:
        return f"waiting for {info.wait.reason}"
    return info.status


def render_summary(info: RunInfo, state: RunState) -> str:
    lines = [
        f"run        {info.run_id}",
        f"status     {status_text(info, time.time())}",
        f"agent      {info.agent}" + (f"  ({state.agent_path})" if state.agent_path else ""),
        f"goal       {short(state.goal, 200)}",
        f"created    {_when(info.created_at)}",
        f"updated    {_when(info.updated_at)}",
        f"events     {info.last_seq}",
        f"steps      {state.model_calls} model call(s), {state.actions_requested} action(s)",
        f"tokens     {state.usage.input_tokens} in, {state.usage.output_tokens} out",
        f"cost       {cost_text(state)}",
    ]
    if info.parent_run_id:
        lines.append(f"parent     {info.parent_run_id} (depth {info.depth})")
    if state.children:
        done = sum(1 for c in state.children.values() if c.status != "running")
        lines.append(f"children   {len(state.children)} ({done} ended)")
    lines.extend(
        f"approval   {r.tool}({short(_args(r.args), 60)}) digest {r.digest[:12]}: "
        f"autonomic approve {info.run_id} {r.digest[:12]}"
        for r in state.approvals.values()
    )
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


def _line(e: Event, requests: dict[str, ActionRequested | ApprovalRequested]) -> str | None:
    """The trace line of one event (without its seq and time), or None to leave it out."""
    match e:
        case RunStarted():
            parent = f", child of {e.parent_run_id}" if e.parent_run_id else ""
            return (
                f"▶ run started: agent {e.agent}, model {e.model or '?'}{parent}\n"
                f"{'':16}goal: {short(e.goal, 200)}"
            )
        case RunForked():
            return f"⑂ forked from {e.from_run_id} at event {e.at_seq}"
        case ModelResponded():
            purpose = f" ({e.purpose})" if e.purpose != "act" else ""
            line = (
                f"● model {e.model}{purpose}: {e.usage.input_tokens} in / "
                f"{e.usage.output_tokens} out tokens, {e.latency_ms:.1f} ms, {_price(e)}"
                + _flags(e.meta)
            )
            if e.text.strip():
                label = "thought" if e.tool_calls else "reply"
                line += f"\n{'':18}{label}: {short(e.text)}"
            return line
        case ActionRequested():
            requests[e.action_id] = e
            approved = f"  [approved {e.approval[:12]}]" if e.approval else ""
            return f"  ├─ action {e.tool}({short(_args(e.args), 80)}){approved}"
        case ActionCompleted():
            extra = f", {e.attempts} attempts" if e.attempts > 1 else ""
            if e.full_output:
                extra += f", cut to fit: {len(e.full_output):,} characters in the log"
            name = _tool(requests, e.action_id)
            return f"  │  └─ {name} → {short(e.observation)}  ({e.duration_ms:.1f} ms{extra})"
        case ActionRetried():
            return (
                f"  │  ↻ attempt {e.attempt} failed: {short(e.error, 80)}; "
                f"retrying in {e.delay_s:.2f}s"
            )
        case ActionFailed():
            return f"  │  └─ {_tool(requests, e.action_id)} ✗ {short(e.error)}"
        case ActionDeferred():
            waits = [f"child {c}" for c in e.children]
            if e.wake_at is not None:
                waits.append(f"until {_when(e.wake_at)}")
            return f"  │  ⧗ {_tool(requests, e.action_id)} waits for {', '.join(waits)}"
        case ApprovalRequested():
            requests[e.action_id] = e
            return (
                f"  ├─ ✋ approval needed: {e.tool}({short(_args(e.args), 80)}) "
                f"[{e.digest[:12]}] {e.reason}"
            )
        case ApprovalGranted():
            edited = " with edited arguments" if e.args is not None else ""
            return f"  │  ✓ approved by {e.approver}{edited} [{e.digest[:12]}]"
        case ApprovalDenied():
            why = f": {e.reason}" if e.reason else ""
            return f"  │  ✗ denied by {e.approver}{why} [{e.digest[:12]}]"
        case ChildSpawned():
            return f"  ├─ ⑃ child run {e.child_run_id}: agent {e.agent}, goal {short(e.goal, 80)}"
        case ChildCompleted():
            outcome = short(e.answer, 80) if e.status == "completed" else short(e.error, 80)
            return f"  │  ⑃ child {e.child_run_id} {e.status}: {outcome}"
        case SignalReceived():
            return f"  ✉ signal {e.name}: {short(json.dumps(e.data, default=str), 80)}"
        case TimerFired():
            return f"  ⏰ timer fired (set for {_when(e.at)})"
        case InboxRefused():
            return f"  ⚠ refused {e.key}: {e.reason}"
        case EgressRequested():
            verdict = "allowed" if e.allowed else "refused"
            why = f" ({short(e.reason, 80)})" if e.reason and not e.allowed else ""
            return f"  │  ⇄ egress {e.method} {short(e.host, 80)}:{e.port} {verdict}{why}"
        case CircuitChanged():
            why = f" ({e.reason})" if e.reason else ""
            return f"  ⚡ circuit {e.target}: {e.from_state} → {e.to_state}{why}"
        case GuardTripped():
            return f"  ⚠ guard {e.guard}: {e.detail}"
        case Suspended():
            return f"⏸ waiting: {e.reason}"
        case Resumed():
            return f"↻ resumed by {e.by}" + (f" ({e.reason})" if e.reason else "")
        case RunCompleted():
            return f"■ completed: {short(e.answer, 200)}"
        case RunFailed():
            return f"■ failed: {e.error}"
        case RunCancelled():
            return f"■ cancelled by {e.by}"
        case RunDead():
            return f"■ dead: {e.reason}"
    trace_line = getattr(e, "trace_line", None)  # a strategy's or guard's own event
    return str(trace_line()) if callable(trace_line) else None


def _tool(requests: dict[str, ActionRequested | ApprovalRequested], action_id: str) -> str:
    request = requests.get(action_id)
    return request.tool if request is not None else action_id


def render_trace(events: Sequence[StoredEvent]) -> str:
    """Rationale → action → observation, with timings and tokens, one line per fact."""
    if not events:
        return "(no events)"
    start = events[0].ts
    lines: list[str] = []
    requests: dict[str, ActionRequested | ApprovalRequested] = {}
    for stored in events:
        line = _line(stored.event, requests)
        if line is not None:
            lines.append(f"{stored.seq:>4} +{stored.ts - start:8.3f}s {line}")
    return "\n".join(lines)
