"""Reading runs back: decode a run's events (blobs included) and fold them into its state."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from autonomic.events import Event, EventRecord, blob_refs, decode_event
from autonomic.snapshot import decode_snapshot
from autonomic.state import RunState
from autonomic.store.base import Store

__all__ = ["StoredEvent", "decode_records", "load_state", "read_events"]


class StoredEvent(msgspec.Struct, frozen=True, gc=False):
    """An event with its place in the log and the time it was recorded."""

    seq: int
    ts: float
    event: Event


async def decode_records(store: Store, records: Sequence[EventRecord]) -> list[StoredEvent]:
    refs = [digest for record in records for digest in blob_refs(record)]
    blobs = await store.get_blobs(refs) if refs else {}
    return [StoredEvent(r.seq, r.ts, decode_event(r, blobs or None)) for r in records]


async def read_events(store: Store, run_id: str, after_seq: int = 0) -> list[StoredEvent]:
    return await decode_records(store, await store.read(run_id, after_seq))


async def load_state(store: Store, run_id: str, *, use_snapshot: bool = True) -> RunState:
    """The run's current state: its latest snapshot plus the events after it."""
    snapshot = await store.latest_snapshot(run_id) if use_snapshot else None
    if snapshot is not None:
        state = await decode_snapshot(snapshot[1], store.get_blobs)
        after = snapshot[0]
    else:
        await store.get_run(run_id)
        state, after = RunState(run_id=run_id), 0
    for stored in await read_events(store, run_id, after):
        state.apply(stored.event, stored.seq, stored.ts)
    return state
