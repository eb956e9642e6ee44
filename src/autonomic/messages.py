"""The plain data that crosses every layer: messages, tool calls and specs, usage,
model requests and responses.

The event log, strategies, tools and model adapters all speak in these types, so they
live here rather than in any one of those packages.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = [
    "Message",
    "ModelChunk",
    "ModelRequest",
    "ModelResponse",
    "Role",
    "ToolCall",
    "ToolSpec",
    "Usage",
]

Role = Literal["system", "user", "assistant", "tool"]


class ToolCall(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """A call the model asked for. ``error`` is set when its arguments could not be parsed."""

    id: str
    name: str
    arguments: dict[str, Any] = {}
    error: str | None = None


class Message(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None


class ToolSpec(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """What the model is told about a tool: its name, purpose and JSON schema."""

    name: str
    description: str
    parameters: dict[str, Any]


class Usage(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens
        )

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class ModelRequest(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """Everything a model needs for one call. ``purpose`` says why (act, compact, critic...).

    ``temperature``, when set, overrides the model's own setting for this call (a loop
    guard raises it to shake a stuck agent loose); ``None`` leaves it to the model."""

    messages: tuple[Message, ...]
    tools: tuple[ToolSpec, ...] = ()
    purpose: str = "act"
    response_schema: dict[str, Any] | None = None
    temperature: float | None = None


class ModelResponse(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """One answer. ``cost`` is in USD; ``None`` means it could not be priced.

    ``meta`` keys set by the adapters and wrappers in this package: ``price_unknown``
    (cost counted at the table's highest price), ``usage_estimated``, ``cached`` and
    ``cache`` ("exact" or "semantic"), ``tier`` (which cascade tier answered),
    ``attempts`` (retries), ``fallback_from``, ``breaker`` (circuit breaker transitions
    seen during the call), ``repaired`` (what was fixed in malformed output).
    """

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = Usage()
    model: str = ""
    cost: float | None = None
    meta: dict[str, Any] = {}


class ModelChunk(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """A piece of a streamed answer: a text delta, and on the last chunk the whole response."""

    text: str = ""
    response: ModelResponse | None = None
