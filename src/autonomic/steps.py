"""Steps: what a strategy asks for next. Strategies return them; the runtime performs them.

A step is plain data. ``Await`` suspends the run durably until one of its conditions
arrives; ``Spawn`` starts child runs; ``Record`` lets a strategy put its own events (a
plan, a note) in the log without doing any I/O itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from autonomic.events import Event
from autonomic.messages import ModelRequest, ToolCall

__all__ = [
    "Approval",
    "Await",
    "ChildSpec",
    "Children",
    "Fail",
    "Finish",
    "ModelCall",
    "Record",
    "Signal",
    "Spawn",
    "Step",
    "Timer",
    "ToolCalls",
    "WaitFor",
]


@dataclass(frozen=True, slots=True)
class ModelCall:
    request: ModelRequest


@dataclass(frozen=True, slots=True)
class ToolCalls:
    """Run these calls (concurrently when there are several); ``rationale`` says why."""

    calls: tuple[ToolCall, ...]
    rationale: str = ""


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """A child run: an agent (by name, as the runtime knows it) and its goal.

    ``priority`` orders it among ready runs; None: its parent's, so that a tree is not
    starved behind runs of a lower priority while it waits for its own children."""

    agent: str
    goal: str
    priority: int | None = None


@dataclass(frozen=True, slots=True)
class Spawn:
    """Start these child runs; their ids are ``{run_id}.{n}``, numbered in spawn order."""

    children: tuple[ChildSpec, ...]


@dataclass(frozen=True, slots=True)
class Approval:
    """A person's decision on the approval request with this digest."""

    digest: str


@dataclass(frozen=True, slots=True)
class Children:
    """Child runs ending: all of them (``mode="all"``) or the first (``"any"``)."""

    ids: tuple[str, ...]
    mode: Literal["all", "any"] = "all"


@dataclass(frozen=True, slots=True)
class Timer:
    """A moment: ``at`` (UNIX time) or ``after_s`` seconds after the run suspends."""

    at: float | None = None
    after_s: float | None = None


@dataclass(frozen=True, slots=True)
class Signal:
    """A signal with this name, sent to the run after it suspended."""

    name: str


WaitFor = Approval | Children | Timer | Signal


@dataclass(frozen=True, slots=True, init=False)
class Await:
    """Suspend until any one of ``conditions`` is met:
    ``Await(Signal("go"), Timer(after_s=60), reason="the go-ahead, or a minute")``."""

    conditions: tuple[WaitFor, ...]
    reason: str

    def __init__(self, *conditions: WaitFor, reason: str = "") -> None:
        object.__setattr__(self, "conditions", conditions)
        object.__setattr__(self, "reason", reason)


@dataclass(frozen=True, slots=True)
class Record:
    """Append these events (the strategy's own types) to the log."""

    events: tuple[Event, ...]


@dataclass(frozen=True, slots=True)
class Finish:
    answer: str


@dataclass(frozen=True, slots=True)
class Fail:
    reason: str


Step = ModelCall | ToolCalls | Spawn | Await | Record | Finish | Fail
