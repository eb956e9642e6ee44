"""Snapshots of a run's state, written so their cost per step stays flat as a run grows.

The transcript is cut into fixed chunks of messages; each full chunk is stored once as a
content-addressed blob and later snapshots refer to it by digest. A snapshot therefore
writes the small scalar state, the open tail of the transcript and any newly filled chunk,
never the whole history again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

import msgspec

from autonomic.events import blob_digest
from autonomic.models.base import Message
from autonomic.state import RunState

__all__ = ["SnapshotWriter", "decode_snapshot"]

CHUNK = 64


class _Snapshot(msgspec.Struct):
    state: RunState
    chunks: list[str]
    tail: list[Message]


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(_Snapshot)
_messages_decoder = msgspec.json.Decoder(list[Message])


class SnapshotWriter:
    """Encodes snapshots of one run, remembering which chunks it has already stored."""

    def __init__(self) -> None:
        self._chunks: dict[int, tuple[Message, Message, str]] = {}

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
            body = _encoder.encode(_Snapshot(state, digests, messages[full * CHUNK :]))
        finally:
            state.messages = messages
        return body, blobs


async def decode_snapshot(
    body: bytes, get_blobs: Callable[[Iterable[str]], Awaitable[dict[str, bytes]]]
) -> RunState:
    snapshot = _decoder.decode(body)
    blobs = await get_blobs(snapshot.chunks) if snapshot.chunks else {}
    messages: list[Message] = []
    for digest in snapshot.chunks:
        messages.extend(_messages_decoder.decode(blobs[digest]))
    messages.extend(snapshot.tail)
    snapshot.state.messages = messages
    return snapshot.state
