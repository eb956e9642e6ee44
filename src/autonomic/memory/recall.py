"""``recall_events``: the tool that brings back what compaction took out of the prompt.

Compaction only changes what the model is shown; the events stay in the log. This tool
reads them back verbatim from the store, by seq (one event or a range), or searches
their text and returns each match's seq with the passage around it (small enough to stay
whole in the prompt), so no detail is ever lost to a summary.
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
_AROUND = 160


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


def _passages(stored: StoredEvent, words: set[str]) -> str:
    """The event's seq and type, and the text around the first match of each query word."""
    text = _text(stored)
    first: dict[str, int] = {}
    for match in _WORD.finditer(text):
        word = match.group().lower()
        if word in words and word not in first:
            first[word] = match.start()
    spans: list[tuple[int, int]] = []
    for at in sorted(first.values()):
        start, end = max(0, at - _AROUND), at + _AROUND
        if spans and start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    shown = " … ".join(text[a:b] for a, b in spans[:3])
    return f"seq {stored.seq} ({type(stored.event).__name__}): …{shown}…"


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
            query: words to search for in the run's events, when no seq is given; each
                match comes with its seq and the text around it.
            limit: how many events a search returns at most.
        """
        if seq is None and not query.strip():
            return "Error: give a seq (an event number) or a query to search for"
        if seq is not None:
            end = seq if last_seq is None else max(seq, last_seq)
            found = await read_events(store, context.run_id, max(0, seq - 1), end - seq + 1)
            text = "\n".join(_text(e) for e in found)
        else:
            found = search_events(
                await read_events(store, context.run_id), query, max(1, min(limit, 50))
            )
            words = {w.lower() for w in _WORD.findall(query)}
            text = "\n".join(_passages(e, words) for e in found)
        if not found:
            return "No such events."
        if len(text) > _MAX_CHARS:
            text = text[:_MAX_CHARS] + "\n[… more: ask for a narrower range]"
        return text

    return recall_events
