"""The Model protocol.

A model takes a ``ModelRequest`` (messages and tool schemas) and returns a
``ModelResponse`` (text and/or tool calls, token usage); both are defined in
``autonomic.messages`` and re-exported here. Adapters for real providers live beside
this file; the runtime only ever sees this interface.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from autonomic.messages import (
    Message,
    ModelChunk,
    ModelRequest,
    ModelResponse,
    Role,
    ToolCall,
    ToolSpec,
    Usage,
)

__all__ = [
    "Message",
    "Model",
    "ModelChunk",
    "ModelRequest",
    "ModelResponse",
    "Role",
    "StreamingModel",
    "ToolCall",
    "ToolSpec",
    "Usage",
]


@runtime_checkable
class Model(Protocol):
    """Anything that answers a ModelRequest. Implementations must be safe to share across runs."""

    @property
    def name(self) -> str: ...

    async def complete(self, request: ModelRequest) -> ModelResponse: ...


@runtime_checkable
class StreamingModel(Model, Protocol):
    """A model that can also stream; the last chunk carries the same response ``complete`` gives."""

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]: ...
