"""Steps: what a strategy asks for next. Strategies return them; the runtime performs them."""

from __future__ import annotations

from dataclasses import dataclass

from autonomic.models.base import ModelRequest, ToolCall

__all__ = ["Fail", "Finish", "ModelCall", "Step", "ToolCalls"]


@dataclass(frozen=True, slots=True)
class ModelCall:
    request: ModelRequest


@dataclass(frozen=True, slots=True)
class ToolCalls:
    """Run these calls (concurrently when there are several); ``rationale`` says why."""

    calls: tuple[ToolCall, ...]
    rationale: str = ""


@dataclass(frozen=True, slots=True)
class Finish:
    answer: str


@dataclass(frozen=True, slots=True)
class Fail:
    reason: str


Step = ModelCall | ToolCalls | Finish | Fail
