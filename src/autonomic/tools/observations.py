"""How a tool's return value becomes the text the model sees, whatever the value is.

Strings pass through. Anything else is written as JSON with bounds: at most ``MAX_ITEMS``
items of any one container or iterator, ``max_chars`` characters in all and ``timeout``
seconds of reading, so an endless generator is cut rather than followed forever; cycles,
deep nesting, unencodable values and objects whose ``repr`` fails become short markers.
Non-string values are read on a daemon thread, so the event loop never waits on a
tool's iterator.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import inspect
import json
import math
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

import pydantic
import pydantic_core

from autonomic.errors import ToolError
from autonomic.resilience.describe import describe_error
from autonomic.tools.threads import run_in_thread

__all__ = [
    "MAX_DEPTH",
    "MAX_ITEMS",
    "READ_TIMEOUT_S",
    "clean_text",
    "observation_of",
    "observation_text",
]

MAX_ITEMS = 10_000
"""Items shown of any one list, mapping or iterator."""
MAX_DEPTH = 64
"""Levels of nesting shown."""
READ_TIMEOUT_S = 30.0
"""Seconds spent reading a non-string result before it is cut."""

_SURROGATES = re.compile("[\ud800-\udfff]")
_MORE = "[more items not shown]"


def clean_text(text: str) -> str:
    """``text`` with lone surrogates (half an emoji: no UTF-8 encoder takes them) as U+FFFD."""
    return text if text.isascii() else _SURROGATES.sub("\ufffd", text)


class _Full(Exception):
    """The character budget is spent."""


class _Late(Exception):
    """The reading deadline passed."""


class _Writer:
    __slots__ = ("deadline", "parts", "room")

    def __init__(self, room: int, deadline: float) -> None:
        self.parts: list[str] = []
        self.room = room
        self.deadline = deadline

    def write(self, text: str) -> None:
        if len(text) > self.room:
            self.parts.append(text[: self.room])
            self.room = 0
            raise _Full
        self.parts.append(text)
        self.room -= len(text)
        if time.monotonic() > self.deadline:
            raise _Late

    def string(self, text: str) -> None:
        self.write(json.dumps(text[: self.room + 1], ensure_ascii=False))


def _number(value: int | float) -> str:
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else json.dumps(str(value))
    try:
        return str(int(value))
    except ValueError:  # more digits than int -> str allows
        return json.dumps(f"[an integer of {value.bit_length():,} bits]")


def _key(key: object) -> str:
    return key if isinstance(key, str) else _short_repr(key)


def _short_repr(value: object) -> str:
    try:
        text = repr(value)
    except Exception:
        return f"[{type(value).__name__} object]"
    return text if len(text) <= 1000 else text[:1000] + "…"


def _bytes(value: bytes | bytearray | memoryview) -> str:
    data = bytes(value[: MAX_ITEMS * 10])
    try:
        return data.decode()
    except UnicodeDecodeError:
        return f"[{len(value):,} bytes of binary data]"


def _write(out: _Writer, value: Any, depth: int, active: set[int]) -> None:
    if value is None or isinstance(value, bool):
        out.write(json.dumps(value))
    elif isinstance(value, str):
        out.string(value)
    elif isinstance(value, int | float):
        out.write(_number(value))
    elif isinstance(value, bytes | bytearray | memoryview):
        out.string(_bytes(value))
    elif isinstance(value, enum.Enum):
        _write(out, value.value, depth, active)
    elif inspect.isawaitable(value):
        if inspect.iscoroutine(value):
            value.close()
        raise TypeError("the tool returned an awaitable: declare it with async def")
    elif depth >= MAX_DEPTH:
        out.string("[nested too deeply]")
    elif id(value) in active:
        out.string("[cycle]")
    else:
        active.add(id(value))
        try:
            _write_composite(out, value, depth + 1, active)
        finally:
            active.discard(id(value))


def _write_composite(out: _Writer, value: Any, depth: int, active: set[int]) -> None:
    if isinstance(value, pydantic.BaseModel):
        _write(out, value.model_dump(mode="json"), depth, active)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        _write_mapping(out, fields, depth, active)
    elif isinstance(value, Mapping):
        _write_mapping(out, value, depth, active)
    elif isinstance(value, Iterable):
        _write_items(out, value, depth, active)
    else:
        try:
            plain = pydantic_core.to_jsonable_python(value)
        except Exception:
            out.string(_short_repr(value))
        else:
            _write(out, plain, depth, active)


def _write_mapping(out: _Writer, value: Mapping[Any, Any], depth: int, active: set[int]) -> None:
    out.write("{")
    for i, (key, item) in enumerate(value.items()):
        if i:
            out.write(",")
        if i == MAX_ITEMS:
            out.string(_MORE)
            out.write(":null")
            break
        out.string(_key(key))
        out.write(":")
        _write(out, item, depth, active)
    out.write("}")


def _write_items(out: _Writer, value: Iterable[Any], depth: int, active: set[int]) -> None:
    out.write("[")
    for i, item in enumerate(value):
        if i:
            out.write(",")
        if i == MAX_ITEMS:
            out.string(_MORE)
            break
        _write(out, item, depth, active)
    out.write("]")


def observation_text(
    value: Any, *, max_chars: int = 1_000_000, timeout: float = READ_TIMEOUT_S
) -> str:
    """How ``value`` is shown to the model: the string itself, or bounded JSON.

    Runs wherever it is called (a tool's thread): use ``observation_of`` on the event loop.
    An iterator that raises while it is read raises here, as a ``ToolError``.
    """
    if isinstance(value, str):
        return value
    out = _Writer(max_chars, time.monotonic() + timeout)
    try:
        _write(out, value, 0, set())
    except _Full:
        return _ending("".join(out.parts), max_chars, "the tool returned more")
    except _Late:
        return _ending("".join(out.parts), max_chars, f"reading it took more than {timeout:g}s")
    except Exception as e:
        raise ToolError(f"the tool's result could not be read: {describe_error(e)}") from e
    return clean_text("".join(out.parts))


def _ending(text: str, max_chars: int, why: str) -> str:
    """``text`` cut so that it and a note saying why fit in ``max_chars``."""
    note = f"\n[output cut at {max_chars:,} characters: {why}]"
    return clean_text(text[: max(0, max_chars - len(note))] + note)


async def observation_of(
    value: Any, *, max_chars: int = 1_000_000, read_timeout_s: float = READ_TIMEOUT_S
) -> str:
    """``observation_text`` off the event loop; an iterator stuck in ``next`` fails the call."""
    if isinstance(value, str):
        return value
    try:
        # the reader stops by itself at ``timeout``; the extra second covers a ``next()`` that
        # never returns, which no deadline inside the thread can interrupt
        async with asyncio.timeout(read_timeout_s + 1.0):
            return await run_in_thread(
                observation_text, value, max_chars=max_chars, timeout=read_timeout_s
            )
    except TimeoutError:
        raise ToolError(
            f"reading the tool's result took more than {read_timeout_s:g}s (an iterator that never "
            "yields?): return a list or a string"
        ) from None
