"""Digests of model requests, cheap enough to take on every call of a long run.

A request's digest chains the hashes of its messages; a digester remembers the chain of
the last request it saw, so the next request of the same run (the same messages plus a
few new ones) costs only the new messages, not the whole transcript again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import msgspec

from autonomic.messages import Message, ModelRequest

__all__ = ["RequestDigester", "request_digest"]

_encoder = msgspec.json.Encoder()


class RequestDigester:
    def __init__(self) -> None:
        self._messages: tuple[Message, ...] = ()
        self._chain: list[bytes] = []

    def digest(self, request: ModelRequest) -> str:
        messages = request.messages
        known = len(self._messages)
        # the usual case: the previous request plus new messages. Comparing the prefix is a
        # pointer comparison per message (equal but rebuilt ones, like a fresh system
        # prompt, fall back to comparing their fields), so only new messages are hashed
        if messages[:known] != self._messages:
            known = _common_prefix(self._messages, messages)
            del self._chain[known:]
        link = self._chain[-1] if self._chain else b""
        for message in messages[known:]:
            link = hashlib.sha256(link + _encoder.encode(message)).digest()
            self._chain.append(link)
        self._messages = messages
        fields: tuple[object, ...] = (request.tools, request.purpose, request.response_schema)
        if request.temperature is not None:  # digests of requests without one stay as they were
            fields = (*fields, request.temperature)
        rest = _encoder.encode(fields)
        return hashlib.sha256(link + rest).hexdigest()[:32]


def _common_prefix(a: Sequence[Message], b: Sequence[Message]) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


def request_digest(request: ModelRequest) -> str:
    """The digest of one request, computed from scratch."""
    return RequestDigester().digest(request)
