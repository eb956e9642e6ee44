"""Agent KPIs read from a run's log: how well it planned, used its tools and spent tokens.

Every figure comes from the events alone, so it is the same whichever process drove the
run and however often it crashed: ``runs show`` and ``runs trace`` print them, and a
bench or a dashboard computes them the same way.

- plan fidelity: plan steps that were run (as a tool call or a child run), over plan
  steps written (None without a plan);
- tool utility: tool calls that succeeded and whose result a model read afterwards, over
  tool calls made (None without a tool call);
- thought-to-action ratio: model calls per tool call (None without a tool call);
- tokens per task: every token of the run and of its child runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from autonomic.events import (
    ActionCompleted,
    ActionRequested,
    ChildCompleted,
    Event,
    ModelCalled,
    ModelResponded,
    RunCompleted,
)
from autonomic.strategies.plans import PlanRecorded, call_id
from autonomic.strategies.team import Delegated

__all__ = ["Kpis", "kpi_lines", "run_kpis"]


class Kpis(msgspec.Struct, frozen=True):
    success: bool
    model_calls: int
    tool_calls: int
    plan_steps: int
    plan_steps_run: int
    tokens: int
    plan_fidelity: float | None
    tool_utility: float | None
    thought_to_action: float | None


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 3) if whole else None


def run_kpis(events: Sequence[Event]) -> Kpis:
    """The KPIs of one run, from its events in order."""
    planned: set[str] = set()
    delegated: set[str] = set()  # plan steps handed to child runs
    requested: dict[str, str] = {}  # action id → call id
    succeeded: list[str] = []  # action ids, in the order they completed
    used: set[str] = set()
    model_calls = tokens = 0
    success = False
    for event in events:
        match event:
            case PlanRecorded():
                planned.update(call_id(event, node) for node in event.nodes)
            case Delegated(plan=plan, nodes=nodes):
                delegated.update(f"p{plan}.{node}" for node in nodes)
            case ActionRequested(action_id=action_id, call_id=call):
                requested[action_id] = call
            case ActionCompleted(action_id=action_id):
                succeeded.append(action_id)
            case ModelCalled():
                used.update(succeeded)  # every result so far is in front of a model now
            case ModelResponded(usage=usage):
                model_calls += 1
                tokens += usage.total_tokens
            case ChildCompleted(usage=usage):
                tokens += usage.total_tokens
            case RunCompleted():
                success = True
                used.update(succeeded)  # the answer was written from them
    run = planned & (set(requested.values()) | delegated)
    return Kpis(
        success=success,
        model_calls=model_calls,
        tool_calls=len(requested),
        plan_steps=len(planned),
        plan_steps_run=len(run),
        tokens=tokens,
        plan_fidelity=_ratio(len(run), len(planned)),
        tool_utility=_ratio(len(used), len(requested)),
        thought_to_action=_ratio(model_calls, len(requested)),
    )


def kpi_lines(kpis: Kpis) -> list[str]:
    """The KPIs as the lines ``runs show`` prints."""

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.0%}"

    lines = []
    if kpis.plan_steps:
        lines.append(
            f"plan       fidelity {pct(kpis.plan_fidelity)} "
            f"({kpis.plan_steps_run} of {kpis.plan_steps} planned steps run)"
        )
    ratio = "n/a" if kpis.thought_to_action is None else f"{kpis.thought_to_action:g}"
    lines.append(
        f"kpis       tool utility {pct(kpis.tool_utility)}, thought/action {ratio}, "
        f"{kpis.tokens} tokens for the task"
    )
    return lines
