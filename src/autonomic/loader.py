"""Reading runs back: decode a run's events (blobs included) and fold them into its state.

A snapshot is a cache: when it is missing, stale or damaged the run is folded from its
events. The events are the truth: a gap in them, an event that cannot be decoded, or a
log that does not end where the run's row says it does, is reported as ``StoreCorrupt``
naming the run, never folded silently.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from autonomic.errors import StoreCorrupt
from autonomic.events import Event, EventRecord, blob_refs, decode_event
from autonomic.snapshot import decode_snapshot
from autonomic.state import RunState
from autonomic.store.base import RunInfo, Store

__all__ = ["StoredEvent", "decode_records", "load_state", "read_events"]

_SHORT_LOG = 16
"""A log of this many events at most is folded without looking for a snapshot: it folds
about as fast as one decodes, and a run just submitted is loaded with one read less."""


class StoredEvent(msgspec.Struct, frozen=True, gc=False):
    """An event with its place in the log and the time it was recorded."""

    seq: int
    ts: float
    event: Event


async def decode_records(store: Store, records: Sequence[EventRecord]) -> list[StoredEvent]:
    refs = [digest for record in records for digest in blob_refs(record)]
    blobs = await store.get_blobs(refs) if refs else None
    return [StoredEvent(r.seq, r.ts, decode_event(r, blobs)) for r in records]


async def read_events(
    store: Store, run_id: str, after_seq: int = 0, limit: int | None = None
) -> list[StoredEvent]:
    """Events ``after_seq + 1``, ``after_seq + 2``... of the run (at most ``limit``);
    StoreCorrupt naming the run when one is missing or cannot be decoded."""
    records = await store.read(run_id, after_seq, limit)
    for expected, record in enumerate(records, after_seq + 1):
        if record.seq != expected:
            raise StoreCorrupt(
                f"run {run_id}: its log has event {record.seq} where event {expected} should be"
            )
    try:
        return await decode_records(store, records)
    except StoreCorrupt as e:
        raise StoreCorrupt(f"run {run_id}: {e}") from e


async def load_state(
    store: Store, run_id: str, *, use_snapshot: bool = True, info: RunInfo | None = None
) -> RunState:
    """The run's current state: its latest usable snapshot plus the events after it.

    ``info`` is the run's row when the caller has just read it (a claim returns it).
    """
    info = info or await store.get_run(run_id)
    state: RunState | None = None
    after = 0
    if use_snapshot and info.last_seq > _SHORT_LOG:
        snapshot = await store.latest_snapshot(run_id)
        if snapshot is not None and 0 < snapshot[0] <= info.last_seq:
            state = await decode_snapshot(run_id, snapshot[0], snapshot[1], store.get_blobs)
            after = snapshot[0] if state is not None else 0
    if state is None:
        state = RunState(run_id=run_id)
    for event in await read_events(store, run_id, after):
        state.apply(event.event, event.seq, event.ts)
    if state.seq > info.last_seq:  # it may have moved on since its row was read
        info = await store.get_run(run_id)
    if state.seq != info.last_seq:
        raise StoreCorrupt(
            f"run {run_id}: its row says it has {info.last_seq} events but its log has {state.seq}"
        )
    return state
