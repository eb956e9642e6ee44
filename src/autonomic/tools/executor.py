"""Runs one requested action and turns whatever happens into an observation or an error.

Nothing a tool does (bad arguments, an unknown name, an exception, a hang) crashes the
run: it becomes an ``ActionFailed`` the model sees, with the reason and the attempt
count. Around each attempt sit the tool's rate limit and circuit breaker; failures the
tool marks retryable are retried with backoff, and every retry and breaker transition is
recorded as an event. Declared secrets are read here, given to the tool, and masked out
of what it returns.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

from autonomic.errors import ToolError
from autonomic.events import (
    ActionCompleted,
    ActionFailed,
    ActionRequested,
    ActionRetried,
    CircuitChanged,
    Event,
)
from autonomic.resilience.backoff import backoff_delay
from autonomic.resilience.breaker import CircuitOpen, collecting
from autonomic.tools.base import Tool, ToolContext
from autonomic.tools.options import ToolOptions, options_of, state_of
from autonomic.tools.secrets import EnvSecrets, SecretsProvider, redact, resolve_secrets

__all__ = ["Outcome", "execute_action", "refusal", "truncated"]

Outcome = ActionCompleted | ActionFailed
Record = Callable[[Event], None]


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


def truncated(output: str, limit: int) -> str:
    """The model's view of a long output: its head, and a note saying what was cut."""
    return (
        output[:limit] + f"\n[output truncated: showing {limit:,} of {len(output):,} characters; "
        "the whole output is kept in the run's log]"
    )


class _Attempt:
    """The result of one try: an observation, or an error and whether to try again."""

    __slots__ = ("counts_against_tool", "error", "observation", "retryable")

    def __init__(
        self,
        observation: str | None = None,
        error: str = "",
        retryable: bool = False,
        counts_against_tool: bool = False,
    ) -> None:
        self.observation, self.error = observation, error
        self.retryable, self.counts_against_tool = retryable, counts_against_tool


async def _try_once(tool: Tool, request: ActionRequested, context: ToolContext) -> _Attempt:
    timeout = asyncio.timeout(tool.timeout)
    try:
        async with timeout:
            return _Attempt(observation=await tool.invoke(dict(request.args), context))
    except ToolError as e:
        return _Attempt(error=str(e), retryable=e.retryable, counts_against_tool=e.retryable)
    except TimeoutError as e:
        if not timeout.expired():
            return _Attempt(error=f"TimeoutError: {e}", counts_against_tool=True)
        # the effect may have happened: only an idempotent tool is safe to try again
        return _Attempt(
            error=f"timed out after {tool.timeout:g}s",
            retryable=tool.idempotent,
            counts_against_tool=True,
        )
    except Exception as e:
        return _Attempt(error=f"{type(e).__name__}: {e}", counts_against_tool=True)


def _record_transitions(record: Record, transitions: list[dict[str, object]]) -> None:
    for change in transitions:
        record(
            CircuitChanged(
                target=str(change.get("endpoint", "")),
                from_state=str(change.get("from", "")),
                to_state=str(change.get("to", "")),
                reason=str(change.get("reason", "")),
            )
        )


async def _attempt_guarded(
    tool: Tool, request: ActionRequested, context: ToolContext, record: Record
) -> _Attempt:
    """One try behind the tool's rate limit and circuit breaker."""
    state = state_of(tool)
    if state.bucket is not None:
        await state.bucket.acquire()
    with collecting() as transitions:
        try:
            if state.breaker is not None:
                state.breaker.before_call()
        except CircuitOpen as e:
            attempt = _Attempt(error=f"{e}; it may work again in {e.retry_after:.0f}s")
        else:
            attempt = await _try_once(tool, request, context)
            if state.breaker is not None:
                if attempt.observation is not None:
                    state.breaker.on_success()
                elif attempt.counts_against_tool:
                    state.breaker.on_failure(ToolError(attempt.error))
                else:
                    state.breaker.on_neutral()
    _record_transitions(record, transitions)
    return attempt


def _finish(
    request: ActionRequested,
    attempt: _Attempt,
    attempts: int,
    options: ToolOptions,
    secrets: Mapping[str, str],
    elapsed_ms: float,
) -> Outcome:
    if attempt.observation is None:
        error = redact(attempt.error, secrets)
        if attempts > 1:
            error = f"{error} (failed {attempts} attempts; not retrying)"
        return ActionFailed(request.action_id, error, attempt.retryable, elapsed_ms, attempts)
    output = redact(attempt.observation, secrets)
    if len(output) <= options.max_observation_chars:
        return ActionCompleted(request.action_id, output, elapsed_ms, attempts)
    return ActionCompleted(
        request.action_id,
        truncated(output, options.max_observation_chars),
        elapsed_ms,
        attempts,
        full_output=output,
    )


async def execute_action(
    tool: Tool,
    request: ActionRequested,
    run_id: str,
    *,
    first_attempt: int = 1,
    secrets: SecretsProvider | None = None,
    record: Record | None = None,
) -> Outcome:
    """Run ``request`` with ``tool``, retrying as its options allow; never raises."""
    started = time.perf_counter()
    options = options_of(tool)
    events = record or (lambda event: None)

    def elapsed() -> float:
        return round((time.perf_counter() - started) * 1000, 3)

    try:
        values = resolve_secrets(options.secrets, secrets or EnvSecrets())
    except ToolError as e:
        return ActionFailed(request.action_id, str(e), False, elapsed(), first_attempt)
    number = first_attempt
    while True:
        context = ToolContext(run_id, request.action_id, number, values, events)
        attempt = await _attempt_guarded(tool, request, context, events)
        tries = number - first_attempt + 1
        if attempt.observation is not None or not attempt.retryable or tries > options.retries:
            return _finish(request, attempt, number, options, values, elapsed())
        delay = backoff_delay(
            tries,
            base_delay=options.backoff_s,
            max_delay=options.max_backoff_s,
            retry_after=None,
            jitter=0.5,
        )
        events(ActionRetried(request.action_id, number, redact(attempt.error, values), delay))
        await asyncio.sleep(delay)
        number += 1
