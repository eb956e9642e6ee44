"""Plan nodes done by child runs: which child does which node, folded from the log.

A strategy that hands nodes to child runs records ``Delegated(plan, nodes)`` and then
asks to ``Spawn`` one child per node, in the same order (both usually reach the log in
one commit; if a crash falls between them, the nodes still queued are spawned on
resume). The slot pairs each ``ChildSpawned`` with the next delegated node, so every
attempt of every node is known, whatever process drove the run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec

from autonomic.events import ChildSpawned, Event, register_event
from autonomic.state import ChildState, RunState, folds, register_slot
from autonomic.steps import Await, Children, ChildSpec, Record, Spawn
from autonomic.strategies.plans import PlanNode, PlanRecorded

__all__ = [
    "Delegated",
    "TeamBook",
    "attempts",
    "delegate",
    "spawn_delegated",
    "summary",
    "wait_for_children",
]

SUMMARY_CHARS = 600
"""A child's answer is passed upward cut to this many characters: its outcome and a
summary, never its history."""


@register_event
class Delegated(Event, frozen=True, tag=True):
    """The next children spawned do these nodes of plan ``plan``, in this order."""

    plan: int
    nodes: tuple[str, ...]

    def trace_line(self) -> str:
        return f"  ⇉ plan {self.plan}: {', '.join(self.nodes)} handed to child runs"


@register_slot
class TeamBook(msgspec.Struct, gc=False, omit_defaults=True):
    queue: list[str] = []
    """Delegated nodes ("plan:node") whose child is not spawned yet."""
    children: dict[str, list[str]] = {}
    """"plan:node" → its child runs, oldest attempt first."""


@folds(Delegated)
def _delegated(s: RunState, e: Delegated, ts: float) -> None:
    s.slot(TeamBook).queue.extend(f"{e.plan}:{n}" for n in e.nodes)


_SLOT = f"{TeamBook.__module__}.{TeamBook.__qualname__}"


@folds(ChildSpawned)
def _spawned(s: RunState, e: ChildSpawned, ts: float) -> None:
    book = s.ext.get(_SLOT)  # only a run that delegated has one
    if isinstance(book, TeamBook) and book.queue:
        book.children.setdefault(book.queue.pop(0), []).append(e.child_run_id)


def attempts(state: RunState, plan: int, node: str) -> list[tuple[str, ChildState]]:
    """The child runs that did (or do) ``node`` of plan ``plan``, oldest first."""
    ids = state.slot(TeamBook).children.get(f"{plan}:{node}", [])
    return [(i, state.children[i]) for i in ids if i in state.children]


def delegate(plan: PlanRecorded, nodes: Sequence[PlanNode]) -> Record:
    """Say which nodes the next children do; ``spawn_delegated`` then starts them."""
    return Record((Delegated(plan.index, tuple(n.id for n in nodes)),))


def spawn_delegated(
    state: RunState, plan: PlanRecorded, goal: Callable[[PlanNode], str]
) -> Spawn | None:
    """Start the delegated nodes that have no child yet (``goal`` gives each its goal)."""
    queue = state.slot(TeamBook).queue
    if not queue:
        return None
    nodes = {f"{plan.index}:{n.id}": n for n in plan.nodes}
    return Spawn(tuple(ChildSpec(nodes[key].tool, goal(nodes[key])) for key in queue))


def wait_for_children(state: RunState, what: str) -> Await:
    return Await(Children(tuple(state.open_children)), reason=what)


def summary(child: ChildState) -> str:
    """What a parent is told of a child: success or failure, and a short summary."""
    text = child.answer if child.status == "completed" else child.error
    cut = text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"
    return f"{'succeeded' if child.status == 'completed' else child.status}: {cut}"
