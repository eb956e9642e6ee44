"""``recall_events``: the tool that brings back what compaction took out of the prompt.

Compaction only changes what the model is shown; the events stay in the log. This tool
reads them back verbatim from the store, by seq (one event or a range) or by a search
of their text, so no detail is ever lost to a summary.
"""

from __future__ import annotations

import json
import re

from autonomic.events import event_to_dict
from autonomic.loader import StoredEvent, read_events
from autonomic.store.base import Store
from autonomic.tools.base import FunctionTool, ToolContext, tool

__all__ = ["recall_tool", "search_events"]

_WORD = re.compile(r"\w+")
_MAX_CHARS = 20_000


def _text(stored: StoredEvent) -> str:
    return json.dumps(
        {"seq": stored.seq, **event_to_dict(stored.event)}, ensure_ascii=False, default=str
    )


def search_events(events: list[StoredEvent], query: str, limit: int) -> list[StoredEvent]:
    """The ``limit`` events sharing the most words with ``query``, best first, then by seq."""
    words = {w.lower() for w in _WORD.findall(query)}
    scored = []
    for stored in events:
        found = {w.lower() for w in _WORD.findall(_text(stored))}
        score = len(words & found)
        if score:
            scored.append((-score, stored.seq, stored))
    scored.sort(key=lambda item: (item[0], item[1]))
    return [stored for _, _, stored in scored[:limit]]


def recall_tool(store: Store) -> FunctionTool:
    """A ``recall_events`` tool reading the calling run's own log from ``store``."""

    @tool(name="recall_events", idempotent=True)
    async def recall_events(
        context: ToolContext,
        seq: int | None = None,
        last_seq: int | None = None,
        query: str = "",
        limit: int = 5,
    ) -> str:
        """Return earlier events of this run verbatim, even those a summary replaced.

        Args:
            seq: the event to return (the number shown in summaries and cut outputs).
            last_seq: with seq, return events seq..last_seq.
            query: words to search for in the run's events, when no seq is given.
            limit: how many events a search returns at most.
        """
        if seq is None and not query.strip():
            return "Error: give a seq (an event number) or a query to search for"
        if seq is not None:
            end = seq if last_seq is None else max(seq, last_seq)
            found = await read_events(store, context.run_id, max(0, seq - 1), end - seq + 1)
        else:
            found = search_events(
                await read_events(store, context.run_id), query, max(1, min(limit, 50))
            )
        if not found:
            return "No such events."
        text = "\n".join(_text(e) for e in found)
        if len(text) > _MAX_CHARS:
            text = text[:_MAX_CHARS] + "\n[… more: ask for a narrower range]"
        return text

    return recall_events
