"""A rough token count for when a server reports no usage, so a call is never counted as free."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from autonomic.models.base import ModelRequest, ToolCall, Usage

__all__ = ["estimate_tokens", "estimate_usage"]

_CHARS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    """About four characters per token, rounded up (English text with common tokenizers)."""
    return -(-len(text) // _CHARS_PER_TOKEN)


def estimate_usage(request: ModelRequest, text: str, calls: Iterable[ToolCall]) -> Usage:
    prompt = sum(estimate_tokens(m.content) + 4 for m in request.messages)
    prompt += sum(estimate_tokens(msgspec.json.encode(t).decode()) for t in request.tools)
    output = estimate_tokens(text) + sum(
        estimate_tokens(c.name) + estimate_tokens(msgspec.json.encode(c.arguments).decode())
        for c in calls
    )
    return Usage(prompt, output)
