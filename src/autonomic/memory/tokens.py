"""Counting a prompt's tokens before it is sent, so that it can be made to fit.

``EstimatedTokens`` errs on the high side (one token per three bytes of UTF-8, where
common tokenizers average about four characters); ``TokenizerTokens`` counts exactly
with the model's own ``tokenizer.json`` when it is known (``pip install
"autonomic[memory]"``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import msgspec

from autonomic.errors import ConfigError, MissingExtra
from autonomic.messages import Message, ToolSpec

__all__ = [
    "MESSAGE_OVERHEAD",
    "REQUEST_OVERHEAD",
    "EstimatedTokens",
    "TokenCounter",
    "TokenizerTokens",
    "message_tokens",
    "request_tokens",
]

MESSAGE_OVERHEAD = 4
"""Tokens a chat format spends on each message's role and separators."""
REQUEST_OVERHEAD = 3


class TokenCounter(Protocol):
    def count(self, text: str) -> int:
        """How many tokens ``text`` takes, never fewer than the model will count."""
        ...


class EstimatedTokens:
    """A conservative estimate: one token per three bytes of UTF-8, rounded up."""

    def count(self, text: str) -> int:
        size = len(text) if text.isascii() else len(text.encode())
        return -(-size // 3)


class TokenizerTokens:
    """Exact counts with a Hugging Face ``tokenizer.json`` (the model's own tokenizer)."""

    def __init__(self, path: str | Path) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as e:
            raise MissingExtra("memory", "counting tokens with a tokenizer.json") from e
        if not Path(path).is_file():
            raise ConfigError(f"no tokenizer file at {path}: give the path of a tokenizer.json")
        self._tokenizer: Any = Tokenizer.from_file(str(path))
        self._tokenizer.no_padding()  # count the text, not a padded or cut batch row
        self._tokenizer.no_truncation()

    def count(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)


_encoder = msgspec.json.Encoder()


def message_tokens(message: Message, counter: TokenCounter) -> int:
    total = MESSAGE_OVERHEAD + counter.count(message.content)
    for call in message.tool_calls:
        total += MESSAGE_OVERHEAD + counter.count(call.name)
        total += counter.count(_encoder.encode(call.arguments).decode())
    return total


def tools_tokens(tools: Iterable[ToolSpec], counter: TokenCounter) -> int:
    return sum(counter.count(_encoder.encode(t).decode()) for t in tools)


def request_tokens(
    messages: Iterable[Message], tools: Iterable[ToolSpec], counter: TokenCounter
) -> int:
    """The prompt's size as the model will see it (messages, tool specs, framing)."""
    return (
        REQUEST_OVERHEAD
        + sum(message_tokens(m, counter) for m in messages)
        + tools_tokens(tools, counter)
    )
