"""Runs one requested action and turns whatever happens into an observation or an error.

Nothing a tool does (bad arguments, an unknown name, an exception, a hang) crashes the
run: it becomes an ``ActionFailed`` the model sees, with the reason.
"""

from __future__ import annotations

import asyncio
import time

from autonomic.errors import ToolError
from autonomic.events import ActionCompleted, ActionFailed, ActionRequested
from autonomic.tools.base import Tool, ToolContext

__all__ = ["execute_action", "refusal"]


def refusal(
    request: ActionRequested, tools: dict[str, Tool], parse_error: str | None
) -> str | None:
    """Why an action cannot even be attempted, or None when it can."""
    if parse_error:
        return f"malformed arguments for {request.tool!r}: {parse_error}"
    if request.tool not in tools:
        known = ", ".join(sorted(tools)) or "none"
        return f"unknown tool {request.tool!r} (available: {known})"
    return None


async def execute_action(
    tool: Tool, request: ActionRequested, run_id: str, attempt: int = 1
) -> ActionCompleted | ActionFailed:
    started = time.perf_counter()
    context = ToolContext(run_id=run_id, action_id=request.action_id, attempt=attempt)

    def elapsed() -> float:
        return round((time.perf_counter() - started) * 1000, 3)

    try:
        async with asyncio.timeout(tool.timeout):
            observation = await tool.invoke(dict(request.args), context)
    except ToolError as e:
        return ActionFailed(request.action_id, str(e), e.retryable, elapsed(), attempt)
    except TimeoutError:
        return ActionFailed(
            request.action_id, f"timed out after {tool.timeout:g}s", True, elapsed(), attempt
        )
    except Exception as e:
        return ActionFailed(
            request.action_id, f"{type(e).__name__}: {e}", False, elapsed(), attempt
        )
    return ActionCompleted(request.action_id, observation, elapsed(), attempt)
