"""The state of a run: a fold over its events.

``RunState.apply`` runs the reducers registered for an event's type (``@folds``); the
core ones are below, and strategies, guards and memory register their own, keeping what
they fold in a typed slot of ``RunState.ext`` (``register_slot``). The runtime keeps the
folded state in memory while it drives a run and snapshots it every few events, so
loading a run reads a snapshot and the events after it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from autonomic.errors import ConfigError
from autonomic.events import (
    ActionCompleted,
    ActionDeferred,
    ActionFailed,
    ActionRequested,
    ApprovalDenied,
    ApprovalGranted,
    ApprovalRequested,
    ChildCompleted,
    ChildSpawned,
    Event,
    GuardTripped,
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
from autonomic.messages import Message, Usage

__all__ = [
    "TERMINAL",
    "ChildState",
    "RunState",
    "fold_version",
    "folds",
    "malformed_reason",
    "register_slot",
]

TERMINAL = frozenset({"completed", "failed", "cancelled"})
"""Statuses a run never leaves. ``dead`` is not one: a person may resume a dead run."""

CORE_FOLD_VERSION = 4
"""Bumped whenever a core reducer changes, so that older snapshots are folded again."""

S = TypeVar("S")
Reducer = Callable[["RunState", Any, float], None]
_REDUCERS: dict[type[Event], list[Reducer]] = {}
_SLOTS: dict[str, tuple[type[Any], int]] = {}
_SLOT_NAMES: dict[type[Any], str] = {}


def folds(*event_types: type[Event]) -> Callable[[Callable[[RunState, Any, float], None]], Any]:
    """Register a reducer ``fn(state, event, ts)`` for these event types."""

    def register(fn: Callable[[RunState, Any, float], None]) -> Any:
        for event_type in event_types:
            _REDUCERS.setdefault(event_type, []).append(fn)
        return fn

    return register


def register_slot(cls: type[S], *, name: str | None = None, version: int = 1) -> type[S]:
    """Make ``cls`` (a msgspec Struct with defaults) a slot of ``RunState.ext``.

    Bump ``version`` when the reducers that fill the slot change: snapshots taken with
    another version are then ignored and the run is folded again from its events.
    """
    key = name or f"{cls.__module__}.{cls.__qualname__}"
    known = _SLOTS.get(key)
    if known is not None and known[0] is not cls:
        raise ConfigError(f"two state slots are named {key!r}")
    _SLOTS[key] = (cls, version)
    _SLOT_NAMES[cls] = key
    return cls


def fold_version() -> str:
    """What a snapshot must have been folded with to be reused."""
    slots = sorted((name, version) for name, (_, version) in _SLOTS.items())
    text = msgspec.json.encode([CORE_FOLD_VERSION, slots])
    return hashlib.sha256(text).hexdigest()[:16]


def decode_slots(raw: dict[str, Any]) -> dict[str, Any]:
    """Turn a snapshot's plain slot values back into their registered types."""
    return {
        name: msgspec.convert(value, _SLOTS[name][0])
        for name, value in raw.items()
        if name in _SLOTS
    }


def malformed_reason(event: ModelResponded) -> str | None:
    """Why a model response cannot be used, or None when it can."""
    malformed = event.meta.get("malformed")
    if malformed:
        return f"the model's response was malformed: {malformed}"
    broken = [c for c in event.tool_calls if c.error]
    if broken:
        return f"tool call {broken[0].name!r} has malformed arguments: {broken[0].error}"
    if not event.text.strip() and not event.tool_calls:
        return "the response was empty (no text and no tool call)"
    return None


class ChildState(msgspec.Struct, gc=False, omit_defaults=True):
    agent: str
    status: str = "running"
    answer: str = ""
    error: str = ""


class RunState(msgspec.Struct, kw_only=True, gc=False):
    """Everything known about a run at event ``seq``."""

    run_id: str
    seq: int = 0
    status: str = "pending"
    goal: str = ""
    agent: str = ""
    agent_path: str | None = None
    agent_digest: str = ""
    limits: dict[str, Any] = {}
    parent_run_id: str | None = None
    root_run_id: str | None = None
    lineage: tuple[str, ...] = ()
    tenant: str | None = None
    priority: int = 0
    """Ready runs of a higher priority are claimed first; children inherit it."""
    forked_from: str | None = None
    started_at: float = 0.0
    active_since: float = 0.0
    active_before: float = 0.0
    last_ts: float = 0.0
    messages: list[Message] = msgspec.field(default_factory=list)
    """The transcript of the strategy's own model calls (purpose ``act``)."""
    transcripts: dict[str, list[Message]] = msgspec.field(default_factory=dict)
    """Responses to model calls of every other purpose (critic, plan, compact...)."""
    model_calls: int = 0
    """Model calls answered. A call a crash interrupted has a ``ModelCalled`` and no answer."""
    usage: Usage = Usage()
    cost: float = 0.0
    unpriced_calls: int = 0
    """Model calls with no known price: counted at the price table's highest price, or not
    at all when the model reported none."""
    actions_requested: int = 0
    pending: dict[str, ActionRequested] = msgspec.field(default_factory=dict)
    deferred: dict[str, ActionDeferred] = msgspec.field(default_factory=dict)
    """Pending actions that are durable waits (agent tools, sleep), by action id."""
    approvals: dict[str, ApprovalRequested] = msgspec.field(default_factory=dict)
    """Approval requests no one has decided yet, by digest."""
    granted: dict[str, tuple[ApprovalRequested, ApprovalGranted]] = msgspec.field(
        default_factory=dict
    )
    """Approvals granted whose action has not been requested yet, by approved digest."""
    decisions: dict[str, str] = msgspec.field(default_factory=dict)
    """digest -> "granted" or "denied", for every approval decided."""
    children: dict[str, ChildState] = msgspec.field(default_factory=dict)
    children_usage: Usage = Usage()
    children_cost: float = 0.0
    signals: dict[str, list[Any]] = msgspec.field(default_factory=dict)
    timers_fired: int = 0
    waiting: Suspended | None = None
    malformed_streak: int = 0
    last_malformed: str = ""
    guard_trips: int = 0
    answer: str | None = None
    error: str | None = None
    ext: dict[str, Any] = msgspec.field(default_factory=dict)
    """Slots registered with ``register_slot``, filled by their reducers."""

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def open_children(self) -> list[str]:
        return [cid for cid, child in self.children.items() if child.status == "running"]

    def active_seconds(self, now: float) -> float:
        """Wall time the run has been driven, not counting time it lay crashed or waiting."""
        return self.active_before + (max(0.0, now - self.active_since) if self.active_since else 0)

    def slot(self, cls: type[S]) -> S:
        """The run's value of a registered slot, created empty on first use."""
        try:
            name = _SLOT_NAMES[cls]
        except KeyError:
            raise ConfigError(f"{cls.__qualname__} is not a registered state slot") from None
        value = self.ext.get(name)
        if value is None:
            value = self.ext[name] = cls()
        return value

    def apply(self, event: Event, seq: int, ts: float) -> None:
        """Fold one event into the state."""
        for reducer in _REDUCERS.get(type(event), ()):
            reducer(self, event, ts)
        self.seq = seq
        self.last_ts = ts


def _stop_clock(s: RunState, ts: float) -> None:
    if s.active_since:
        s.active_before += max(0.0, ts - s.active_since)
    s.active_since = 0.0


@folds(RunStarted)
def _run_started(s: RunState, e: RunStarted, ts: float) -> None:
    s.status = "running"
    s.goal, s.agent, s.agent_path, s.agent_digest = e.goal, e.agent, e.agent_path, e.agent_digest
    s.limits, s.parent_run_id, s.lineage, s.tenant = (
        dict(e.limits),
        e.parent_run_id,
        e.lineage,
        e.tenant,
    )
    s.root_run_id = e.root_run_id or s.run_id
    s.priority = e.priority
    s.started_at = s.active_since = ts
    s.messages.append(Message(role="user", content=e.goal))


@folds(RunForked)
def _run_forked(s: RunState, e: RunForked, ts: float) -> None:
    s.status, s.answer, s.error, s.forked_from, s.waiting = (
        "running",
        None,
        None,
        e.from_run_id,
        None,
    )
    s.active_before, s.active_since = 0.0, ts


@folds(ModelResponded)
def _model_responded(s: RunState, e: ModelResponded, ts: float) -> None:
    s.model_calls += 1
    s.usage = s.usage + e.usage
    if e.cost is None:
        s.unpriced_calls += 1
    else:
        s.cost += e.cost
        if e.meta.get("price_unknown"):
            s.unpriced_calls += 1
    message = Message(role="assistant", content=e.text, tool_calls=e.tool_calls)
    if e.purpose != "act":
        s.transcripts.setdefault(e.purpose, []).append(message)
        return
    s.messages.append(message)
    reason = malformed_reason(e)
    if reason is None:
        s.malformed_streak, s.last_malformed = 0, ""
    else:
        s.malformed_streak += 1
        s.last_malformed = reason


@folds(ActionRequested)
def _action_requested(s: RunState, e: ActionRequested, ts: float) -> None:
    if e.approval is None:
        s.actions_requested += 1
    else:  # its number was taken when approval was asked
        s.granted.pop(e.approval, None)
    s.pending[e.action_id] = e


@folds(ActionDeferred)
def _action_deferred(s: RunState, e: ActionDeferred, ts: float) -> None:
    s.deferred[e.action_id] = e


def _tool_message(s: RunState, action_id: str, content: str) -> None:
    s.deferred.pop(action_id, None)
    request = s.pending.pop(action_id, None)
    if request is not None:
        s.messages.append(
            Message(role="tool", content=content, tool_call_id=request.call_id, name=request.tool)
        )


@folds(ActionCompleted)
def _action_completed(s: RunState, e: ActionCompleted, ts: float) -> None:
    _tool_message(s, e.action_id, e.observation)


@folds(ActionFailed)
def _action_failed(s: RunState, e: ActionFailed, ts: float) -> None:
    _tool_message(s, e.action_id, f"Error: {e.error}")


@folds(ApprovalRequested)
def _approval_requested(s: RunState, e: ApprovalRequested, ts: float) -> None:
    s.actions_requested += 1
    s.approvals[e.digest] = e


@folds(ApprovalGranted, ApprovalDenied)
def _approval_decided(s: RunState, e: ApprovalGranted | ApprovalDenied, ts: float) -> None:
    request = s.approvals.pop(e.digest, None)
    s.decisions[e.digest] = "granted" if isinstance(e, ApprovalGranted) else "denied"
    if request is None:
        return
    if isinstance(e, ApprovalGranted):
        s.granted[e.approved_digest or e.digest] = (request, e)
    else:
        why = f": {e.reason}" if e.reason else ""
        s.messages.append(
            Message(
                role="tool",
                content=f"Error: {e.approver} denied this call{why}",
                tool_call_id=request.call_id,
                name=request.tool,
            )
        )


@folds(ChildSpawned)
def _child_spawned(s: RunState, e: ChildSpawned, ts: float) -> None:
    s.children[e.child_run_id] = ChildState(e.agent)


@folds(ChildCompleted)
def _child_completed(s: RunState, e: ChildCompleted, ts: float) -> None:
    child = s.children.get(e.child_run_id)
    if child is not None:
        child.status, child.answer, child.error = e.status, e.answer, e.error
    s.children_usage = s.children_usage + e.usage
    s.children_cost += e.cost


@folds(SignalReceived)
def _signal(s: RunState, e: SignalReceived, ts: float) -> None:
    s.signals.setdefault(e.name, []).append(e.data)


@folds(TimerFired)
def _timer(s: RunState, e: TimerFired, ts: float) -> None:
    s.timers_fired += 1


@folds(GuardTripped)
def _guard_tripped(s: RunState, e: GuardTripped, ts: float) -> None:
    s.guard_trips += 1


@folds(Suspended)
def _suspended(s: RunState, e: Suspended, ts: float) -> None:
    s.status, s.waiting = "waiting", e
    _stop_clock(s, ts)


@folds(Resumed)
def _resumed(s: RunState, e: Resumed, ts: float) -> None:
    # after a crash, the time up to the last recorded event was spent driving the run
    _stop_clock(s, s.last_ts)
    s.status, s.waiting, s.active_since = "running", None, ts


@folds(RunDead)
def _dead(s: RunState, e: RunDead, ts: float) -> None:
    s.status, s.error = "dead", e.reason
    _stop_clock(s, s.last_ts)


@folds(RunCompleted)
def _completed(s: RunState, e: RunCompleted, ts: float) -> None:
    s.status, s.answer, s.waiting = "completed", e.answer, None


@folds(RunFailed)
def _failed(s: RunState, e: RunFailed, ts: float) -> None:
    s.status, s.error, s.waiting = "failed", e.error, None


@folds(RunCancelled)
def _cancelled(s: RunState, e: RunCancelled, ts: float) -> None:
    s.status, s.error, s.waiting = "cancelled", f"cancelled by {e.by}", None
