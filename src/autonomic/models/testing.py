"""Test doubles shipped with the library: a scripted model and a function model.

``ScriptedModel`` answers the k-th model turn of a run with the k-th scripted item, where
k is counted from the assistant messages already in the request. Because the position
comes from the conversation and not from a counter in memory, one instance serves many
runs at once and a run resumed in a new process gets the right answer.
"""

from __future__ import annotations

import asyncio
import inspect
import operator
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec

from autonomic.errors import ModelError
from autonomic.models.base import Message, ModelRequest, ModelResponse, ToolCall, Usage

__all__ = ["FunctionModel", "ScriptedModel", "tool_call"]

ScriptItem = str | ToolCall | Sequence[ToolCall] | ModelResponse | BaseException


def tool_call(name: str, /, **arguments: Any) -> ToolCall:
    """A tool call for a script; its id is filled in by the model that returns it."""
    return ToolCall(id="", name=name, arguments=arguments)


_role = operator.attrgetter("role")
_content = operator.attrgetter("content")


class _Tally:
    """Each conversation's assistant turns and prompt length, counted over the messages
    added since its last request: a long run's requests share all but their last few
    messages, and comparing those is a pointer comparison each."""

    def __init__(self) -> None:
        self._seen: dict[int, tuple[tuple[Message, ...], int, int]] = {}

    def count(self, messages: tuple[Message, ...]) -> tuple[int, int]:
        """(assistant turns, characters of content) of ``messages``."""
        key = id(messages[1]) if len(messages) > 1 else 0
        known, turns, chars = self._seen.get(key, ((), 0, 0))
        if not known or messages[: len(known)] != known:
            known, turns, chars = (), 0, 0
        new = messages[len(known) :]
        turns += list(map(_role, new)).count("assistant")
        chars += sum(map(len, map(_content, new)))
        if len(self._seen) > 10_000:
            self._seen.clear()
        self._seen[key] = (messages, turns, chars)
        return turns, chars


def _estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


def _with_ids(calls: Sequence[ToolCall], turn: int) -> tuple[ToolCall, ...]:
    return tuple(
        c if c.id else ToolCall(f"call_{turn}_{i}", c.name, c.arguments, c.error)
        for i, c in enumerate(calls)
    )


def _as_response(
    item: ScriptItem, turn: int, request: ModelRequest, name: str, prompt_chars: int
) -> ModelResponse:
    if isinstance(item, BaseException):
        raise item
    if isinstance(item, ModelResponse):
        if item.tool_calls and not all(c.id for c in item.tool_calls):
            item = msgspec.structs.replace(item, tool_calls=_with_ids(item.tool_calls, turn))
        return item
    calls: tuple[ToolCall, ...] = ()
    if isinstance(item, str):
        text = item
    elif isinstance(item, ToolCall):
        text, calls = "", _with_ids([item], turn)
    else:
        text, calls = "", _with_ids(item, turn)
    prompt = prompt_chars // 4 + 1
    output = _estimate_tokens(text) + sum(_estimate_tokens(str(c.arguments)) for c in calls)
    return ModelResponse(
        text=text, tool_calls=calls, usage=Usage(prompt, output), model=name, cost=0.0
    )


ModelFunction = Callable[[ModelRequest], "ScriptItem | Awaitable[ScriptItem]"]


class _TestModel:
    """What both test doubles share: a name, a call counter, and turning items into responses."""

    def __init__(self, name: str) -> None:
        self._name = name
        self.calls = 0
        self._tally = _Tally()

    @property
    def name(self) -> str:
        return self._name

    def _turn(self, request: ModelRequest) -> tuple[int, int]:
        """(assistant turns so far, characters of the prompt)."""
        return self._tally.count(request.messages)

    def _respond(
        self, item: ScriptItem, turn: int, request: ModelRequest, prompt_chars: int
    ) -> ModelResponse:
        return _as_response(item, turn, request, self._name, prompt_chars)


class FunctionModel(_TestModel):
    """Lets your function decide each response; it may be sync or async."""

    def __init__(self, function: ModelFunction, *, name: str = "function") -> None:
        super().__init__(name)
        self._function = function

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.calls += 1
        item = self._function(request)
        if inspect.isawaitable(item):
            item = await item
        turn, prompt_chars = self._turn(request)
        return self._respond(item, turn, request, prompt_chars)


class ScriptedModel(_TestModel):
    """Answers turn k of a run with ``script[k]``: text, a tool call, several, or an error.

    ``latency`` (seconds) makes every answer take that long, like a real model.
    """

    def __init__(
        self, script: Sequence[ScriptItem], *, name: str = "scripted", latency: float = 0.0
    ) -> None:
        super().__init__(name)
        self._script = list(script)
        self._latency = latency

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.calls += 1
        if self._latency:
            await asyncio.sleep(self._latency)
        turn, prompt_chars = self._turn(request)
        if turn >= len(self._script):
            raise ModelError(
                f"ScriptedModel has no response for turn {turn + 1} "
                f"(the script has {len(self._script)})"
            )
        return self._respond(self._script[turn], turn, request, prompt_chars)
