"""Reading Server-Sent Events the way a browser does: frames split by blank lines,
``id``, ``event`` and ``data`` fields, comments ignored (but counted)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class Frame:
    id: int
    event: str
    data: dict[str, Any]


def _feed(fields: dict[str, str], line: str, comments: list[str] | None) -> Frame | None:
    """Take one line; the frame it completes, if any."""
    if not line:
        frame = None
        if "data" in fields:
            frame = Frame(
                int(fields["id"]), fields.get("event", "message"), json.loads(fields["data"])
            )
        fields.clear()
        return frame
    if line.startswith(":"):
        if comments is not None:
            comments.append(line)
    else:
        name, _, value = line.partition(":")
        fields[name] = value.removeprefix(" ")
    return None


async def frames(
    response: httpx.Response, comments: list[str] | None = None
) -> AsyncIterator[Frame]:
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if (frame := _feed(fields, line, comments)) is not None:
            yield frame


def parse(lines: Iterable[str]) -> Iterator[Frame]:
    """The frames of a stream's lines, read synchronously."""
    fields: dict[str, str] = {}
    for line in lines:
        if (frame := _feed(fields, line, None)) is not None:
            yield frame


async def collect(
    client: httpx.AsyncClient, path: str, *, limit: int | None = None, **kwargs: Any
) -> list[Frame]:
    """The frames of one stream (the first ``limit`` of them, then disconnect)."""
    got: list[Frame] = []
    async with client.stream("GET", path, **kwargs) as response:
        assert response.status_code == 200, await response.aread()
        async for frame in frames(response):
            got.append(frame)
            if limit is not None and len(got) >= limit:
                break
    return got
