"""Digests of model requests, cheap enough to take on every call of a long run.

A request's digest chains the hashes of its messages; a digester remembers the chain of
the last request it saw, so the next request of the same run (the same messages plus a
few new ones) costs only the new messages, not the whole transcript again.
"""

from __future__ import annotations

import hashlib
import operator

import msgspec

from autonomic.messages import Message, ModelRequest

__all__ = ["RequestDigester", "request_digest"]

_encoder = msgspec.json.Encoder()


class RequestDigester:
    def __init__(self) -> None:
        self._messages: list[Message] = []
        self._chain: list[bytes] = []

    def digest(self, request: ModelRequest) -> str:
        messages = request.messages
        same = list(map(operator.is_, self._messages, messages))
        if False in same:  # equal but rebuilt messages (a fresh system prompt) count too
            same = list(map(operator.eq, self._messages, messages))
        known = same.index(False) if False in same else len(same)
        del self._messages[known:], self._chain[known:]
        link = self._chain[-1] if self._chain else b""
        for message in messages[known:]:
            link = hashlib.sha256(link + _encoder.encode(message)).digest()
            self._messages.append(message)
            self._chain.append(link)
        rest = _encoder.encode((request.tools, request.purpose, request.response_schema))
        return hashlib.sha256(link + rest).hexdigest()[:32]


def request_digest(request: ModelRequest) -> str:
    """The digest of one request, computed from scratch."""
    return RequestDigester().digest(request)
