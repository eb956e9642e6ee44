"""Reading Server-Sent Events the way a browser does: frames split by blank lines,
``id``, ``event`` and ``data`` fields, comments ignored (but counted)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class Frame:
    id: int
    event: str
    data: dict[str, Any]


async def frames(
    response: httpx.Response, comments: list[str] | None = None
) -> AsyncIterator[Frame]:
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if not line:
            if "data" in fields:
                yield Frame(
                    int(fields["id"]), fields.get("event", "message"), json.loads(fields["data"])
                )
            fields = {}
        elif line.startswith(":"):
            if comments is not None:
                comments.append(line)
        else:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


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
