"""Snapshots of a run's state, written so their cost per step stays flat as a run grows.

The transcript is cut into fixed chunks of messages; each full chunk is stored once as a
content-addressed blob and later snapshots refer to it by digest. A snapshot therefore
writes the small scalar state, the open tail of the transcript and any newly filled chunk,
never the whole history again.

A snapshot is only a cache: one taken with another fold version, or one that cannot be
read back, is ignored and the run is folded from its events instead.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable

import msgspec

from autonomic.events import blob_digest
from autonomic.messages import Message
from autonomic.state import RunState, decode_slots, fold_version

__all__ = ["SnapshotWriter", "decode_snapshot"]

log = logging.getLogger("autonomic.store")

CHUNK = 64


class _Snapshot(msgspec.Struct):
    state: RunState
    chunks: list[str]
    tail: list[Message]
    fold: str = ""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(_Snapshot)
_messages_decoder = msgspec.json.Decoder(list[Message])


class SnapshotWriter:
    """Encodes snapshots of one run, remembering which chunks it has already stored."""

    def __init__(self) -> None:
        self._chunks: dict[int, tuple[Message, Message, str]] = {}
        self._fold = fold_version()

    def encode(self, state: RunState) -> tuple[bytes, dict[str, bytes]]:
        messages = state.messages
        full = len(messages) // CHUNK
        digests: list[str] = []
        blobs: dict[str, bytes] = {}
        for i in range(full):
            first, last = messages[i * CHUNK], messages[i * CHUNK + CHUNK - 1]
            known = self._chunks.get(i)
            if known and known[0] is first and known[1] is last:
                digests.append(known[2])
                continue
            data = _encoder.encode(messages[i * CHUNK : (i + 1) * CHUNK])
            digest = blob_digest(data)
            blobs[digest] = data
            self._chunks[i] = (first, last, digest)
            digests.append(digest)
        state.messages = []
        try:
            snapshot = _Snapshot(state, digests, messages[full * CHUNK :], self._fold)
            body = _encoder.encode(snapshot)
        finally:
            state.messages = messages
        return body, blobs


async def decode_snapshot(
    run_id: str,
    seq: int,
    body: bytes,
    get_blobs: Callable[[Iterable[str]], Awaitable[dict[str, bytes]]],
) -> RunState | None:
    """The state a snapshot taken at event ``seq`` holds, or None (with a warning) when it
    cannot be used."""
    try:
        snapshot = _decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        log.warning("run %s: snapshot unreadable (%s); folding its events instead", run_id, e)
        return None
    if snapshot.fold != fold_version():
        log.warning(
            "run %s: snapshot folded by another version of the reducers; folding its events "
            "instead",
            run_id,
        )
        return None
    if snapshot.state.seq != seq:
        log.warning(
            "run %s: snapshot stored as event %d holds event %d; folding its events instead",
            run_id,
            seq,
            snapshot.state.seq,
        )
        return None
    blobs = await get_blobs(snapshot.chunks) if snapshot.chunks else {}
    messages: list[Message] = []
    try:
        for digest in snapshot.chunks:
            messages.extend(_messages_decoder.decode(blobs[digest]))
        snapshot.state.ext = decode_slots(snapshot.state.ext)
    except (KeyError, msgspec.DecodeError, msgspec.ValidationError) as e:
        what = f"chunk {e.args[0][:12]} is missing" if isinstance(e, KeyError) else str(e)
        log.warning("run %s: snapshot damaged (%s); folding its events instead", run_id, what)
        return None
    messages.extend(snapshot.tail)
    snapshot.state.messages = messages
    if snapshot.state.run_id != run_id:
        log.warning(
            "run %s: snapshot belongs to run %s; ignoring it", run_id, snapshot.state.run_id
        )
        return None
    return snapshot.state
