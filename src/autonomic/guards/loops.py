"""Loop and entropy monitor: notice an agent going round in circles, and break the circle.

Read from the run's transcript before each model call (a pure function of the state, so
it holds across a crash and a resume): the same tool call over and over (by the tool's
identity key when it declares one, else its arguments), A-B-A-B alternation, the same
error again and again, a monologue of answers with no action, and near-duplicate
thoughts (an embedder's cosine similarity when one is given, else overlap of normalised
words). It escalates with the loop: a warning added to the prompt, then a firmer nudge
to re-plan, then the run is stopped, each recorded as ``GuardTripped`` with the reason.
"""

from __future__ import annotations

import collections
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from autonomic.errors import ConfigError
from autonomic.guards.base import ALLOW, Deny, Guard, Rewrite, Verdict, run_tools
from autonomic.messages import Message, ToolCall
from autonomic.state import RunState
from autonomic.steps import Await, ModelCall, Signal, Step

__all__ = ["Loop", "LoopGuard", "detect_loop"]

Identity = Callable[[dict[str, Any]], object]
Embedder = Callable[[str], Sequence[float]]
Memo = dict[int, tuple[Message, tuple[str, ...]]]
"""The identities of each assistant message's calls already worked out, by the message
object (held, so that its id stays its own)."""

_WORD = re.compile(r"\w+")
_NUMBER = re.compile(r"\d+")


@dataclass(frozen=True, slots=True)
class Loop:
    """A loop seen: what kind, said for people, and how far past the threshold it is
    (0 at the threshold: warn; 1: nudge; 2 and more: stop)."""

    kind: str
    detail: str
    excess: int


class _Identities:
    """What makes two calls the same, per tool: the guard's rule, the tool's declared
    ``identity_key``, or else all of the arguments."""

    def __init__(self, rules: Mapping[str, Identity], memo: Memo | None) -> None:
        self._rules: dict[str, object] = dict(rules)
        self._memo = memo

    def __call__(self, message: Message) -> tuple[str, ...]:
        """The identities of ``message``'s tool calls."""
        memo = self._memo
        if memo is None:
            return tuple(self._key(c) for c in message.tool_calls)
        known = memo.get(id(message))
        if known is None or known[0] is not message:
            keys = tuple(self._key(c) for c in message.tool_calls)
            known = memo[id(message)] = (message, keys)
        return known[1]

    def _key(self, call: ToolCall) -> str:
        name = call.name
        if name not in self._rules:
            self._rules[name] = _declared(name)
        rule = self._rules[name]
        key: object = rule(dict(call.arguments)) if callable(rule) else call.arguments
        return f"{name}:{json.dumps(key, sort_keys=True, default=str)}"


def _declared(tool: str) -> object:
    """The identity key a tool of the run declares (``identity_key``), if any."""
    try:
        return getattr(run_tools().get(tool), "identity_key", None)
    except ConfigError:  # judged outside a run: by the arguments
        return None


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.casefold()))


def _jaccard(a: str, b: str) -> float:
    wa, wb = _words(a), _words(b)
    if not wa or not wb:
        return 0.0
    return len(wa & wb) / len(wa | wb)


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def _run_length(items: Sequence[str]) -> int:
    """How many of the last items are equal to the last one, in a row."""
    if not items:
        return 0
    n = 1
    while n < len(items) and items[-n - 1] == items[-1]:
        n += 1
    return n


def _alternation(items: Sequence[str]) -> int:
    """How many of the last items follow an A-B-A-B pattern (A != B)."""
    if len(items) < 2 or items[-1] == items[-2]:
        return 0
    n = 2
    while n < len(items) and items[-n - 1] == items[-n + 1]:
        n += 1
    return n


def detect_loop(
    messages: Sequence[Message],
    *,
    repeat: int = 3,
    window: int = 12,
    similarity: float = 0.9,
    monologue: int = 4,
    identities: Mapping[str, Identity] | None = None,
    embed: Embedder | None = None,
    memo: Memo | None = None,
) -> Loop | None:
    """The loop the newest messages show, or None. ``repeat``: how many times the same
    thing in a row counts as a loop (A-B-A-B: that many pairs). ``memo``: the
    identities of calls already seen, kept between calls for one run."""
    identity = _Identities(identities or {}, memo)
    recent = list(messages[-window * 2 - 1 :])
    said = [m for m in recent if m.role == "assistant"]
    acts = [identity(m) for m in said]
    calls = [key for keys in acts for key in keys][-window:]
    same = _run_length(calls)
    if same >= repeat:
        name = calls[-1].split(":", 1)[0]
        return Loop(
            "repeated call", f"the same call to {name!r} {same} times in a row", same - repeat
        )
    pairs = _alternation(calls) // 2
    if pairs >= repeat:
        a, b = (c.split(":", 1)[0] for c in calls[-2:])
        return Loop("alternation", f"calls alternate {a!r}/{b!r} {pairs} times", pairs - repeat)
    results = [m.content for m in recent if m.role == "tool"][-window:]
    errors = [_NUMBER.sub("#", r) if r.startswith("Error:") else "" for r in results]
    failing = _run_length(errors) if errors and errors[-1] else 0
    if failing >= repeat:
        return Loop(
            "repeated error",
            f"the same error {failing} times: {results[-1][:120]}",
            failing - repeat,
        )
    quiet = 0
    for m in reversed(said):
        if m.tool_calls:
            break
        quiet += 1
    if quiet >= monologue:
        return Loop("monologue", f"{quiet} answers in a row without an action", quiet - monologue)
    if not said or not said[-1].content.strip():
        return None
    # a thought repeated with other calls is progress: compare those with the same calls
    thoughts = [m.content for m, keys in zip(said, acts, strict=True) if keys == acts[-1]]
    thoughts = [t for t in thoughts if t.strip()][-window:]
    if len(thoughts) >= 2:
        newest = thoughts[-1]
        if embed is not None:
            vector = embed(newest)
            close = sum(_cosine(vector, embed(t)) >= similarity for t in thoughts[:-1])
        else:
            close = sum(_jaccard(newest, t) >= similarity for t in thoughts[:-1])
        if close + 1 >= repeat:
            return Loop(
                "near-duplicate thoughts",
                f"the same thought {close + 1} times: {newest[:120]!r}",
                close + 1 - repeat,
            )
    return None


WARNING = (
    "[loop monitor] You seem to be repeating yourself ({detail}). Check what the last "
    "results said, and do something different."
)
NUDGE = (
    "[loop monitor] You are stuck in a loop ({detail}). Stop and re-plan: list what you "
    "know, what failed, and take a different approach, or give your best final answer now."
)


class LoopGuard(Guard):
    """Watch for loops before each model call; warn, nudge, then stop.

    ``identities``: per tool, a function of a call's arguments giving what makes two
    calls the same (a tool may also declare ``identity_key``). ``embed``: text to a
    vector, for near-duplicate thoughts (the memory layer's embedder, say).
    ``on_stuck``: ``"stop"`` fails the run; ``"pause"`` suspends it until a person sends
    the signal ``resume_signal`` (``autonomic runs signal RUN unstick``), after which the
    model gets another warning and nudge before the loop pauses it again.
    ``nudge_temperature``: the nudged call is made at least this hot (the model's own
    temperature may be what keeps it in the rut); ``None`` leaves the temperature alone.
    """

    name = "loops"
    replays = True

    def __init__(
        self,
        *,
        repeat: int = 3,
        window: int = 12,
        similarity: float = 0.9,
        monologue: int = 4,
        identities: Mapping[str, Identity] | None = None,
        embed: Embedder | None = None,
        on_stuck: Literal["stop", "pause"] = "stop",
        resume_signal: str = "unstick",
        nudge_temperature: float | None = 1.0,
    ) -> None:
        if on_stuck not in ("stop", "pause"):
            raise ValueError(f"on_stuck must be 'stop' or 'pause', got {on_stuck!r}")
        if nudge_temperature is not None and not 0 <= nudge_temperature <= 2:
            raise ValueError(f"nudge_temperature must be in [0, 2], got {nudge_temperature!r}")
        self.on_stuck, self.resume_signal = on_stuck, resume_signal
        self.nudge_temperature = nudge_temperature
        if repeat < 2 or window < repeat or monologue < 2 or not 0 < similarity <= 1:
            raise ValueError(
                "LoopGuard needs repeat >= 2, window >= repeat, monologue >= 2 and "
                "0 < similarity <= 1"
            )
        self.repeat, self.window, self.similarity = repeat, window, similarity
        self.monologue, self.identities, self.embed = monologue, dict(identities or {}), embed
        self._memos: collections.OrderedDict[str, Memo] = collections.OrderedDict()

    def _memo(self, run_id: str) -> Memo:
        """The identities of a run's calls seen so far (a few hundred runs are kept)."""
        memo = self._memos.get(run_id)
        if memo is None or len(memo) > 16 * self.window:
            memo = self._memos[run_id] = {}
            while len(self._memos) > 256:
                self._memos.popitem(last=False)
        self._memos.move_to_end(run_id)
        return memo

    def check(self, state: RunState, step: Step) -> Verdict:
        if not isinstance(step, ModelCall) or step.request.purpose != "act":
            return ALLOW
        loop = detect_loop(
            state.messages,
            repeat=self.repeat,
            window=self.window,
            similarity=self.similarity,
            monologue=self.monologue,
            identities=self.identities,
            embed=self.embed,
            memo=self._memo(state.run_id),
        )
        if loop is None:
            return ALLOW
        reason = f"{loop.kind}: {loop.detail}"
        # each time a person resumed a paused run, the loop has to grow as much again
        level = loop.excess - 3 * len(state.signals.get(self.resume_signal, ()))
        if level < 0:
            return ALLOW
        if level >= 2 and self.on_stuck == "pause":
            why = f"paused: {reason}; send the signal {self.resume_signal!r} to go on"
            return Rewrite(Await(Signal(self.resume_signal), reason=why), reason=why)
        if level >= 2:
            return Deny(f"stopped: {reason}")
        text = (WARNING if level == 0 else NUDGE).format(detail=loop.detail)
        request = step.request
        note = Message(role="user", content=text)
        rewritten = msgspec.structs.replace(request, messages=(*request.messages, note))
        if level == 0:
            return Rewrite(ModelCall(rewritten), reason=f"warned: {reason}")
        said = f"nudged to re-plan: {reason}"
        hotter = self.nudge_temperature
        if hotter is not None and (request.temperature or 0.0) < hotter:
            rewritten = msgspec.structs.replace(rewritten, temperature=hotter)
            said += f" (at temperature {hotter:g})"
        return Rewrite(ModelCall(rewritten), reason=said)
