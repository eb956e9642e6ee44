"""One line about an exception, even when its ``__str__`` raises or never stops talking.

The message is someone else's code (a tool's, a model SDK's): it may raise, return a huge
string, or be empty, and none of that may stop the error from being reported.
"""

from __future__ import annotations

__all__ = ["describe_error", "error_message"]


def _read(error: BaseException, limit: int) -> str | BaseException:
    """``str(error)`` cut to ``limit`` characters, or what ``__str__`` raised."""
    try:
        message = str(error)
    except BaseException as e:
        return e
    if len(message) > limit:
        message = message[:limit] + f"… [{len(message) - limit:,} more characters]"
    return message


def error_message(error: BaseException, limit: int = 2000) -> str | None:
    """``str(error)`` cut to ``limit`` characters, or None when ``__str__`` fails; never raises."""
    message = _read(error, limit)
    return message if isinstance(message, str) else None


def describe_error(error: BaseException, limit: int = 2000) -> str:
    """``"TypeName: message"`` (or the type alone when the message is empty); never raises."""
    message = _read(error, limit)
    if not isinstance(message, str):  # a broken __str__ still leaves the type to report
        message = f"(its message could not be read: {type(message).__name__})"
    name = type(error).__name__
    return f"{name}: {message}" if message else name
