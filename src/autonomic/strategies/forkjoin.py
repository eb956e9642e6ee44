"""Fork-join: split the goal into sub-tasks, one child run each, then join their results.

The split comes from a pure function of the goal (``split=``, e.g. sub-ranges) or from a
model call that lists the sub-tasks; it is recorded as a plan. Each child runs the
``worker`` agent towards its own sub-task only (a narrow context: it sees neither the
other tasks nor the parent's history). When all have ended, a solver call joins their
results (or ``join=``, a pure function of the results, does). A child that failed is
handled by ``on_failure``: ``"retry"`` it (up to ``max_retries`` more times), ``"skip"``
it (the join is told it failed), or ``"fail"`` the run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Literal

from autonomic.messages import Message, ModelRequest
from autonomic.state import RunState
from autonomic.steps import Fail, Finish, ModelCall, Record, Step
from autonomic.strategies.base import AgentView
from autonomic.strategies.plans import PlanBook, PlanNode, PlanRecorded
from autonomic.strategies.team import (
    Delegated,
    attempts,
    delegate,
    spawn_delegated,
    summary,
    wait_for_children,
)

__all__ = ["ForkJoin"]

FailurePolicy = Literal["retry", "skip", "fail"]
_ITEM = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+(.+?)\s*$")


class ForkJoin:
    name = "fork-join"
    events = (PlanRecorded, Delegated)

    def __init__(
        self,
        worker: str,
        *,
        split: Callable[[str], Sequence[str]] | None = None,
        join: Callable[[str, Sequence[tuple[str, str]]], str] | None = None,
        on_failure: FailurePolicy = "retry",
        max_retries: int = 1,
        max_children: int = 16,
    ) -> None:
        """``join(goal, [(task, outcome)...])`` writes the answer without a model call."""
        if on_failure not in ("retry", "skip", "fail"):
            raise ValueError("on_failure must be 'retry', 'skip' or 'fail'")
        self.worker, self.split, self.join = worker, split, join
        self.on_failure, self.max_retries, self.max_children = on_failure, max_retries, max_children

    def next_step(self, state: RunState, agent: AgentView) -> Step:
        plan = state.slot(PlanBook).plan
        if plan is None:
            return self._split(state, agent)
        spawn = spawn_delegated(state, plan, lambda n: str(n.args["goal"]))
        if spawn is not None:
            return spawn
        start: list[PlanNode] = []
        outcomes: list[tuple[str, str]] = []
        for node in plan.nodes:
            tried = attempts(state, plan.index, node.id)
            last = tried[-1][1] if tried else None
            if last is None:
                start.append(node)
            elif last.status == "completed" or (
                last.status != "running" and self.on_failure == "skip"
            ):
                outcomes.append((str(node.args["goal"]), summary(last)))
            elif last.status == "running":
                continue
            elif self.on_failure == "retry" and len(tried) <= self.max_retries:
                start.append(node)
            else:
                tries = f" after {len(tried)} tries" if len(tried) > 1 else ""
                return Fail(f"sub-task {node.id} {summary(last)}{tries}")
        if start:
            return delegate(plan, start)
        if state.open_children:
            return wait_for_children(state, f"{len(state.open_children)} sub-task(s)")
        return self._join(state, agent, plan, outcomes)

    def _split(self, state: RunState, agent: AgentView) -> Step:
        if self.split is not None:
            return self._record(list(self.split(state.goal)), "")
        replies = state.transcripts.get("plan", [])
        if replies:
            text = replies[-1].content
            return self._record(
                [m.group(1) for m in map(_ITEM.match, text.splitlines()) if m], text
            )
        ask = (
            f"Split the goal into independent sub-tasks for the agent {self.worker!r}, at most "
            f"{self.max_children}. Each sub-task must make sense on its own. Reply with one "
            "line per sub-task, starting with '- '."
        )
        messages = (
            Message(role="system", content=f"{agent.instructions}\n\n{ask}"),
            Message(role="user", content=state.goal),
        )
        return ModelCall(ModelRequest(messages=messages, purpose="plan"))

    def _record(self, tasks: list[str], text: str) -> Step:
        if not tasks:
            return Fail("the goal was split into no sub-tasks")
        if len(tasks) > self.max_children:
            return Fail(f"the goal was split into {len(tasks)} sub-tasks, over {self.max_children}")
        repeated = {t for t in tasks if tasks.count(t) > 1}
        if repeated:
            return Fail(f"the split repeats a sub-task: {sorted(repeated)[0]!r}")
        nodes = tuple(
            PlanNode(f"T{i}", self.worker, {"goal": task}) for i, task in enumerate(tasks, 1)
        )
        return Record((PlanRecorded(self.name, 1, nodes, text),))

    def _join(
        self,
        state: RunState,
        agent: AgentView,
        plan: PlanRecorded,
        outcomes: list[tuple[str, str]],
    ) -> Step:
        if self.join is not None:
            return Finish(self.join(state.goal, outcomes))
        answers = state.transcripts.get("join", [])
        if answers:
            text = answers[-1].content.strip()
            return Finish(text) if text else Fail("the join wrote an empty answer")
        results = "\n".join(f"- {task}\n  → {outcome}" for task, outcome in outcomes)
        split = [Message(role="assistant", content=plan.text)] if plan.text else []
        messages = (
            Message(role="system", content=agent.instructions),
            Message(role="user", content=state.goal),
            *split,
            Message(
                role="user",
                content=f"The sub-tasks and their results:\n{results}\n\nWrite the final answer.",
            ),
        )
        return ModelCall(ModelRequest(messages=messages, purpose="join"))
