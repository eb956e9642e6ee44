"""Decisions as JSON for a constrained decoder: every output is a valid tool call or an answer.

A small local model cannot be trusted to write a tool call in free text (in our tests it
never did). Constraining its output to the JSON schema built here, an ``anyOf`` over
``{"tool": NAME, "arguments": {...}}`` for each tool and ``{"answer": TEXT}``, makes
every output parse; the conversation is rendered in the same format so the model sees
its own past decisions as it wrote them.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Sequence
from typing import Any

from autonomic.errors import MalformedOutput
from autonomic.models.base import Message, ToolCall, ToolSpec
from autonomic.models.repair import Repaired, make_call, parse_arguments

__all__ = ["decision_messages", "decision_schema", "read_decision"]

_REF = "#/$defs/"
_TOOL_NAME = re.compile(r'"tool"\s*:\s*"([^"]+)"')
_ANSWER_START = re.compile(r'^\s*\{\s*"answer"\s*:\s*"')


def _renamed_refs(node: Any, renames: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {k: _renamed_refs(v, renames) for k, v in node.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith(_REF) and ref[len(_REF) :] in renames:
            out["$ref"] = _REF + renames[ref[len(_REF) :]]
        return out
    if isinstance(node, list):
        return [_renamed_refs(v, renames) for v in node]
    return node


def _hoisted(parameters: dict[str, Any], prefix: str, defs: dict[str, Any]) -> dict[str, Any]:
    """The tool's schema with its ``$defs`` moved to the root under unique names."""
    schema = copy.deepcopy(parameters)
    local = schema.pop("$defs", {}) | schema.pop("definitions", {})
    renames = {name: f"{prefix}{name}" for name in local}
    for name, definition in local.items():
        defs[renames[name]] = _renamed_refs(definition, renames)
    schema = _renamed_refs(schema, renames)
    schema.setdefault("type", "object")
    return schema


def decision_schema(tools: Sequence[ToolSpec]) -> dict[str, Any]:
    """A schema whose instances are exactly one call of one of ``tools``, or a final answer."""
    defs: dict[str, Any] = {}
    options: list[dict[str, Any]] = [
        {
            "type": "object",
            "properties": {
                "tool": {"const": tool.name},
                "arguments": _hoisted(tool.parameters, f"t{index}_", defs),
            },
            "required": ["tool", "arguments"],
        }
        for index, tool in enumerate(tools)
    ]
    options.append(
        {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    )
    schema: dict[str, Any] = {"anyOf": options}
    if defs:
        schema["$defs"] = defs
    return schema


def _instructions(tools: Sequence[ToolSpec]) -> str:
    lines = ["You can use these tools:"]
    for tool in tools:
        arguments = json.dumps(tool.parameters.get("properties", {}), separators=(",", ":"))
        lines.append(f"- {tool.name}: {tool.description} Arguments: {arguments}")
    lines.append(
        'Reply with JSON only: {"tool": NAME, "arguments": {...}} to use a tool, '
        'or {"answer": TEXT} when you can answer.'
    )
    return "\n".join(lines)


def _decision_text(call: ToolCall) -> str:
    return json.dumps({"tool": call.name, "arguments": call.arguments})


def decision_messages(
    messages: Sequence[Message], tools: Sequence[ToolSpec]
) -> list[dict[str, str]]:
    """Chat messages for a model without native tool calling, with the tools explained."""
    names = {c.id: c.name for m in messages for c in m.tool_calls}
    system = [m.content for m in messages if m.role == "system" and m.content]
    if tools:
        system.append(_instructions(tools))
    out = [{"role": "system", "content": "\n\n".join(system)}] if system else []
    for message in messages:
        if message.role == "system":
            continue
        if message.role == "tool":
            tool = message.name or names.get(message.tool_call_id or "", "the tool")
            out.append({"role": "user", "content": f"{tool} returned: {message.content}"})
        elif message.tool_calls:
            decisions = [_decision_text(c) for c in message.tool_calls]
            out.append({"role": "assistant", "content": "\n".join(decisions)})
        elif message.role == "assistant" and tools:
            out.append({"role": "assistant", "content": json.dumps({"answer": message.content})})
        else:
            out.append({"role": message.role, "content": message.content})
    return out


def _cut_short(output: str, call_id: str) -> tuple[str, tuple[ToolCall, ...], tuple[str, ...]]:
    """A decision cut off by the token limit: the answer so far, or a call marked failed."""
    answer = _ANSWER_START.match(output)
    if answer is not None:
        partial = output[answer.end() :].rstrip("\\")
        try:
            text = json.loads(f'"{partial}"')
        except json.JSONDecodeError:
            text = partial
        return str(text), (), ("the answer was cut off at the token limit",)
    name = _TOOL_NAME.search(output)
    if name is None:
        raise MalformedOutput(f"the local model's output is not a decision: {output[:200]!r}")
    error = f"the call was cut off before its arguments were complete: {output[:200]!r}"
    return "", (ToolCall(call_id, name.group(1), {}, error),), ()


def read_decision(
    output: str, tools: Sequence[ToolSpec], call_id: str
) -> tuple[str, tuple[ToolCall, ...], tuple[str, ...]]:
    """(answer text, tool calls, repairs) from a constrained output, possibly cut short."""
    parsed: Repaired = parse_arguments(output)
    if parsed.error is not None:
        return _cut_short(output, call_id)
    decision = parsed.value
    if "tool" in decision:
        call, repairs = make_call(
            call_id, str(decision["tool"]), decision.get("arguments", {}), tools
        )
        return "", (call,), parsed.repairs + repairs
    if "answer" in decision:
        return str(decision["answer"]), (), parsed.repairs
    raise MalformedOutput(f"the local model's output is not a decision: {output[:200]!r}")
