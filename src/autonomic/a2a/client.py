"""Call a remote A2A agent as a tool: its card says where, JSON-RPC does the rest.

The tool sends the model's message with ``SendMessage`` (A2A v1.0) and waits for the
task to end, polling ``GetTask`` while the peer works. The message id is the action's
idempotency key, so a run that crashed and re-runs the call finds the same remote task
(a server that dedupes message ids, as autonomic's does, starts no second one). Needs
``autonomic[openai]`` or any install with httpx.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from autonomic.errors import ConfigError, ToolError
from autonomic.tools import ToolContext, tool
from autonomic.tools.base import FunctionTool

__all__ = ["a2a_tool"]

CARD_PATH = "/.well-known/agent-card.json"
_DONE = {"TASK_STATE_COMPLETED", "TASK_STATE_FAILED", "TASK_STATE_CANCELED", "TASK_STATE_REJECTED"}
_ASKS = {"TASK_STATE_INPUT_REQUIRED", "TASK_STATE_AUTH_REQUIRED"}


def a2a_tool(
    url: str,
    *,
    name: str,
    description: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 300.0,
    poll_s: float = 0.5,
) -> FunctionTool:
    """A tool named ``name`` that asks the A2A agent at ``url`` (the base its card is
    under) and returns its answer. ``headers`` go with every request (``Authorization``)."""
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"the A2A agent URL {url!r} must be an http:// or https:// URL")
    try:
        import httpx
    except ImportError:
        raise ConfigError(
            'calling an A2A agent needs httpx: pip install "autonomic[openai]"'
        ) from None
    base = url.rstrip("/")
    sent_headers = {"A2A-Version": "1.0", **(headers or {})}

    async def call(client: httpx.AsyncClient, endpoint: str, method: str, params: Any) -> Any:
        body = {"jsonrpc": "2.0", "id": method, "method": method, "params": params}
        try:
            response = await client.post(endpoint, json=body)
            response.raise_for_status()
            reply = response.json()
        except (httpx.HTTPError, ValueError) as e:
            raise ToolError(
                f"the A2A agent at {base} did not answer: {e}", retryable=True
            ) from None
        if not isinstance(reply, dict) or "error" in reply:
            error = reply.get("error", {}) if isinstance(reply, dict) else {}
            raise ToolError(f"the A2A agent at {base} refused: {error.get('message', reply)}")
        return reply.get("result")

    async def ask(message: str, context: ToolContext) -> str:
        async with httpx.AsyncClient(headers=sent_headers, timeout=30.0) as client:
            try:
                card = (await client.get(base + CARD_PATH)).raise_for_status().json()
            except (httpx.HTTPError, ValueError) as e:
                raise ToolError(
                    f"no A2A agent card at {base}{CARD_PATH}: {e}", retryable=True
                ) from None
            endpoint = _endpoint(card, base)
            request = {
                "message": {
                    "messageId": f"{context.run_id}:{context.idempotency_key}",
                    "role": "ROLE_USER",
                    "parts": [{"text": message}],
                }
            }
            result = await call(client, endpoint, "SendMessage", request)
            task = (result or {}).get("task")
            if task is None:  # the peer answered with a message, not a task
                return _text((result or {}).get("message", {}).get("parts", []))
            deadline = time.monotonic() + timeout_s
            while task.get("status", {}).get("state") not in _DONE | _ASKS:
                if time.monotonic() > deadline:
                    raise ToolError(f"the A2A agent at {base} did not finish in {timeout_s:g}s")
                await asyncio.sleep(poll_s)
                task = await call(client, endpoint, "GetTask", {"id": task["id"]})
            return _outcome(task, base)

    return tool(
        name=name,
        description=description or f"Ask the remote agent at {base} and get its answer.",
        timeout=timeout_s + 30,
        idempotent=True,
    )(ask)


def _endpoint(card: Any, base: str) -> str:
    if not isinstance(card, dict):
        raise ToolError(f"the agent card at {base} is not a JSON object")
    interfaces = card.get("supportedInterfaces") or []
    for interface in interfaces:
        if interface.get("protocolBinding") == "JSONRPC" and str(
            interface.get("protocolVersion", "")
        ).startswith("1."):
            return str(interface["url"])
    raise ToolError(f"the agent at {base} offers no A2A v1.0 JSON-RPC interface")


def _text(parts: Any) -> str:
    return "\n".join(p["text"] for p in parts or [] if isinstance(p, dict) and "text" in p)


def _outcome(task: dict[str, Any], base: str) -> str:
    status = task.get("status", {})
    state = status.get("state")
    note = _text(status.get("message", {}).get("parts", []))
    if state == "TASK_STATE_COMPLETED":
        answers = [_text(a.get("parts", [])) for a in task.get("artifacts", [])]
        return "\n".join(a for a in answers if a) or note
    if state in _ASKS:
        return f"the remote agent needs more input (task {task.get('id')}): {note}"
    raise ToolError(f"the A2A agent at {base} ended the task {state}: {note or 'no reason given'}")
