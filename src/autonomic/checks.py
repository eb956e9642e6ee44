"""What a model hands back, checked before it reaches the log.

A model adapter is user code, and a model's output is untrusted: text that is not a
string, tool-call arguments that are not an object, a lone surrogate (half an emoji
from a real server), an unencodable value. ``checked_response`` turns anything into a
``ModelResponse`` the log can store; what was wrong is kept in ``meta["malformed"]``, so
the run treats it like any other malformed output (a nudge, then failure after
``max_malformed`` in a row) instead of crashing its driver.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from autonomic._text import clean_text, safe_str
from autonomic.messages import ModelResponse, ToolCall, Usage

__all__ = ["checked_call", "checked_response", "json_safe"]

_encoder = msgspec.json.Encoder()
_MAX_DEPTH = 64


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` as plain JSON data with clean strings; raises ValueError when it cannot be."""
    if depth > _MAX_DEPTH:
        raise ValueError("nested too deeply")
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a JSON number")
        return value
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"key {safe_str(key, 40)!r} is not a string")
            out[clean_text(key)] = json_safe(item, depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [json_safe(item, depth + 1) for item in value]
    raise ValueError(f"a {type(value).__name__} is not JSON data")


def checked_call(raw: object, index: int, seen: set[str]) -> tuple[ToolCall, str | None]:
    """A tool call safe to record (``error`` set when it cannot run), and what was wrong.

    ``index`` numbers the call in its step; ``seen`` holds the ids already used there.
    """
    if not isinstance(raw, ToolCall):
        call = ToolCall(f"call_{index}", "?", error=f"a {type(raw).__name__} is not a tool call")
        return call, call.error
    problem: str | None = None
    name = raw.name
    if not isinstance(name, str) or not name.strip():
        problem = f"the tool name {safe_str(name, 60)!r} is not a non-empty string"
        name = clean_text(name) if isinstance(name, str) and name.strip() else "?"
    call_id = raw.id if isinstance(raw.id, str) and raw.id and raw.id not in seen else ""
    call_id = clean_text(call_id) or f"call_{index}"
    seen.add(call_id)
    arguments: dict[str, Any] = {}
    if not isinstance(raw.arguments, dict):
        problem = (
            problem or f"the arguments are a {type(raw.arguments).__name__}, not a JSON object"
        )
    else:
        try:
            arguments = json_safe(raw.arguments)
        except ValueError as e:
            problem = problem or f"the arguments are not JSON data: {e}"
    error = raw.error if isinstance(raw.error, str) else None
    error = clean_text(error) if error else problem
    return ToolCall(call_id, clean_text(name), arguments, error), problem


def _well_formed(raw: ModelResponse) -> bool:
    """The common case, checked cheaply: what ``checked_response`` would keep as it is.
    Encoding once rules out lone surrogates and values that are not JSON data."""
    if not (isinstance(raw.text, str) and isinstance(raw.tool_calls, tuple)):
        return False
    usage = raw.usage
    if not (
        type(usage) is Usage
        and _count(usage.input_tokens)
        and _count(usage.output_tokens)
        and isinstance(raw.model, str)
        and isinstance(raw.meta, dict)
    ):
        return False
    if raw.cost is not None and _cost(raw.cost) != raw.cost:
        return False
    ids = set()
    for call in raw.tool_calls:
        if not (
            type(call) is ToolCall
            and type(call.id) is str
            and type(call.name) is str
            and type(call.arguments) is dict
            and call.id
            and call.name.strip()
            and call.id not in ids
        ):
            return False
        ids.add(call.id)
        try:
            if json_safe(call.arguments) != call.arguments:
                return False
        except ValueError:
            return False
    try:
        _encoder.encode(raw)
    except (TypeError, ValueError, UnicodeEncodeError, OverflowError):
        return False
    return True


def checked_response(raw: object) -> ModelResponse:
    """A response safe to record; ``meta["malformed"]`` says what had to be fixed."""
    if isinstance(raw, ModelResponse) and _well_formed(raw):
        return raw
    if not isinstance(raw, ModelResponse):
        return ModelResponse(meta={"malformed": f"the model returned a {type(raw).__name__}"})
    problems: list[str] = []
    text = raw.text
    if not isinstance(text, str):
        problems.append(f"its text is a {type(text).__name__}, not a string")
        text = ""
    calls: list[ToolCall] = []
    raw_calls = raw.tool_calls
    if not isinstance(raw_calls, tuple | list):
        problems.append(f"its tool calls are a {type(raw_calls).__name__}, not a list")
        raw_calls = ()
    seen: set[str] = set()
    for index, item in enumerate(raw_calls, 1):
        call, problem = checked_call(item, index, seen)
        calls.append(call)
        if problem:
            problems.append(problem)
    usage = raw.usage if isinstance(raw.usage, Usage) else Usage()
    if not all(_count(n) for n in (usage.input_tokens, usage.output_tokens)):
        usage = Usage()
    cost = _cost(raw.cost)
    try:
        meta = json_safe(raw.meta) if isinstance(raw.meta, dict) else {}
    except ValueError:
        meta = {}
    if problems:
        meta["malformed"] = "; ".join(problems)
    model = clean_text(raw.model) if isinstance(raw.model, str) else ""
    return ModelResponse(clean_text(text), tuple(calls), usage, model, cost, meta)


def _cost(value: object) -> float | None:
    """A price in USD, or None (unpriced, so counted pessimistically) for anything that is
    not a finite, non-negative number: ``True``, NaN, a negative cost that would refund a
    budget."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        cost = float(value)
    except OverflowError:
        return None
    return cost if math.isfinite(cost) and cost >= 0 else None


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63
