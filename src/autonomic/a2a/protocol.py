"""The A2A protocol's data, as plain JSON: agent cards, tasks, stream updates, errors.

Pure functions from a run (its state and events) to what A2A peers read. Both dialects
are spoken: v1.0 (``SendMessage``..., ProtoJSON: camelCase fields, enums such as
``TASK_STATE_COMPLETED``, a ``StreamResponse`` wrapper per update) and v0.3
(``message/send``..., ``kind`` tags, lowercase states, ``final`` on the last update).
A task is a run: the task id and the context id are the run id; the goal is the text of
the first message; "input required" is a run waiting for a signal or an approval.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from autonomic.agent import Agent
from autonomic.events import (
    ModelResponded,
    Resumed,
    RunCancelled,
    RunCompleted,
    RunDead,
    RunFailed,
    Suspended,
)
from autonomic.loader import StoredEvent
from autonomic.state import RunState

__all__ = [
    "INPUT_KEYS",
    "RpcError",
    "agent_card",
    "message_text",
    "run_id_for",
    "task",
    "task_state",
    "update_of",
]

V1, V03 = "1.0", "0.3"
INPUT_KEYS = ("signal:", "approval:")
"""A run waiting on one of these waits for a person or a peer: A2A's input-required."""

# JSON-RPC and A2A error codes (the SDK maps them back to its exception types)
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602
TASK_NOT_FOUND, TASK_NOT_CANCELABLE, UNSUPPORTED = -32001, -32002, -32004


class RpcError(Exception):
    """A JSON-RPC error to send back: a code and a one-line message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_STATES = {
    "pending": "submitted",
    "running": "working",
    "completed": "completed",
    "failed": "failed",
    "cancelled": "canceled",
    "dead": "failed",
}


def task_state(state: RunState) -> str:
    """The A2A task state of a run (v0.3 spelling: ``working``, ``input-required``...)."""
    if state.status == "waiting":
        waits = state.waiting.waiting_on if state.waiting else ()
        return "input-required" if any(k.startswith(INPUT_KEYS) for k in waits) else "working"
    return _STATES.get(state.status, "working")


def _v1_state(state: str) -> str:
    return "TASK_STATE_" + state.upper().replace("-", "_")


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def run_id_for(message_id: str, agent: str, tenant: str | None) -> str:
    """The run a message starts: derived from its id, so sending it again (a client's
    retry) finds the same run instead of starting a second one."""
    key = f"{tenant or ''}\x1f{agent}\x1f{message_id}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return f"a2a-{digest}"


def message_text(message: Any, *, limit: int) -> str:
    """The text of an A2A message (its text parts, joined); RpcError when it has none."""
    if not isinstance(message, dict):
        raise RpcError(INVALID_PARAMS, "params.message must be an A2A Message object")
    parts = message.get("parts")
    if not isinstance(parts, list) or not parts:
        raise RpcError(INVALID_PARAMS, "the message has no parts: send at least one text part")
    texts = []
    for part in parts:
        if not isinstance(part, dict):
            raise RpcError(INVALID_PARAMS, "each message part must be an object")
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif "data" in part or "file" in part or "raw" in part or "url" in part:
            raise RpcError(
                -32005, "this agent takes text parts only (text/plain); send the goal as text"
            )
    text = "\n".join(texts).strip()
    if not text:
        raise RpcError(INVALID_PARAMS, "the message has no text: say what the agent should do")
    if len(text) > limit:
        raise RpcError(INVALID_PARAMS, f"the message is {len(text)} characters; at most {limit}")
    return text


def _message(role: str, text: str, msg_id: str, run_id: str, version: str) -> dict[str, Any]:
    if version == V1:
        return {
            "messageId": msg_id,
            "contextId": run_id,
            "taskId": run_id,
            "role": "ROLE_" + role.upper(),
            "parts": [{"text": text}],
        }
    return {
        "kind": "message",
        "messageId": msg_id,
        "contextId": run_id,
        "taskId": run_id,
        "role": role,
        "parts": [{"kind": "text", "text": text}],
    }


def _status(
    state: str, ts: float, run_id: str, version: str, note: str | None, seq: int
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "state": _v1_state(state) if version == V1 else state,
        "timestamp": _when(ts),
    }
    if note:
        status["message"] = _message("agent", note, f"{run_id}-{seq}", run_id, version)
    return status


def _note(state: RunState) -> str | None:
    if state.status == "waiting" and state.waiting is not None:
        return f"waiting for {state.waiting.reason}" if state.waiting.reason else "waiting"
    if state.error is not None:
        return state.error
    return None


def _answer(run_id: str, answer: str, version: str) -> dict[str, Any]:
    part: dict[str, Any] = {"text": answer} if version == V1 else {"kind": "text", "text": answer}
    return {"artifactId": f"{run_id}-answer", "name": "answer", "parts": [part]}


def task(state: RunState, version: str) -> dict[str, Any]:
    """The A2A Task of a run."""
    run_id = state.run_id
    result: dict[str, Any] = {
        "id": run_id,
        "contextId": run_id,
        "status": _status(
            task_state(state), state.last_ts or state.started_at, run_id, version, _note(state), 0
        ),
        "history": [_message("user", state.goal, f"{run_id}-goal", run_id, version)],
        "metadata": {
            "autonomic": {
                "runId": run_id,
                "agent": state.agent,
                "status": state.status,
                "events": state.seq,
                "inputTokens": state.usage.input_tokens,
                "outputTokens": state.usage.output_tokens,
                "costUsd": state.cost,
            }
        },
    }
    if state.answer is not None:
        result["artifacts"] = [_answer(run_id, state.answer, version)]
    if version == V03:
        result["kind"] = "task"
    return result


def wrap(kind: str, body: dict[str, Any], version: str) -> dict[str, Any]:
    """A stream update as each dialect sends it: v1.0 wraps it in a StreamResponse."""
    if version == V1:
        return {kind: body}
    return body


def update_of(stored: StoredEvent, state: RunState, version: str) -> list[dict[str, Any]]:
    """The stream updates event ``stored`` makes (``state`` already includes it): a
    status change, progress, the answer as an artifact, the final status."""
    e, run_id, seq = stored.event, state.run_id, stored.seq
    v03 = version == V03

    def status(state_name: str, note: str | None, final: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {
            "taskId": run_id,
            "contextId": run_id,
            "status": _status(state_name, stored.ts, run_id, version, note, seq),
        }
        if v03:
            body |= {"kind": "status-update", "final": final}
        return wrap("statusUpdate", body, version)

    match e:
        case ModelResponded() if e.tool_calls and e.text.strip():
            return [status("working", e.text.strip())]
        case Suspended():
            name = task_state(state)
            return [status(name, _note(state), final=name == "input-required")]
        case Resumed():  # a process took the run up: a submitted task starts working
            return [status("working", None)]
        case RunCompleted():
            artifact: dict[str, Any] = {
                "taskId": run_id,
                "contextId": run_id,
                "artifact": _answer(run_id, e.answer, version),
                "lastChunk": True,
            }
            if v03:
                artifact["kind"] = "artifact-update"
            return [wrap("artifactUpdate", artifact, version), status("completed", None, True)]
        case RunFailed():
            return [status("failed", e.error, True)]
        case RunCancelled():
            return [status("canceled", f"cancelled by {e.by}", True)]
        case RunDead():
            return [status("failed", e.reason, True)]
    return []


def agent_card(
    agent: Agent, url: str, *, streaming: bool = True, bearer: bool = False
) -> dict[str, Any]:
    """The agent card: v1.0 fields (``supportedInterfaces``) and, for v0.3 peers, the
    older ones (``url``, ``preferredTransport``, ``protocolVersion``). ``bearer``: calls
    need an API key as a bearer token (declared the v0.3 way, which v1.0 SDKs map)."""
    from autonomic import __version__

    description = agent.instructions.strip().splitlines()[0] if agent.instructions.strip() else ""
    skills = [
        {
            "id": agent.name,
            "name": agent.name,
            "description": description or f"Runs the {agent.name} agent towards a goal.",
            "tags": ["autonomic"],
            "inputModes": ["text/plain"],
            "outputModes": ["text/plain"],
        }
    ]
    card: dict[str, Any] = {
        "name": agent.name,
        "description": description or f"The {agent.name} agent, served by autonomic.",
        "version": __version__,
        "supportedInterfaces": [
            {"url": url, "protocolBinding": "JSONRPC", "protocolVersion": V1},
            {"url": url, "protocolBinding": "JSONRPC", "protocolVersion": V03},
        ],
        "url": url,
        "preferredTransport": "JSONRPC",
        "protocolVersion": "0.3.0",
        "capabilities": {"streaming": streaming, "pushNotifications": False},
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
        "skills": skills,
    }
    if bearer:
        card["securitySchemes"] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "an autonomic API key ('autonomic keys create')",
            }
        }
        card["security"] = [{"bearer": []}]
    return card
