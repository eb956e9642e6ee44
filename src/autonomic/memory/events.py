"""The events memory's tools record in a run's log (``MemoryCompacted`` is in ``context``).

They are registered when ``autonomic`` is imported, so any process can read and trace a
log that holds them, whether or not it has the ``memory`` extra.
"""

from __future__ import annotations

from typing import ClassVar

from autonomic.events import Event, register_event
from autonomic.tools.base import allow_tool_events
from autonomic.views import short

__all__ = ["FactAsserted", "FactRetracted", "Recalled", "Remembered"]


@register_event
class Remembered(Event, frozen=True, tag=True):
    action_id: str
    namespace: str
    memory_id: int
    text: str
    merged: bool = False
    LARGE_FIELDS: ClassVar[tuple[str, ...]] = ("text",)

    def trace_line(self) -> str:
        how = "merged into" if self.merged else "stored as"
        where = f"#{self.memory_id} in {self.namespace}"
        return f"  │  ✎ remembered ({how} {where}): {short(self.text, 70)}"


@register_event
class Recalled(Event, frozen=True, tag=True):
    action_id: str
    query: str
    namespaces: tuple[str, ...]
    memory_ids: tuple[int, ...] = ()
    as_of: float | None = None

    def trace_line(self) -> str:
        found = ", ".join(f"#{m}" for m in self.memory_ids) or "nothing"
        return f"  │  ⟲ recalled {found} for {short(self.query, 60)!r}"


@register_event
class FactAsserted(Event, frozen=True, tag=True):
    action_id: str
    fact_id: int
    subject: str
    relation: str
    object: str
    superseded: tuple[int, ...] = ()

    def trace_line(self) -> str:
        old = f" (supersedes {', '.join(map(str, self.superseded))})" if self.superseded else ""
        return f"  │  ◇ fact #{self.fact_id}: {self.subject} {self.relation} {self.object}{old}"


@register_event
class FactRetracted(Event, frozen=True, tag=True):
    action_id: str
    fact_id: int

    def trace_line(self) -> str:
        return f"  │  ◇ fact #{self.fact_id} retracted"


allow_tool_events(Remembered, Recalled, FactAsserted, FactRetracted)
