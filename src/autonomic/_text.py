"""Text from untrusted places (exceptions, models, tools), made safe to log and store."""

from __future__ import annotations

import re

__all__ = ["clean_text", "safe_str"]


def safe_str(value: object, limit: int = 2000) -> str:
    """``str(value)``, even when its ``__str__`` raises, without lone surrogates, capped."""
    try:
        text = str(value)
    except BaseException:  # a hostile __str__ must not take the caller down
        try:
            text = f"<{type(value).__name__} whose str() failed>"
        except BaseException:
            text = "<unprintable object>"
    text = clean_text(text)
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more]"


def clean_text(text: str) -> str:
    """``text`` with lone surrogates (half an emoji, undecodable bytes) replaced by U+FFFD,
    so that it can be encoded as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


_SURROGATE = re.compile("[\ud800-\udfff]")
