"""The context manager (memory L1/L2): every model request fits the window before it is sent.

``ContextManaged(strategy, ContextWindow(...))`` wraps any strategy. When the request it
asks for would not fit, it is made to fit in three stages, each tried only when the one
before was not enough:

1. large tool outputs are shortened in the request (the log keeps them whole);
2. the oldest turns are summarised by a model call of purpose ``compact``, recorded as a
   ``MemoryCompacted(summary, covers=(first_seq, last_seq))`` event; later requests show
   the summary instead of those turns;
3. the oldest turns are dropped and what is left is cut, so no request ever exceeds the
   window and no run is ever stuck.

Turns are whole units: an assistant message and the results of its tool calls are kept
or removed together, and a call without a result (an interrupted turn) gets one saying
so, so every request is valid for the OpenAI and Anthropic formats. Everything is a pure
function of the run's state, so replay rebuilds the same requests; the compacted events
stay in the log, and the ``recall_events`` tool returns them verbatim.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import msgspec

from autonomic.errors import ConfigError
from autonomic.events import (
    ActionCompleted,
    ActionFailed,
    ApprovalDenied,
    Event,
    ModelResponded,
    RunStarted,
    register_event,
)
from autonomic.memory.tokens import (
    EstimatedTokens,
    TokenCounter,
    message_tokens,
    request_tokens,
    tools_tokens,
)
from autonomic.messages import Message, ModelRequest
from autonomic.state import RunState, folds, register_slot
from autonomic.steps import Fail, ModelCall, Record, Step
from autonomic.strategies.base import AgentView, Strategy
from autonomic.views import short

__all__ = [
    "COMPACT_PURPOSE",
    "ContextManaged",
    "ContextSlot",
    "ContextWindow",
    "Fitted",
    "MemoryCompacted",
    "fit_request",
]

COMPACT_PURPOSE = "compact"

COMPACT_INSTRUCTIONS = (
    "You compress an agent's working history. Write a short summary of the turns below "
    "that keeps every fact, number, name, decision and open question the agent may still "
    "need, and the outcome of each tool call. Plain text, no preamble."
)


@register_event
class MemoryCompacted(Event, frozen=True, tag=True):
    """Requests after this one show ``summary`` in place of the messages of events
    ``covers[0]`` to ``covers[1]`` (which stay in the log, addressable by seq)."""

    summary: str
    covers: tuple[int, int]
    tokens_before: int = 0
    LARGE_FIELDS: ClassVar[tuple[str, ...]] = ("summary",)

    def trace_line(self) -> str:
        first, last = self.covers
        return f"  ⊟ compacted events {first}-{last}: {short(self.summary, 80)}"


@register_slot
class ContextSlot(msgspec.Struct, gc=False):
    """What the context manager folds: the seq behind each message of ``state.messages``
    and the latest compaction."""

    seqs: list[int] = msgspec.field(default_factory=list)
    summary: str = ""
    covers: tuple[int, int] | None = None
    compactions: int = 0
    act_responses: int = 0
    compacted_at: int = -1
    """``act_responses`` when the latest compaction was recorded."""


@folds(RunStarted, ModelResponded, ActionCompleted, ActionFailed, ApprovalDenied)
def _track_messages(s: RunState, e: Event, ts: float) -> None:
    slot = s.slot(ContextSlot)
    while len(slot.seqs) < len(s.messages):  # s.seq is still the previous event's
        slot.seqs.append(s.seq + 1)
    if isinstance(e, ModelResponded) and e.purpose == "act":
        slot.act_responses += 1


@folds(MemoryCompacted)
def _compacted(s: RunState, e: MemoryCompacted, ts: float) -> None:
    slot = s.slot(ContextSlot)
    slot.summary, slot.covers = e.summary, e.covers
    slot.compactions += 1
    slot.compacted_at = slot.act_responses


@dataclass(frozen=True)
class ContextWindow:
    """The model's window and how to keep requests inside it.

    ``max_tokens`` is the model's context window; ``reserve_output`` of it is left for the
    answer. A tool output longer than ``tool_output_tokens`` is shortened first; a
    summary takes at most ``summary_tokens``; after a compaction the turns kept verbatim
    take at most ``target`` of the budget, so compactions are rare.
    """

    max_tokens: int = 8192
    reserve_output: int = 1024
    tool_output_tokens: int = 800
    summary_tokens: int = 600
    target: float = 0.5
    compact: bool = True
    counter: TokenCounter = field(default_factory=EstimatedTokens)

    def __post_init__(self) -> None:
        if self.max_tokens <= 0 or self.reserve_output < 0:
            raise ConfigError("ContextWindow: max_tokens must be positive, reserve_output >= 0")
        if self.budget < 64:
            raise ConfigError(
                f"ContextWindow: max_tokens - reserve_output is {self.budget} tokens; "
                "it must leave at least 64 for the prompt"
            )
        if not 0 < self.target <= 1 or self.tool_output_tokens < 16 or self.summary_tokens < 16:
            raise ConfigError(
                "ContextWindow: target must be in (0, 1], tool_output_tokens and "
                "summary_tokens at least 16"
            )

    @property
    def budget(self) -> int:
        """Tokens a prompt may take."""
        return self.max_tokens - self.reserve_output


@dataclass(frozen=True, slots=True)
class Fitted:
    """A request made to fit, or the compaction to perform first.

    ``stage`` is "whole", "shortened", "compact" (``compaction`` is then the call to
    make and ``covers`` what it covers) or "truncated".
    """

    request: ModelRequest
    stage: str
    tokens: int
    tokens_before: int
    covers: tuple[int, int] | None = None
    compaction: ModelRequest | None = None


Unit = list[tuple[Message, int]]
Build = Callable[[Sequence[Unit], Sequence[Message]], ModelRequest]


def _cut(text: str, max_tokens: int, counter: TokenCounter, note: str) -> str:
    """``text`` cut in the middle to at most ``max_tokens``, saying what was cut."""
    if counter.count(text) <= max_tokens:
        return text
    keep = max(0, max_tokens * 3 - len(note) - 40)
    while True:
        head, tail = text[: keep * 2 // 3], text[len(text) - keep // 3 :]
        cut = len(text) - len(head) - len(tail)
        candidate = f"{head}\n[… {cut} characters cut{note} …]\n{tail}"
        if counter.count(candidate) <= max_tokens:
            return candidate
        if keep == 0:
            return "…"
        keep //= 2


def _units(messages: Sequence[tuple[Message, int]]) -> list[Unit]:
    """Messages grouped into turns: an assistant's tool calls stay with their results;
    results whose call is missing are dropped, calls whose result is missing get one."""
    units: list[Unit] = []
    for message, seq in messages:
        if message.role == "tool":
            if units and units[-1][0][0].tool_calls:
                units[-1].append((message, seq))
            continue
        units.append([(message, seq)])
    return [_repair(u) for u in units]


def _repair(unit: Unit) -> Unit:
    first, seq = unit[0]
    if not first.tool_calls:
        return unit
    ids = [c.id for c in first.tool_calls]
    results: dict[str, tuple[Message, int]] = {}
    for message, s in unit[1:]:
        if message.tool_call_id in ids and message.tool_call_id not in results:
            results[message.tool_call_id] = (message, s)
    if len(results) == len(ids) and len(unit) == len(ids) + 1:
        return unit
    repaired: Unit = [(first, seq)]
    for call in first.tool_calls:
        found = results.get(call.id)
        repaired.append(
            found
            or (
                Message(
                    role="tool",
                    content="Error: this call has no result (it was interrupted or is pending)",
                    tool_call_id=call.id,
                    name=call.name,
                ),
                0,
            )
        )
    return repaired


def _unit_tokens(unit: Unit, counter: TokenCounter) -> int:
    return sum(message_tokens(m, counter) for m, _ in unit)


def _shorten(unit: Unit, limit: int, counter: TokenCounter) -> Unit:
    shortened: Unit = []
    for message, seq in unit:
        if message.role == "tool" and counter.count(message.content) > limit:
            where = f"; recall_events(seq={seq}) returns all of it" if seq else ""
            message = msgspec.structs.replace(
                message, content=_cut(message.content, limit, counter, where)
            )
        shortened.append((message, seq))
    return shortened


def _render(units: Sequence[Unit], limit: int, counter: TokenCounter) -> str:
    lines = []
    for unit in units:
        for message, seq in unit:
            calls = "".join(
                f" → {c.name}({msgspec.json.encode(c.arguments).decode()})"
                for c in message.tool_calls
            )
            content = _cut(message.content, limit, counter, "")
            lines.append(f"[{seq}] {message.role}{calls}: {content}")
    return "\n".join(lines)


def _locate(request: ModelRequest, messages: Sequence[Message]) -> int | None:
    """Where the run's transcript sits inside the strategy's request, if it does."""
    n = len(messages)
    body = request.messages
    for start in range(0, len(body) - n + 1):
        if start > 4:
            break
        if all(a is b or a == b for a, b in zip(body[start : start + n], messages, strict=True)):
            return start
    return None


def _summary_message(summary: str, covers: tuple[int, int], window: ContextWindow) -> Message:
    text = _cut(summary, window.summary_tokens, window.counter, "")
    return Message(
        role="user",
        content=(
            f"[Summary of events {covers[0]}-{covers[1]}, compacted to save space; "
            f"recall_events returns any of them verbatim]\n{text}"
        ),
    )


def fit_request(
    request: ModelRequest,
    messages: Sequence[Message],
    slot: ContextSlot,
    window: ContextWindow,
    *,
    may_compact: bool = True,
) -> Fitted | str:
    """``request`` (built by a strategy from ``messages``, the run's transcript) within
    ``window.budget``, or why it cannot be (the tool specs alone are too large)."""
    counter, budget = window.counter, window.budget
    before = request_tokens(request.messages, request.tools, counter)
    start = _locate(request, messages)
    if start is None:  # not built from the transcript: nothing to compact, only to cut
        prefix, body, suffix = list(request.messages), [], []
    else:
        prefix = list(request.messages[:start])
        seqs = slot.seqs + [0] * (len(messages) - len(slot.seqs))
        body = list(zip(request.messages[start : start + len(messages)], seqs, strict=True))
        suffix = list(request.messages[start + len(messages) :])
    pinned: list[Message] = []
    if body and body[0][0].role == "user":
        pinned.append(body[0][0])
        body = body[1:]
    if slot.covers is not None and body:
        last = slot.covers[1]
        body = [(m, s) for m, s in body if s == 0 or s > last]
        pinned.append(_summary_message(slot.summary, slot.covers, window))
    units = _units(body)
    fixed = request_tokens([*prefix, *pinned, *suffix], request.tools, counter)
    floor = tools_tokens(request.tools, counter) + 24 * (len(prefix) + len(pinned) + len(suffix))
    if floor + 32 > budget:
        return (
            f"the request cannot fit the context window: its tool specs alone take "
            f"{tools_tokens(request.tools, counter)} tokens of a {budget}-token budget; "
            "raise ContextWindow.max_tokens or give the agent fewer tools"
        )

    def build(kept: Sequence[Unit], head: Sequence[Message]) -> ModelRequest:
        body_messages = [m for unit in kept for m, _ in unit]
        return msgspec.structs.replace(request, messages=(*prefix, *head, *body_messages, *suffix))

    sizes = [_unit_tokens(u, counter) for u in units]
    if fixed + sum(sizes) <= budget:
        whole = build(units, pinned)
        stage = "whole" if whole.messages == request.messages else "compacted"
        return Fitted(whole, stage, fixed + sum(sizes), before)
    units = [_shorten(u, window.tool_output_tokens, counter) for u in units]
    sizes = [_unit_tokens(u, counter) for u in units]
    if fixed + sum(sizes) <= budget:
        return Fitted(build(units, pinned), "shortened", fixed + sum(sizes), before)
    if window.compact and may_compact:
        planned = _plan_compaction(request, units, sizes, fixed, slot, window, before)
        if planned is not None:
            return planned
    return _truncate(units, sizes, fixed, pinned, window, before, build)


def _plan_compaction(
    request: ModelRequest,
    units: list[Unit],
    sizes: list[int],
    fixed: int,
    slot: ContextSlot,
    window: ContextWindow,
    before: int,
) -> Fitted | None:
    """Summarise the oldest turns so that the rest take at most ``target`` of the budget."""
    counter, budget = window.counter, window.budget
    goal = fixed + window.summary_tokens + 40
    cut = 1
    while cut < len(units) - 1 and goal + sum(sizes[cut:]) > budget * window.target:
        cut += 1
    covered = units[:cut]
    seqs = [s for unit in covered for _, s in unit if s]
    if not seqs or len(units) < 2:
        return None
    first = slot.covers[0] if slot.covers is not None else min(seqs)
    covers = (first, max(seqs))
    previous = f"Summary so far:\n{slot.summary}\n\n" if slot.covers is not None else ""
    text = previous + "Turns to add:\n" + _render(covered, window.tool_output_tokens, counter)
    system = Message(role="system", content=COMPACT_INSTRUCTIONS)
    room = budget - request_tokens([system, Message(role="user")], (), counter)
    user = Message(role="user", content=_cut(text, room, counter, ""))
    compaction = ModelRequest(messages=(system, user), purpose=COMPACT_PURPOSE)
    return Fitted(request, "compact", before, before, covers, compaction)


def _truncate(
    units: list[Unit],
    sizes: list[int],
    fixed: int,
    pinned: list[Message],
    window: ContextWindow,
    before: int,
    build: Build,
) -> Fitted:
    """The last resort: keep the newest turns that fit, then cut what is left."""
    counter, budget = window.counter, window.budget
    kept = len(units)
    total = fixed + sum(sizes)
    while kept > 1 and total > budget:
        total -= sizes[len(units) - kept]
        kept -= 1
    chosen = units[len(units) - kept :]
    head = list(pinned)
    request = build(chosen, head)
    tokens = request_tokens(request.messages, request.tools, counter)
    while tokens > budget:
        request = _halve_largest(request, counter)
        new_tokens = request_tokens(request.messages, request.tools, counter)
        if new_tokens >= tokens:  # nothing left to cut but whole turns: drop the last one
            if not chosen:
                break
            chosen = []
            request = build(chosen, head)
            new_tokens = request_tokens(request.messages, request.tools, counter)
        tokens = new_tokens
    return Fitted(request, "truncated", tokens, before)


def _halve_largest(request: ModelRequest, counter: TokenCounter) -> ModelRequest:
    messages = list(request.messages)
    sizes = [counter.count(m.content) for m in messages]
    i = max(range(len(messages)), key=sizes.__getitem__)
    if sizes[i] <= 8:
        return request
    content = messages[i].content
    messages[i] = msgspec.structs.replace(
        messages[i], content=_cut(content, sizes[i] // 2, counter, "")
    )
    return msgspec.structs.replace(request, messages=tuple(messages))


class ContextManaged:
    """A strategy whose every model request fits ``window`` (see the module docstring)."""

    def __init__(self, inner: Strategy, window: ContextWindow | None = None) -> None:
        self.inner = inner
        self.window = window or ContextWindow()
        self.name = f"{inner.name}+context"
        self.events: tuple[type[Event], ...] = (
            *getattr(inner, "events", ()),
            MemoryCompacted,
        )

    def next_step(self, state: RunState, agent: AgentView) -> Step:
        slot = state.slot(ContextSlot)
        answered = len(state.transcripts.get(COMPACT_PURPOSE, ()))
        step = self.inner.next_step(state, agent)
        if not isinstance(step, ModelCall) or step.request.purpose == COMPACT_PURPOSE:
            return step
        may_compact = slot.compacted_at != slot.act_responses
        fitted = fit_request(
            step.request, state.messages, slot, self.window, may_compact=may_compact
        )
        if isinstance(fitted, str):
            return Fail(fitted)
        if answered > slot.compactions and fitted.covers is not None:
            reply = state.transcripts[COMPACT_PURPOSE][-1].content.strip()
            summary = reply or "(the model returned no summary)"
            return Record((MemoryCompacted(summary, fitted.covers, fitted.tokens_before),))
        if fitted.compaction is not None:
            return ModelCall(fitted.compaction)
        return ModelCall(fitted.request)
