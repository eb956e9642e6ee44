"""Plans as data: the ``#E1 = tool[{...}]`` format, its parser, the ``PlanRecorded`` event
and the state slot that follows a plan's nodes through the log.

A planning strategy asks a model for a plan, parses it here (purely), records it as an
event, then asks the runtime to run the nodes whose inputs are ready. The slot folds each
node's outcome from the ordinary action events (matched by call id), so after a crash the
nodes that finished are known from the log and none of them is run again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import msgspec

from autonomic.events import (
    ActionCompleted,
    ActionFailed,
    ActionRequested,
    ApprovalDenied,
    ApprovalRequested,
    Event,
    ModelResponded,
    register_event,
)
from autonomic.messages import ToolCall, ToolSpec
from autonomic.state import RunState, folds, register_slot

__all__ = [
    "PLAN_FORMAT",
    "NodeResult",
    "PlanBook",
    "PlanError",
    "PlanNode",
    "PlanRecorded",
    "call_id",
    "evidence",
    "node_calls",
    "parse_plan",
    "plan_progress",
    "resolve",
    "substitute",
]

PLAN_FORMAT = (
    "Write the plan as lines of this form, one per tool call:\n"
    "Plan: <why this step>\n"
    '#E1 = <tool name>[{"<argument>": "<value>"}]\n'
    "A later step may use an earlier step's result by writing its placeholder (#E1) inside "
    "an argument. Steps that do not use each other's results run at the same time. Write "
    "nothing else."
)

_NODE = re.compile(r"^\s*#?(E\d+)\s*=\s*([A-Za-z_][\w.-]*)\s*\[(.*)\]\s*$")
_PLACEHOLDER = re.compile(r"#(E\d+)\b")


class PlanError(ValueError):
    """A plan that cannot be run; the message says what is wrong with it."""


class PlanNode(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """One step: a tool call whose arguments may hold ``#E<n>`` placeholders (``deps``)."""

    id: str
    tool: str
    args: dict[str, Any] = {}
    deps: tuple[str, ...] = ()
    note: str = ""


@register_event
class PlanRecorded(Event, frozen=True, tag=True):
    """A strategy's plan: its nodes, and the model's text it was parsed from."""

    strategy: str
    index: int
    nodes: tuple[PlanNode, ...]
    text: str = ""
    reason: str = ""
    LARGE_FIELDS: ClassVar[tuple[str, ...]] = ("text",)

    def trace_line(self) -> str:
        steps = "; ".join(
            f"{n.id} {n.tool}" + (f" ← {','.join(n.deps)}" if n.deps else "") for n in self.nodes
        )
        why = f" (re-plan: {self.reason})" if self.reason else ""
        return f"◆ plan {self.index} ({self.strategy}, {len(self.nodes)} steps){why}: {steps}"


class NodeResult(msgspec.Struct, frozen=True, gc=False):
    ok: bool
    text: str


@register_slot
class PlanBook(msgspec.Struct, gc=False, omit_defaults=True):
    """What a run's plans are and how far their nodes got, folded from the log.

    Only a run that plans has one: actions are followed once a plan is recorded (a plan's
    nodes are only ever requested after it), so other runs carry nothing of it."""

    plans: list[PlanRecorded] = []
    plan_replies: int = 0
    """Model replies with purpose ``plan`` so far."""
    replies_at: list[int] = []
    """``plan_replies`` when each plan was recorded: plan k came from replies
    ``replies_at[k-2]:replies_at[k-1]`` (the last one parsed, the others repaired)."""
    calls: dict[str, str] = {}
    """action id → call id, for every action requested."""
    approvals: dict[str, str] = {}
    """approval digest → call id."""
    results: dict[str, NodeResult] = {}
    """call id → the outcome of that call."""

    @property
    def plan(self) -> PlanRecorded | None:
        return self.plans[-1] if self.plans else None

    @property
    def replies_used(self) -> int:
        return self.replies_at[-1] if self.replies_at else 0


_SLOT = f"{PlanBook.__module__}.{PlanBook.__qualname__}"


@folds(PlanRecorded)
def _plan(s: RunState, e: PlanRecorded, ts: float) -> None:
    book = s.slot(PlanBook)
    book.plans.append(e)
    book.replies_at.append(book.plan_replies)


@folds(ModelResponded)
def _reply(s: RunState, e: ModelResponded, ts: float) -> None:
    if e.purpose == "plan":
        s.slot(PlanBook).plan_replies += 1


def _planning(s: RunState) -> PlanBook | None:
    """The run's PlanBook once it has recorded a plan; None for a run that plans nothing."""
    book = s.ext.get(_SLOT)
    return book if isinstance(book, PlanBook) and book.plans else None


@folds(ActionRequested)
def _requested(s: RunState, e: ActionRequested, ts: float) -> None:
    if (book := _planning(s)) is not None:
        book.calls[e.action_id] = e.call_id


@folds(ApprovalRequested)
def _approval(s: RunState, e: ApprovalRequested, ts: float) -> None:
    if (book := _planning(s)) is not None:
        book.approvals[e.digest] = e.call_id


@folds(ApprovalDenied)
def _denied(s: RunState, e: ApprovalDenied, ts: float) -> None:
    book = _planning(s)
    if book is None:
        return
    call = book.approvals.get(e.digest)
    if call is not None:
        book.results[call] = NodeResult(False, f"denied by {e.approver}: {e.reason}".rstrip(": "))


@folds(ActionCompleted, ActionFailed)
def _outcome(s: RunState, e: ActionCompleted | ActionFailed, ts: float) -> None:
    book = _planning(s)
    if book is None:
        return
    call = book.calls.get(e.action_id)
    if call is not None:
        book.results[call] = (
            NodeResult(True, e.observation)
            if isinstance(e, ActionCompleted)
            else NodeResult(False, f"Error: {e.error}")
        )


def call_id(plan: PlanRecorded, node: PlanNode) -> str:
    """The tool call id of ``node`` in ``plan``: unique in the run across re-plans."""
    return f"p{plan.index}.{node.id}"


def parse_plan(
    text: str, tools: Sequence[ToolSpec], *, any_order: bool = False
) -> tuple[PlanNode, ...]:
    """The nodes of a plan in ``PLAN_FORMAT``; PlanError saying what is wrong otherwise.

    With ``any_order``, a step may use one written after it: the nodes come back in an
    order where every node follows its inputs (a cycle is an error)."""
    specs = {t.name: t for t in tools}
    nodes: list[PlanNode] = []
    seen: set[str] = set()
    note = ""
    for line in text.splitlines():
        stripped = line.strip().strip("`")
        if stripped.lower().startswith("plan:"):
            note = stripped[5:].strip()
            continue
        match = _NODE.match(stripped)
        if match is None:
            continue
        node_id, tool, raw = match.groups()
        if node_id in seen:
            raise PlanError(f"#{node_id} is defined twice")
        spec = specs.get(tool)
        if spec is None:
            known = ", ".join(sorted(specs)) or "none"
            raise PlanError(f"#{node_id} calls {tool!r}, which is not a tool (tools: {known})")
        args = _arguments(node_id, raw.strip(), spec)
        deps = tuple(dict.fromkeys(_PLACEHOLDER.findall(json.dumps(args))))
        later = [d for d in deps if d not in seen]
        if later and not any_order:
            raise PlanError(f"#{node_id} uses #{later[0]}, which is not defined before it")
        nodes.append(PlanNode(node_id, tool, args, deps, note))
        seen.add(node_id)
        note = ""
    if not nodes:
        raise PlanError("it has no step of the form #E1 = tool[{...}]")
    return resolve(nodes) if any_order else tuple(nodes)


def resolve(nodes: Sequence[PlanNode]) -> tuple[PlanNode, ...]:
    """``nodes`` ordered so that each follows every node it waits for (stable otherwise);
    PlanError naming a missing input or a cycle."""
    known = {n.id for n in nodes}
    for node in nodes:
        missing = [d for d in node.deps if d not in known]
        if missing:
            raise PlanError(f"#{node.id} uses #{missing[0]}, which the plan does not define")
    ordered: list[PlanNode] = []
    placed: set[str] = set()
    left = list(nodes)
    while left:
        ready = [n for n in left if set(n.deps) <= placed]
        if not ready:
            cycle = ", ".join(f"#{n.id}" for n in left)
            raise PlanError(f"{cycle} wait for each other (a cycle): none of them can start")
        ordered += ready
        placed.update(n.id for n in ready)
        left = [n for n in left if n.id not in placed]
    return tuple(ordered)


def _arguments(node_id: str, raw: str, spec: ToolSpec) -> dict[str, Any]:
    if not raw:
        return {}
    if raw.startswith("{"):
        try:
            args = json.loads(raw)
        except json.JSONDecodeError as e:
            raise PlanError(f"the arguments of #{node_id} are not valid JSON: {e}") from None
        if not isinstance(args, dict):
            raise PlanError(f"the arguments of #{node_id} are not a JSON object")
        return args
    properties = list(spec.parameters.get("properties", {}))
    if len(properties) != 1:
        raise PlanError(
            f"#{node_id} gives {spec.name!r} a bare value, but it takes "
            f"{len(properties)} arguments: write a JSON object"
        )
    return {properties[0]: raw.strip("\"'")}


def substitute(value: Any, results: Mapping[str, str]) -> Any:
    """``value`` with every ``#E<n>`` placeholder in its strings replaced by that result."""
    if isinstance(value, str):
        return _PLACEHOLDER.sub(lambda m: results.get(m.group(1), m.group(0)), value)
    if isinstance(value, list):
        return [substitute(v, results) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, results) for k, v in value.items()}
    return value


def plan_progress(
    plan: PlanRecorded, book: PlanBook
) -> tuple[list[PlanNode], dict[str, NodeResult], list[PlanNode]]:
    """(nodes ready to run, outcomes so far by node id, nodes skipped because an input
    failed). A node is ready when every node it uses has succeeded."""
    outcomes: dict[str, NodeResult] = {}
    ready: list[PlanNode] = []
    skipped: list[PlanNode] = []
    for node in plan.nodes:
        result = book.results.get(call_id(plan, node))
        if result is not None:
            outcomes[node.id] = result
            continue
        if any(d in outcomes and not outcomes[d].ok for d in node.deps) or any(
            d in {s.id for s in skipped} for d in node.deps
        ):
            skipped.append(node)
        elif all(d in outcomes for d in node.deps):
            ready.append(node)
    return ready, outcomes, skipped


def node_calls(
    plan: PlanRecorded, nodes: Iterable[PlanNode], book: PlanBook
) -> tuple[ToolCall, ...]:
    """The tool calls of ``nodes``, their placeholders filled with their inputs' results."""
    _, outcomes, _ = plan_progress(plan, book)
    texts = {k: v.text for k, v in outcomes.items()}
    return tuple(ToolCall(call_id(plan, n), n.tool, substitute(n.args, texts)) for n in nodes)


def evidence(plan: PlanRecorded, book: PlanBook) -> str:
    """Each step of ``plan`` and what it gave, for the model that writes the answer."""
    _, outcomes, skipped = plan_progress(plan, book)
    lines = []
    for node in plan.nodes:
        result = outcomes.get(node.id)
        if result is not None:
            got = result.text
        elif node in skipped:
            got = "not run: a step it uses failed"
        else:
            got = "not run"
        lines.append(f"#{node.id} = {node.tool}[{json.dumps(node.args)}]\n  → {got}")
    return "\n".join(lines)
