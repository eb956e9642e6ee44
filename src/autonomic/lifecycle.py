"""The events at the edges of a run's life, shared by the driver and the runtime.

Starting a run (alone or as a child), what a wait is keyed on in the inbox, and what
ending a run tells the others (its parent learns the outcome, its children are
cancelled): every path that starts, suspends or ends a run uses these, so the log looks
the same whichever process did it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from autonomic.agent import Agent
from autonomic.events import (
    ActionFailed,
    CancelRequested,
    ChildCompleted,
    Event,
    RunCancelled,
    RunStarted,
    encode_event,
)
from autonomic.state import RunState
from autonomic.steps import Approval, Children, Signal, Timer, WaitFor
from autonomic.store.base import CANCEL_KEY, Delivery, Wait

__all__ = [
    "approval_key",
    "cancellation_events",
    "child_key",
    "ending_deliveries",
    "run_started",
    "signal_key",
    "wait_for",
]


def approval_key(digest: str) -> str:
    return f"approval:{digest}"


def signal_key(name: str) -> str:
    return f"signal:{name}"


def child_key(run_id: str) -> str:
    return f"child:{run_id}"


def run_started(
    agent: Agent,
    goal: str,
    model: str,
    *,
    parent: RunState | None = None,
    tenant: str | None = None,
) -> RunStarted:
    return RunStarted(
        goal=goal,
        agent=agent.name,
        agent_path=agent.import_path(),
        agent_digest=agent.digest(),
        model=model,
        limits=agent.limits(),
        parent_run_id=parent.run_id if parent else None,
        root_run_id=(parent.root_run_id or parent.run_id) if parent else None,
        lineage=(*parent.lineage, parent.agent) if parent else (),
        tenant=parent.tenant if parent else tenant,
    )


def cancellation_events(state: RunState, by: str) -> list[Event]:
    """Settle every open action, then cancel: the log of a cancelled run has no loose ends."""
    events: list[Event] = [
        ActionFailed(action_id, "cancelled before it finished") for action_id in state.pending
    ]
    events.append(RunCancelled(by=by))
    return events


def ending_deliveries(state: RunState) -> list[Delivery]:
    """What a run that has ended (or died) sends: its outcome to its parent, and a
    cancellation to every child still running."""
    now = time.time()
    deliveries = [
        Delivery(child, CANCEL_KEY, encode_event(CancelRequested(by=f"parent {state.run_id}"), now))
        for child in state.open_children
    ]
    if state.parent_run_id:
        outcome = ChildCompleted(
            child_run_id=state.run_id,
            status=state.status,
            answer=state.answer or "",
            error=state.error or "",
            usage=state.usage + state.children_usage,
            cost=state.cost + state.children_cost,
        )
        deliveries.append(
            Delivery(state.parent_run_id, child_key(state.run_id), encode_event(outcome, now))
        )
    return deliveries


def wait_for(
    conditions: Sequence[WaitFor], state: RunState, now: float, reason: str
) -> Wait | None:
    """The inbox keys and time a run suspended on ``conditions`` waits for; None when
    one of them is already met. Raises ValueError for a wait that nothing could ever end
    (no condition, or one that is not a condition)."""
    if not isinstance(conditions, tuple | list) or not conditions:
        raise ValueError("an Await needs a condition: Approval, Children, Timer or Signal")
    groups: list[tuple[str, ...]] = []
    wake_at: float | None = None
    for condition in conditions:
        _check_condition(condition)
        match condition:
            case Approval(digest):
                if digest not in state.approvals:
                    return None
                groups.append((approval_key(digest),))
            case Children(ids, mode):
                running = [
                    i
                    for i in ids
                    if state.children.get(i) and state.children[i].status == "running"
                ]
                unknown = [i for i in ids if i not in state.children]
                if unknown:
                    raise ValueError(f"{', '.join(unknown)} are not children of this run")
                if not running or (mode == "any" and len(running) < len(ids)):
                    return None
                keys = tuple(child_key(i) for i in running)
                if mode == "any":
                    groups.extend((key,) for key in keys)
                else:
                    groups.append(keys)
            case Signal(name):
                groups.append((signal_key(name),))
            case Timer(at, after_s):
                when = at if at is not None else now + (after_s or 0.0)
                if when <= now:
                    return None
                if when > LATEST_TIME:
                    raise ValueError("a Timer cannot be set after the year 9999")
                wake_at = when if wake_at is None else min(wake_at, when)
    return Wait(tuple(groups), wake_at, reason)


LATEST_TIME = 253402300799.0
"""The last second of the year 9999: a timer set later could not even be printed."""


def _check_condition(condition: object) -> None:
    """ValueError, saying why, for a condition that is malformed."""
    match condition:
        case Approval(digest):
            ok, what = isinstance(digest, str), "an Approval needs a digest (text)"
        case Children(ids, mode):
            ok = (
                isinstance(ids, tuple | list)
                and bool(ids)
                and all(isinstance(i, str) for i in ids)
                and mode in ("all", "any")
            )
            what = "Children needs child run ids (text) and mode 'all' or 'any'"
        case Signal(name):
            ok, what = isinstance(name, str) and bool(name.strip()), "a Signal needs a name"
        case Timer(at, after_s):
            given = [v for v in (at, after_s) if v is not None]
            ok = len(given) == 1 and all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                for v in given
            )
            what = "a Timer needs one finite number: at or after_s"
        case _:
            ok = False
            what = (
                f"a {type(condition).__name__} is not something to wait for "
                "(Approval, Children, Timer or Signal)"
            )
    if not ok:
        raise ValueError(what)
