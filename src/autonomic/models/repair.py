"""Turn what models actually emit into ToolCalls, repairing only what is unambiguous.

Servers and small models differ: arguments arrive as a JSON string or an object, ids
go missing, JSON has trailing prose or single quotes, a tool name comes back in the
wrong case, or the call is written as JSON in the text. Whatever cannot be repaired
without guessing becomes a ``ToolCall`` with ``error`` set, which the runtime shows to
the model so it can try again.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from autonomic.models.base import ModelRequest, ToolCall, ToolSpec

__all__ = [
    "Repaired",
    "calls_from_text",
    "make_call",
    "match_tool_name",
    "parse_arguments",
    "turn_of",
]

_FENCE = re.compile(r"^```[a-zA-Z]*\s*(.*?)\s*```$", re.DOTALL)
_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
_LITERAL_LIMIT = 100_000


class Repaired(NamedTuple):
    """A parsed value, the error when there is none, and what was repaired on the way."""

    value: dict[str, Any]
    error: str | None
    repairs: tuple[str, ...]


def turn_of(request: ModelRequest) -> int:
    """The index of the assistant turn being answered (used for stable tool-call ids)."""
    return sum(1 for m in request.messages if m.role == "assistant")


def _strip_fence(text: str) -> str:
    match = _FENCE.match(text.strip())
    return match.group(1) if match else text.strip()


def _json_like(value: object) -> bool:
    """Whether a Python literal means the same as JSON (no tuples, sets or non-string keys)."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_like(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_json_like(v) for v in value)
    return value is None or isinstance(value, str | int | float | bool)


def _json_object(text: str) -> tuple[Any, str | None]:
    """The JSON value in ``text`` and the repair needed to read it, or raise ValueError."""
    try:
        return json.loads(text), None
    except json.JSONDecodeError:
        pass
    start = text.find("{")
    if start >= 0:
        try:
            value, end = json.JSONDecoder().raw_decode(text, start)
        except json.JSONDecodeError:
            value, end = None, -1
        if end >= 0 and "{" not in text[end:]:
            return value, "ignored text around the JSON"
    if len(text) <= _LITERAL_LIMIT:
        try:
            literal = ast.literal_eval(text)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            literal = None
        if isinstance(literal, dict) and _json_like(literal):
            return literal, "read a Python literal (single quotes)"
    raise ValueError(f"not valid JSON: {text[:200]!r}")


def parse_arguments(raw: object) -> Repaired:
    """Tool arguments from a JSON string, an object, or nothing."""
    if raw is None or raw == "":
        return Repaired({}, None, ())
    repairs: list[str] = []
    value = raw
    for _ in range(2):
        if not isinstance(value, str):
            break
        text = _strip_fence(value)
        if text != value.strip():
            repairs.append("removed a code fence")
        try:
            value, repair = _json_object(text)
        except ValueError as e:
            return Repaired({}, f"arguments are {e}", tuple(repairs))
        if repair:
            repairs.append(repair)
        if isinstance(value, str):
            repairs.append("decoded JSON encoded twice")
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        return Repaired({}, f"arguments must be a JSON object, got {raw!r:.200}", tuple(repairs))
    return Repaired(value, None, tuple(repairs))


def _canonical(name: str) -> str:
    return re.sub(r"[\s\-_.]+", "_", name.strip()).lower()


def match_tool_name(name: str, tools: Sequence[ToolSpec]) -> tuple[str, str | None, str | None]:
    """The tool's real name, the repair made, and an error if no single tool matches."""
    names = [t.name for t in tools]
    if not names or name in names:
        return name, None, None
    bare = name.removeprefix("functions.").strip()
    candidates = [n for n in names if _canonical(n) == _canonical(bare)]
    if len(candidates) == 1:
        return candidates[0], f"tool name {name!r} read as {candidates[0]!r}", None
    return name, None, f"unknown tool {name!r}; the tools are: {', '.join(names)}"


def make_call(
    call_id: str, name: str, raw_arguments: object, tools: Sequence[ToolSpec]
) -> tuple[ToolCall, tuple[str, ...]]:
    """A ToolCall from raw parts, with ``error`` set when it cannot be used as it is."""
    real_name, name_repair, name_error = match_tool_name(name, tools)
    parsed = parse_arguments(raw_arguments)
    repairs = parsed.repairs + ((name_repair,) if name_repair else ())
    error = name_error or parsed.error
    return ToolCall(call_id, real_name, parsed.value, error), repairs


def _call_parts(item: object) -> tuple[str, object] | None:
    """(name, arguments) of one JSON-written call in the common shapes, else None."""
    if not isinstance(item, dict):
        return None
    fields: dict[str, Any] = item["function"] if isinstance(item.get("function"), dict) else item
    name = fields.get("name", fields.get("tool"))
    if not isinstance(name, str):
        return None
    return name, fields.get("arguments", fields.get("parameters", fields.get("args", {})))


def _candidates(text: str) -> Iterable[str]:
    tagged = _TAGGED.findall(text)
    if tagged:
        yield from tagged
    else:
        yield _strip_fence(text)


def calls_from_text(
    text: str, tools: Sequence[ToolSpec], turn: int
) -> tuple[tuple[ToolCall, ...], tuple[str, ...]] | None:
    """Tool calls a model wrote as JSON in its text, if every one names a known tool."""
    if not tools or "{" not in text:
        return None
    parts: list[tuple[str, object]] = []
    for chunk in _candidates(text):
        try:
            value, _ = _json_object(chunk)
        except ValueError:
            return None
        items = value if isinstance(value, list) else [value]
        found = [_call_parts(item) for item in items]
        if not found or any(f is None for f in found):
            return None
        parts.extend(f for f in found if f is not None)
    if any(match_tool_name(name, tools)[2] for name, _ in parts):
        return None
    calls: list[ToolCall] = []
    repairs: list[str] = ["read tool calls written in the text"]
    for index, (name, arguments) in enumerate(parts):
        call, fixed = make_call(f"call_{turn}_{index}", name, arguments, tools)
        calls.append(call)
        repairs.extend(fixed)
    return tuple(calls), tuple(repairs)
