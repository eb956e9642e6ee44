"""Budgets that degrade gracefully: reserve before every model call, warn, wrap up, wait.

Before each model call the guard reserves what the call may cost at most (the prompt's
tokens, counted by ``tokenizer`` or conservatively estimated, plus ``max_tokens`` of
output, priced at the model's price or the price table's highest) and lets it through
only if that reservation, and a second one kept back for a wrap-up turn, fit in what is
left. Past ``warn_at`` of any limit the model is told what is left. When the next call no
longer fits, the run gets one wrap-up turn with its tools disabled, then it suspends
(``budget: ...``) with all its work in the log; ``Runtime.topup`` raises the limits and
the run goes on where it stopped.

What was spent is a fold over the run's events (the ``BudgetLedger`` slot), so it is
the same after a crash: a call the process died in counts as fully spent. A child run
is given a share of its parent's remainder when it is spawned (recorded on
``ChildSpawned`` and the child's ``RunStarted``), which the parent holds as spent until
the child ends and reports what it really spent: a tree of runs never spends more than
its root was given.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from autonomic.errors import ConfigError
from autonomic.events import (
    BudgetReserved,
    BudgetWarned,
    ChildCompleted,
    ChildSpawned,
    Event,
    GuardTripped,
    ModelCalled,
    ModelResponded,
    Resumed,
    RunStarted,
    SignalReceived,
    Suspended,
)
from autonomic.guards.base import (
    ALLOW,
    GUARD_PURPOSE,
    CallVerdict,
    Deny,
    Guard,
    Rewrite,
    Verdict,
)
from autonomic.messages import Message, ModelRequest, ToolCall, Usage
from autonomic.models.pricing import Price, default_prices
from autonomic.state import RunState, folds, register_slot
from autonomic.steps import Await, Fail, ModelCall, Record, Signal, Step

__all__ = [
    "TOPUP_SIGNAL",
    "Budget",
    "BudgetLedger",
    "budget_of",
    "carve",
    "conservative_tokens",
    "ledger_spent",
    "topup_data",
    "with_inherited_budget",
]

TOPUP_SIGNAL = "autonomic.budget.topup"
"""The signal that raises a run's budget (its data: dimension -> amount added)."""

DIMENSIONS = ("tokens", "cost_usd", "wall_s", "model_calls", "tool_calls")
CARVED = ("tokens", "cost_usd")
"""The dimensions a child's budget is carved out of its parent's: what money buys."""

_SUSPEND_PREFIX = "budget: "


def conservative_tokens(text: str) -> int:
    """An upper-bound guess of a text's tokens when no tokenizer is known: three
    characters per token, rounded up (common tokenizers average about four)."""
    return -(-len(text) // 3)


@register_slot
class BudgetLedger(msgspec.Struct, gc=False, omit_defaults=True):
    """What a run has spent and been given, folded from its events."""

    model: str = ""
    cost_usd: float = 0.0
    tokens: int = 0
    reserved_cost: float = 0.0
    reserved_tokens: int = 0
    held: dict[str, list[float]] = msgspec.field(default_factory=dict)
    """child run id -> [cost_usd, tokens] given to it and not yet returned."""
    children_cost: float = 0.0
    children_tokens: float = 0.0
    inherited: dict[str, float] | None = None
    topups: dict[str, float] = msgspec.field(default_factory=dict)
    warned: bool = False
    wrapped: bool = False
    """The wrap-up turn was made since the last top-up: the next step waits for one."""


def _ledger(state: RunState) -> BudgetLedger:
    return state.slot(BudgetLedger)


def ledger_spent(state: RunState) -> dict[str, float]:
    """What the run counts as spent of each carved dimension: its own calls (in flight
    included), what its children were given and have not returned, and what ended
    children spent."""
    led = _ledger(state)
    held_cost = sum(h[0] for h in led.held.values())
    held_tokens = sum(h[1] for h in led.held.values())
    return {
        "cost_usd": led.cost_usd + led.reserved_cost + led.children_cost + held_cost,
        "tokens": led.tokens + led.reserved_tokens + led.children_tokens + held_tokens,
    }


def _price(model: str) -> Price:
    return default_prices.lookup(model) or default_prices.highest()


@folds(RunStarted)
def _started(s: RunState, e: RunStarted, ts: float) -> None:
    led = _ledger(s)
    led.model = e.model
    led.inherited = dict(e.budget) if e.budget else None


@folds(ModelCalled)
def _called(s: RunState, e: ModelCalled, ts: float) -> None:
    # the acting model prices the next reservation; a guard's (a critic's) is its own
    if e.model and not e.purpose.startswith(GUARD_PURPOSE):
        _ledger(s).model = e.model


@folds(BudgetReserved)
def _reserved(s: RunState, e: BudgetReserved, ts: float) -> None:
    led = _ledger(s)
    led.reserved_cost, led.reserved_tokens = e.cost_usd, e.tokens
    if e.wrap_up:
        led.wrapped = True


@folds(ModelResponded)
def _responded(s: RunState, e: ModelResponded, ts: float) -> None:
    led = _ledger(s)
    # a response that could not be priced is counted at the highest known price
    cost = e.cost if e.cost is not None else default_prices.highest().cost(e.usage)
    led.cost_usd += cost
    led.tokens += e.usage.total_tokens
    led.reserved_cost, led.reserved_tokens = 0.0, 0


@folds(Resumed)
def _resumed(s: RunState, e: Resumed, ts: float) -> None:
    led = _ledger(s)
    # a call in flight when its process died may have been charged: count all of it
    led.cost_usd += led.reserved_cost
    led.tokens += led.reserved_tokens
    led.reserved_cost, led.reserved_tokens = 0.0, 0


@folds(ChildSpawned)
def _spawned(s: RunState, e: ChildSpawned, ts: float) -> None:
    if e.budget:
        _ledger(s).held[e.child_run_id] = [
            e.budget.get("cost_usd", 0.0),
            e.budget.get("tokens", 0.0),
        ]


@folds(ChildCompleted)
def _child_ended(s: RunState, e: ChildCompleted, ts: float) -> None:
    led = _ledger(s)
    led.held.pop(e.child_run_id, None)
    spent = e.spent or {}
    led.children_cost += spent.get("cost_usd", e.cost)
    led.children_tokens += spent.get("tokens", e.usage.total_tokens)


@folds(SignalReceived)
def _topped_up(s: RunState, e: SignalReceived, ts: float) -> None:
    if e.name != TOPUP_SIGNAL or not isinstance(e.data, dict):
        return
    led = _ledger(s)
    for key, value in e.data.items():
        if key in DIMENSIONS and isinstance(value, int | float) and value > 0:
            led.topups[key] = led.topups.get(key, 0.0) + float(value)
    if led.wrapped:
        s.messages.append(
            Message(
                role="user",
                content="The budget was raised and your tools are available again: "
                "continue the task from where you stopped.",
            )
        )
    led.wrapped = led.warned = False


@folds(BudgetWarned)
def _warned(s: RunState, e: BudgetWarned, ts: float) -> None:
    _ledger(s).warned = True


def topup_data(**amounts: float | None) -> dict[str, float]:
    """The checked data of a top-up signal; ConfigError for an unknown or bad amount."""
    data: dict[str, float] = {}
    for key, value in amounts.items():
        if value is None:
            continue
        if key not in DIMENSIONS:
            raise ConfigError(f"cannot top up {key!r}: budgets have {', '.join(DIMENSIONS)}")
        if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise ConfigError(f"a top-up of {key} must be a positive number, not {value!r}")
        data[key] = float(value)
    if not data:
        raise ConfigError("say what to add, e.g. cost_usd=0.50 or tokens=10000")
    return data


def waits_for_budget(reason: str) -> bool:
    """Is a run waiting for this ``reason`` waiting for its budget to be raised?"""
    return reason.startswith(_SUSPEND_PREFIX)


@dataclass(frozen=True)
class _Reservation:
    seq: int
    tokens: int
    cost_usd: float
    wrap_up: bool
    warning: str | None


TokenCounter = Callable[[str], int]


class _PromptCounter:
    """Counts a prompt's tokens, remembering each run's last prompt: the next one repeats
    it and adds a few messages, so only those are counted (a run's reservations would
    otherwise cost time quadratic in its length)."""

    _RUNS = 256

    def __init__(self) -> None:
        self._last: OrderedDict[str, tuple[tuple[Message, ...], list[int]]] = OrderedDict()
        self._tools: tuple[tuple[Any, ...], int] = ((), 0)

    def prompt(self, run_id: str, request: ModelRequest, count: TokenCounter) -> int:
        messages = request.messages
        known, sums = self._last.pop(run_id, ((), [0]))
        same = len(known)
        # the usual case, the last prompt plus new messages, is one comparison done in C
        # (element by element, identical objects first)
        if messages[:same] != known:
            same = 0
            for new, old in zip(messages, known, strict=False):
                if new is not old and new != old:
                    break
                same += 1
        sums = sums[: same + 1]
        for message in messages[same:]:
            tokens = count(message.content) + 4
            tokens += sum(count(msgspec.json.encode(c).decode()) for c in message.tool_calls)
            sums.append(sums[-1] + tokens)
        self._last[run_id] = (messages, sums)
        if len(self._last) > self._RUNS:
            self._last.popitem(last=False)
        specs, tools = self._tools
        if request.tools is not specs and request.tools != specs:
            tools = sum(count(msgspec.json.encode(t).decode()) for t in request.tools)
            self._tools = (request.tools, tools)
        return sums[-1] + tools


@dataclass(frozen=True)
class Budget(Guard):
    """Limits on one run (and, carved out of it, its children). ``None`` is no limit.

    ``max_tokens``: the most output tokens one response can have (your model's own
    ``max_tokens``); it is reserved before every call. ``tokenizer`` counts a prompt's
    tokens when you know the model's tokenizer; otherwise a conservative estimate is
    used. ``child_share``: the fraction of what is left that one ``Spawn`` hands to its
    children (split evenly between them).
    """

    tokens: int | None = None
    cost_usd: float | None = None
    wall_s: float | None = None
    model_calls: int | None = None
    tool_calls: int | None = None
    warn_at: float = 0.8
    max_tokens: int = 4096
    child_share: float = 0.5
    tokenizer: TokenCounter | None = field(default=None, compare=False)
    name: str = "budget"
    replays = True
    _reservations: dict[str, _Reservation] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _prices: dict[str, Price] = field(default_factory=dict, init=False, repr=False, compare=False)
    _own: dict[str, float] = field(default_factory=dict, init=False, repr=False, compare=False)
    """This guard's limits, as floats: a run given nothing else has just these."""
    _counter: _PromptCounter = field(
        default_factory=lambda: _PromptCounter(), init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        for key in DIMENSIONS:
            value = getattr(self, key)
            if value is not None and (
                not isinstance(value, int | float) or not math.isfinite(value) or value <= 0
            ):
                raise ConfigError(f"Budget({key}=...) must be a positive number or None")
        if not 0 < self.warn_at <= 1 or not 0 < self.child_share <= 1:
            raise ConfigError("Budget warn_at and child_share must be fractions in (0, 1]")
        if self.max_tokens < 1:
            raise ConfigError("Budget max_tokens must be at least 1")
        own = {k: float(getattr(self, k)) for k in DIMENSIONS if getattr(self, k) is not None}
        object.__setattr__(self, "_own", own)

    def digest_spec(self) -> dict[str, Any]:
        """What the agent's digest records of this budget."""
        spec: dict[str, Any] = {k: getattr(self, k) for k in DIMENSIONS}
        spec.update(warn_at=self.warn_at, max_tokens=self.max_tokens, child_share=self.child_share)
        return spec

    # -- the limits ------------------------------------------------------------------

    def limits(self, state: RunState) -> dict[str, float]:
        """The run's limit on each dimension it has one on: this guard's, capped by what
        its parent gave it, plus top-ups."""
        led = _ledger(state)
        if not led.inherited and not led.topups:  # the usual case, asked on every step
            return dict(self._own)
        out: dict[str, float] = {}
        for key in DIMENSIONS:
            own = getattr(self, key)
            given = (led.inherited or {}).get(key)
            base = given if own is None else own if given is None else min(own, given)
            if base is not None:
                out[key] = base + led.topups.get(key, 0.0)
        return out

    def used(self, state: RunState) -> dict[str, float]:
        """What the run has used of each dimension (wall time as of its last event, so
        that a decision can be replayed)."""
        spent = ledger_spent(state)
        return {
            **spent,
            "wall_s": state.active_seconds(state.last_ts),
            "model_calls": float(state.model_calls),
            "tool_calls": float(state.actions_requested),
        }

    def remaining(self, state: RunState) -> dict[str, float]:
        used = self.used(state)
        return {k: limit - used[k] for k, limit in self.limits(state).items()}

    @staticmethod
    def _short(
        used: dict[str, float], limits: dict[str, float], need: dict[str, float]
    ) -> str | None:
        """Why ``need`` (more of some dimensions) does not fit; None when it does."""
        for key, limit in limits.items():
            if used[key] + need.get(key, 0.0) > limit:
                spent = _amount(key, used[key])
                return f"{_label(key)} limit of {_amount(key, limit)} reached ({spent} used)"
        return None

    def _warning(
        self, used: dict[str, float], limits: dict[str, float], need: dict[str, float]
    ) -> str | None:
        """What to tell the model when, with ``need`` reserved, a limit is ``warn_at``
        used; None before that."""
        parts, worst = [], 0.0
        for key, limit in limits.items():
            fraction = (used[key] + need.get(key, 0.0)) / limit
            if fraction >= self.warn_at:
                worst = max(worst, fraction)
                left = _amount(key, max(0.0, limit - used[key]))
                parts.append(f"{left} of {_amount(key, limit)} {_label(key)}")
        if not parts:
            return None
        return (
            f"Budget: {min(100, round(worst * 100))}% used; left: {', '.join(parts)}. "
            "Plan to finish soon."
        )

    # -- the hooks -------------------------------------------------------------------

    def check(self, state: RunState, step: Step) -> Verdict:
        led = _ledger(state)
        if isinstance(step, Await | Fail | Record):
            return ALLOW
        if not led.wrapped and not isinstance(step, ModelCall):
            return ALLOW
        used, limits = self.used(state), self.limits(state)
        if led.wrapped:
            least = {
                "model_calls": 1.0,
                "tokens": float(self.max_tokens),
                "cost_usd": self._price(led.model).cost(Usage(0, self.max_tokens)),
            }
            why = self._short(used, limits, least) or "the wrap-up turn was made"
            return Rewrite(self._wait(state, why))
        if not isinstance(step, ModelCall):
            return ALLOW
        request = step.request
        tokens, cost = self._reserve(request, led.model, state.run_id)
        need = {"tokens": 2.0 * tokens, "cost_usd": 2 * cost, "model_calls": 2.0}
        short = self._short(used, limits, need)
        if short is None:
            warning = self._warning(used, limits, need)
            held = _Reservation(state.seq, tokens, cost, False, warning)
            self._reservations[state.run_id] = held
            if warning is None:
                return ALLOW
            return Rewrite(ModelCall(_noted(request, warning, request.tools)))
        note = (
            f"Budget: {short}. This is your last turn and your tools are disabled: reply "
            "now with your best answer, saying what you found and what is left to do."
        )
        wrap = _noted(request, note, ())
        tokens, cost = self._reserve(wrap, led.model, state.run_id)
        # time cannot be reserved: a run out of wall time still gets its wrap-up turn
        timeless = {k: v for k, v in limits.items() if k != "wall_s"}
        wrap_need = {"tokens": float(tokens), "cost_usd": cost, "model_calls": 1.0}
        if self._short(used, timeless, wrap_need) is None:
            self._reservations[state.run_id] = _Reservation(state.seq, tokens, cost, True, short)
            return Rewrite(ModelCall(wrap))
        return Rewrite(self._wait(state, short))

    def admit(self, state: RunState, request: ModelRequest, model: str) -> str | None:
        """Reserve a guard's own call of ``model`` (a critic's) before it is made: None
        when it fits, and the reservation is recorded with the call; else why not (the
        run gets no wrap-up turn for it: the guard's verdict is a refusal)."""
        counted = self._counter.prompt(
            f"{state.run_id}{GUARD_PURPOSE}", request, self.tokenizer or conservative_tokens
        )
        tokens = counted + self.max_tokens
        cost = self._price(model).cost(Usage(counted, self.max_tokens))
        limits = {k: v for k, v in self.limits(state).items() if k != "wall_s"}
        need = {"tokens": float(tokens), "cost_usd": cost, "model_calls": 1.0}
        short = self._short(self.used(state), limits, need)
        if short is None:
            self._reservations[state.run_id] = _Reservation(state.seq, tokens, cost, False, None)
        return short

    def check_call(self, state: RunState, call: ToolCall) -> CallVerdict:
        limit = self.limits(state).get("tool_calls")
        if limit is not None and state.actions_requested + 1 > limit:
            return Deny(f"tool-call limit of {limit:g} reached")
        return ALLOW

    def observe(self, state: RunState, event: Event) -> Sequence[Event]:
        if isinstance(event, ModelCalled):
            held = self._reservations.pop(state.run_id, None)
            if held is None or held.seq != state.seq - 1:
                return ()
            reserved = BudgetReserved(held.tokens, round(held.cost_usd, 9), held.wrap_up)
            extras: list[Event] = [reserved]
            if held.wrap_up:
                detail = f"{held.warning}: wrap-up turn, tools disabled"
                extras.append(GuardTripped(self.name, detail))
            elif held.warning is not None and not _ledger(state).warned:
                used, limits = self.used(state), self.limits(state)
                most = max((used[k] / v for k, v in limits.items()), default=0.0)
                extras.append(BudgetWarned(held.warning, round(most, 4)))
            return extras
        if isinstance(event, Suspended) and event.reason.startswith(_SUSPEND_PREFIX):
            return [GuardTripped(self.name, event.reason)]
        return ()

    # -- helpers ---------------------------------------------------------------------

    def _reserve(self, request: ModelRequest, model: str, run_id: str = "") -> tuple[int, float]:
        """(tokens, USD) the call may cost at most."""
        prompt = self._counter.prompt(run_id, request, self.tokenizer or conservative_tokens)
        price = self._price(model)
        return prompt + self.max_tokens, price.cost(Usage(prompt, self.max_tokens))

    def _price(self, model: str) -> Price:
        """The model's price (the table's highest when unknown), read once per model."""
        price = self._prices.get(model)
        if price is None:
            price = self._prices[model] = _price(model)
        return price

    def _wait(self, state: RunState, why: str) -> Await:
        return Await(
            Signal(TOPUP_SIGNAL),
            reason=f"{_SUSPEND_PREFIX}{why}; raise it with: autonomic runs topup "
            f"{state.run_id} --cost USD (or --tokens N)",
        )

    def carve(self, state: RunState, children: int) -> dict[str, float] | None:
        """What each of ``children`` new child runs is given (None: no carved limit)."""
        remaining = self.remaining(state)
        share = {
            k: max(0.0, remaining[k]) * self.child_share / max(1, children)
            for k in CARVED
            if k in remaining
        }
        if "tokens" in share:
            share["tokens"] = float(math.floor(share["tokens"]))
        if not share:
            return None
        # a child whose agent declares no budget reserves its calls as this one does
        return {**share, "max_tokens": float(self.max_tokens)}


def _noted(request: ModelRequest, note: str, tools: tuple[Any, ...]) -> ModelRequest:
    messages = (*request.messages, Message(role="user", content=note))
    return msgspec.structs.replace(request, messages=messages, tools=tools)


def _label(key: str) -> str:
    return {
        "tokens": "token",
        "cost_usd": "cost",
        "wall_s": "wall-time",
        "model_calls": "model-call",
        "tool_calls": "tool-call",
    }[key]


def _amount(key: str, value: float) -> str:
    if key == "cost_usd":
        return f"${value:.4f}"
    if key == "wall_s":
        return f"{value:.1f}s"
    return f"{value:,.0f}"


def budget_of(guards: Sequence[Guard]) -> Budget | None:
    """The first Budget among ``guards``."""
    return next((g for g in guards if isinstance(g, Budget)), None)


def carve(state: RunState, guards: Sequence[Guard], children: int) -> dict[str, float] | None:
    """What each new child run of ``state``'s run is given from its budget: from the
    agent's Budget, or (an agent without one in a budgeted tree) from what it was given."""
    budget = budget_of(with_inherited_budget(guards, state))
    return None if budget is None else budget.carve(state, children)


def with_inherited_budget(guards: Sequence[Guard], state: RunState) -> tuple[Guard, ...]:
    """``guards``, with a Budget added when the run was given a budget by its parent and
    its agent declares none: a child can never spend outside its share."""
    inherited = _ledger(state).inherited
    if inherited is None or budget_of(guards) is not None:
        return tuple(guards)
    return (*guards, Budget(max_tokens=int(inherited.get("max_tokens", 4096))))
