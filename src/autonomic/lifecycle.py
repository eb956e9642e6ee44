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
from typing import Any

from autonomic.agent import Agent
from autonomic.errors import ConfigError
from autonomic.events import (
    ActionFailed,
    CancelRequested,
    ChildCompleted,
    ChildSpawned,
    Event,
    NewEvent,
    RunCancelled,
    RunStarted,
    encode_event,
)
from autonomic.guards.base import Guard
from autonomic.guards.budget import carve, ledger_spent
from autonomic.state import RunState
from autonomic.steps import Approval, Children, ChildSpec, Signal, Timer, WaitFor
from autonomic.store.base import CANCEL_KEY, Delivery, NewRun, Wait, checked_priority

__all__ = [
    "SpawnRefused",
    "approval_key",
    "cancellation_events",
    "child_key",
    "describe_wait",
    "ending_deliveries",
    "open_wait",
    "plan_children",
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
    budget: dict[str, float] | None = None,
    priority: int = 0,
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
        budget=budget,
        priority=priority,
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
            spent=ledger_spent(state),
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


class SpawnRefused(Exception):
    """A child run that must not be started (unknown agent, cycle, too deep)."""


def _child_priority(state: RunState, agent: Agent, spec: ChildSpec) -> int:
    try:
        return checked_priority(state.priority if spec.priority is None else spec.priority)
    except ConfigError as e:
        raise SpawnRefused(f"a child run of agent {agent.name!r}: {e}") from None


def plan_children(
    state: RunState,
    parent: Agent,
    agents: Sequence[Agent],
    specs: Sequence[ChildSpec],
    *,
    guards: Sequence[Guard] | None = None,
) -> list[tuple[ChildSpawned, NewRun, NewEvent]]:
    """For each child of ``state``'s run (``agents`` resolved from ``specs``), the event
    that records it, its row and its first event; raises SpawnRefused for an agent already
    in the lineage (unless it allows recursion), a run nested deeper than
    ``parent.max_depth``, an empty goal or a priority that is not a whole number.

    Each child is given its share of the run's budget (``guards``, by default the
    parent agent's), recorded on both events, and the run's priority unless its spec
    names one."""
    lineage = (*state.lineage, state.agent)
    depth = len(lineage)
    for agent, spec in zip(agents, specs, strict=True):
        goal = spec.goal
        if agent.name in lineage and not agent.allow_recursion:
            chain = " → ".join((*lineage, agent.name))
            raise SpawnRefused(
                f"refused to start agent {agent.name!r}: it is already in this run's lineage "
                f"({chain}); set allow_recursion=True on it to allow this"
            )
        if depth > parent.max_depth:
            raise SpawnRefused(
                f"refused to start agent {agent.name!r}: runs may nest {parent.max_depth} "
                "deep (max_depth)"
            )
        if not isinstance(goal, str) or not goal.strip():
            raise SpawnRefused(f"a child run of agent {agent.name!r} needs a non-empty goal")
    budget = carve(state, parent.guards if guards is None else guards, len(agents))
    planned = []
    for n, (agent, spec) in enumerate(zip(agents, specs, strict=True), len(state.children) + 1):
        goal, priority = spec.goal, _child_priority(state, agent, spec)
        child_id = f"{state.run_id}.{n}"
        run = NewRun(
            child_id,
            agent.name,
            goal[:500],
            parent_run_id=state.run_id,
            root_run_id=state.root_run_id or state.run_id,
            depth=depth,
            tenant=state.tenant,
            priority=priority,
        )
        event = run_started(
            agent, goal, agent.model_name, parent=state, budget=budget, priority=priority
        )
        started = encode_event(event, time.time())
        planned.append((ChildSpawned(child_id, agent.name, goal, budget), run, started))
    return planned


def open_wait(state: RunState) -> Wait:
    """What a run with open approvals and durable waits waits for: any one of them."""
    groups = [(approval_key(d),) for d in state.approvals]
    running = [
        c
        for d in state.deferred.values()
        for c in d.children
        if state.children[c].status == "running"
    ]
    groups.extend((child_key(c),) for c in running)
    timers = [d.wake_at for d in state.deferred.values() if d.wake_at is not None]
    reasons = [f"approval of {a.tool}({_args_text(a.args)})" for a in state.approvals.values()]
    if running:
        more = " ..." if len(running) > 5 else ""
        reasons.append(f"child runs {', '.join(running[:5])}{more}")
    if timers:
        reasons.append(f"a timer at {_clock(min(timers))}")
    return Wait(tuple(groups), min(timers) if timers else None, "; ".join(reasons))


def describe_wait(wait: Wait) -> str:
    """A wait in words, from its inbox keys and timer."""
    parts = [" and ".join(group) for group in wait.groups]
    if wait.wake_at is not None:
        parts.append(f"time {_clock(wait.wake_at)}")
    return " or ".join(parts) or "nothing"


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


def _args_text(args: dict[str, Any], limit: int = 80) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in args.items())
    return text if len(text) <= limit else text[: limit - 3] + "..."
