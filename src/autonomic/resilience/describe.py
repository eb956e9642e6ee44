"""One line about an exception, even when its ``__str__`` raises or never stops talking.

The message is someone else's code (a tool's, a model SDK's): it may raise, return a huge
string, or be empty, and none of that may stop the error from being reported.
"""

from __future__ import annotations

__all__ = ["describe_error", "error_message"]


def error_message(error: BaseException, limit: int = 2000) -> str:
    """``str(error)`` cut to ``limit`` characters; never raises."""
    try:
        message = str(error)
    except BaseException as e:  # a broken __str__ still leaves the type to report
        return f"(its message could not be read: {type(e).__name__})"
    if len(message) > limit:
        message = message[:limit] + f"… [{len(message) - limit:,} more characters]"
    return message


def describe_error(error: BaseException, limit: int = 2000) -> str:
    """``"TypeName: message"`` (or the type alone when the message is empty); never raises."""
    message = error_message(error, limit)
    name = type(error).__name__
    return f"{name}: {message}" if message else name
