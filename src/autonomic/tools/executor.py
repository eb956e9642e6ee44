"""Runs one requested action and turns whatever happens into an observation or an error.

Nothing a tool does crashes the run: an exception of any kind (``SystemExit``, a
``CancelledError`` the tool raised itself, one whose ``__str__`` raises), a hang, an
endless or unencodable result all become an ``ActionFailed`` the model sees, with the
reason and the attempt count. Only a real cancellation of the calling task goes through.
Around each attempt sit the tool's rate limit and circuit breaker; failures the tool
marks retryable are retried with backoff, and every retry and breaker transition is
recorded as an event. Declared secrets are read here, given to the tool, and masked out
of everything that leaves it: output, errors, breaker reasons, the events it records.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec

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
from autonomic.resilience.breaker import CircuitBreaker, CircuitOpen, collecting
from autonomic.resilience.describe import describe_error, error_message
from autonomic.tools.base import Tool, ToolContext
from autonomic.tools.observations import clean_text, observation_of
from autonomic.tools.options import ToolOptions, options_of
from autonomic.tools.runtime_state import state_of
from autonomic.tools.secrets import (
    EnvSecrets,
    Redactor,
    SecretsProvider,
    redactor_for,
    resolve_secrets,
)

__all__ = ["MAX_TOOL_EVENTS", "Outcome", "execute_action", "refusal", "truncated"]

Outcome = ActionCompleted | ActionFailed
Stuck = Callable[[str, str], None]
"""Told (action id, why) when a call run in the caller's task ignores its timeout."""
Record = Callable[[Event], None]

MAX_TOOL_EVENTS = 10_000
"""Events one action's tool may record."""
MAX_ERROR_CHARS = 4_000
CANCEL_GRACE_S = 1.0
"""Seconds a tool that timed out gets to clean up before it is left to itself."""

_log = logging.getLogger(__name__)
_NO_SECRETS = Redactor({})


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


class _Caller:
    """The task running the action, to tell its real cancellation (one was asked of it and
    not withdrawn, even before the action began) from a stray ``CancelledError`` that some
    code raised by itself."""

    __slots__ = ("task",)

    def __init__(self) -> None:
        self.task = asyncio.current_task()

    def cancelled(self) -> bool:
        return self.task is not None and self.task.cancelling() > 0


class _ToolEvents:
    """Events a tool records, held until the executor hands them to the run on the loop.

    A sync tool records from its own thread, and the run's state may only change on the
    loop's. Events are masked as they arrive; once the action has ended, a late one (from
    a thread that outlived its timeout) is refused.
    """

    def __init__(self, redactor: Redactor, action_id: str) -> None:
        self._redactor, self._action_id = redactor, action_id
        self._lock = threading.Lock()
        self._held: list[Event] = []
        self._count = 0
        self._closed = False

    def __call__(self, event: Event) -> None:
        masked = self._redactor.value(event)
        try:
            msgspec.json.encode(masked)
        except (msgspec.EncodeError, TypeError, OverflowError) as e:
            raise ToolError(f"the event cannot be stored: {describe_error(e, 300)}") from None
        with self._lock:
            if self._closed:
                raise ToolError(f"action {self._action_id} has ended: it can record nothing more")
            if self._count >= MAX_TOOL_EVENTS:
                raise ToolError(f"a tool may record at most {MAX_TOOL_EVENTS:,} events per action")
            self._held.append(masked)
            self._count += 1

    def hand_over(self, record: Record, *, close: bool = False) -> None:
        with self._lock:
            held, self._held = self._held, []
            self._closed = self._closed or close
        for event in held:
            record(event)


def _error_text(error: BaseException, redactor: Redactor, *, bare: bool = False) -> str:
    """``error`` as one masked line; ``bare`` leaves out the type (a ToolError's message is
    written for the model)."""
    text = (bare and error_message(error, MAX_ERROR_CHARS)) or describe_error(
        error, MAX_ERROR_CHARS
    )
    return clean_text(redactor(text))


async def _invoke(tool: Tool, request: ActionRequested, context: ToolContext, limit: int) -> Any:
    """The tool's call, run as a task of its own; whatever it raises is returned, since a
    ``SystemExit`` or ``KeyboardInterrupt`` escaping a task would stop the event loop."""
    try:
        value = await tool.invoke(dict(request.args), context)
        return value if isinstance(value, str) else await observation_of(value, max_chars=limit)
    except BaseException as e:
        if isinstance(e, asyncio.CancelledError) and _Caller().cancelled():
            raise  # the call is being stopped (a timeout, the run's cancel): not the tool's
        return _Raised(e)


class _Raised:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _new_task(coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    """A task for one tool call. From Python 3.12 it starts eagerly: a tool that answers
    without waiting is done before the task is even scheduled."""
    loop = asyncio.get_running_loop()
    eager = getattr(asyncio, "eager_task_factory", None)
    return eager(loop, coro) if eager is not None else loop.create_task(coro)


_abandoned: set[asyncio.Task[Any]] = set()  # held so that they are not collected mid-run


def _abandon(task: asyncio.Task[Any]) -> None:
    """Stop waiting for a tool's task: it was told to stop, and may ignore it."""
    task.cancel()
    if not task.done():
        _abandoned.add(task)
        task.add_done_callback(_abandoned.discard)


async def _finished(task: asyncio.Task[Any], limit_s: float | None) -> bool:
    """Wait for ``task`` at most ``limit_s`` seconds; whether it finished. (What
    ``asyncio.wait`` does for one task, without its bookkeeping for many.)"""
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    task.add_done_callback(wake)
    timer = loop.call_later(limit_s, wake) if limit_s is not None else None
    try:
        await waiter
    finally:
        task.remove_done_callback(wake)
        if timer is not None:
            timer.cancel()
    return task.done()


async def _stop(task: asyncio.Task[Any]) -> None:
    """Cancel a tool that ran out of time; give it ``CANCEL_GRACE_S`` to clean up, no more."""
    task.cancel()
    try:
        await asyncio.wait((task,), timeout=CANCEL_GRACE_S)
    finally:
        _abandon(task)


def _failure(error: BaseException, redactor: Redactor) -> _Attempt:
    if isinstance(error, ToolError):
        retryable = getattr(error, "retryable", False) is True
        return _Attempt(
            error=_error_text(error, redactor, bare=True),
            retryable=retryable,
            counts_against_tool=retryable,
        )
    if isinstance(error, asyncio.CancelledError):
        return _Attempt(
            error="the tool raised CancelledError, but nothing cancelled it",
            counts_against_tool=True,
        )
    # anything else, SystemExit, KeyboardInterrupt and GeneratorExit included
    return _Attempt(error=_error_text(error, redactor), counts_against_tool=True)


async def _try_once(
    tool: Tool,
    request: ActionRequested,
    context: ToolContext,
    options: ToolOptions,
    redactor: Redactor,
    stuck: Stuck | None,
) -> _Attempt:
    """One call in a task of its own, so that a tool that ignores cancellation can hold
    neither the caller's cancellation nor its own timeout; or, with ``stuck``, right here
    in the caller's task (see ``execute_action``)."""
    timeout = tool.timeout
    if stuck is not None:
        return await _try_inline(tool, request, context, options, redactor, stuck)
    task = _new_task(_invoke(tool, request, context, options.max_output_chars))
    try:
        done = task.done() or await _finished(task, timeout)
    except asyncio.CancelledError:  # the caller is being cancelled: so is the tool
        _abandon(task)
        raise
    if not done:
        await _stop(task)
        # the effect may have happened: only an idempotent tool is safe to try again
        return _Attempt(
            error=f"timed out after {timeout:g}s",
            retryable=tool.idempotent,
            counts_against_tool=True,
        )
    result = task.result()
    if isinstance(result, _Raised):
        return _failure(result.error, redactor)
    return _Attempt(observation=result)


async def _try_inline(
    tool: Tool,
    request: ActionRequested,
    context: ToolContext,
    options: ToolOptions,
    redactor: Redactor,
    stuck: Stuck,
) -> _Attempt:
    timeout = tool.timeout
    deadline = _Deadline(timeout, lambda why: stuck(request.action_id, why), request.tool)
    try:
        result = await _invoke(tool, request, context, options.max_output_chars)
    except asyncio.CancelledError:
        if deadline.expired() and deadline.withdraw():  # our timeout, not the caller's cancel
            return _Attempt(
                error=f"timed out after {timeout:g}s",
                retryable=tool.idempotent,
                counts_against_tool=True,
            )
        raise
    finally:
        deadline.close()
    if deadline.expired():  # it answered after all, late: the cancellation it ignored is void
        deadline.withdraw()
    if isinstance(result, _Raised):
        return _failure(result.error, redactor)
    return _Attempt(observation=result)


class _Deadline:
    """A tool call's timeout in the caller's own task: when it passes, the task is
    cancelled; if the call is still going ``CANCEL_GRACE_S`` later (it ignored the
    cancellation), ``stuck`` is told, so that the caller can leave it behind."""

    __slots__ = ("_fired", "_handle", "_stuck", "_task", "_timeout", "_tool")

    def __init__(self, timeout: float | None, stuck: Callable[[str], None], tool: str) -> None:
        self._task, self._stuck = asyncio.current_task(), stuck
        self._tool, self._timeout = tool, timeout
        self._fired = False
        loop = asyncio.get_running_loop()
        self._handle = loop.call_later(timeout, self._fire) if timeout is not None else None

    def _fire(self) -> None:
        self._fired = True
        if self._task is not None:
            self._task.cancel()
        self._handle = asyncio.get_running_loop().call_later(CANCEL_GRACE_S, self._give_up)

    def _give_up(self) -> None:
        self._handle = None
        self._stuck(
            f"timed out after {self._timeout:g}s, and tool {self._tool!r} ignored the "
            "cancellation: it was left running"
        )

    def expired(self) -> bool:
        return self._fired

    def withdraw(self) -> bool:
        """Take back this deadline's cancellation; True when no other one is pending."""
        return self._task is None or self._task.uncancel() == 0

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


async def _probe_guarded(
    breaker: CircuitBreaker | None,
    tool: Tool,
    request: ActionRequested,
    context: ToolContext,
    options: ToolOptions,
    redactor: Redactor,
    stuck: Stuck | None,
) -> _Attempt:
    """One try, reported to the breaker: a cancelled call says nothing about the tool, but
    must still end a half-open probe, or the breaker would wait for it forever."""
    try:
        attempt = await _try_once(tool, request, context, options, redactor, stuck)
    except BaseException:
        if breaker is not None:
            breaker.on_neutral()
        raise
    if breaker is not None:
        if attempt.observation is not None:
            breaker.on_success()
        elif attempt.counts_against_tool:
            breaker.on_failure(attempt.error)
        else:
            breaker.on_neutral()
    return attempt


def _record_transitions(
    record: Record, transitions: list[dict[str, object]], redactor: Redactor
) -> None:
    for change in transitions:
        record(
            CircuitChanged(
                target=str(change.get("endpoint", "")),
                from_state=str(change.get("from", "")),
                to_state=str(change.get("to", "")),
                reason=redactor(str(change.get("reason", ""))),
            )
        )


async def _attempt_guarded(
    tool: Tool,
    request: ActionRequested,
    context: ToolContext,
    options: ToolOptions,
    redactor: Redactor,
    record: Record,
    stuck: Stuck | None,
) -> _Attempt:
    """One try behind the tool's rate limit and circuit breaker."""
    state = state_of(tool, request.tool)
    if state.bucket is not None:
        await state.bucket.acquire()
    with collecting() as transitions:
        try:
            if state.breaker is not None:
                state.breaker.before_call()
        except CircuitOpen as e:
            attempt = _Attempt(error=f"{e}; it may work again in {e.retry_after:.0f}s")
        else:
            attempt = await _probe_guarded(
                state.breaker, tool, request, context, options, redactor, stuck
            )
    _record_transitions(record, transitions, redactor)
    return attempt


def _finish(
    request: ActionRequested,
    attempt: _Attempt,
    attempts: int,
    options: ToolOptions,
    redactor: Redactor,
    elapsed_ms: float,
) -> Outcome:
    if attempt.observation is None:
        error = attempt.error
        if attempts > 1:
            error = f"{error} (failed {attempts} attempts; not retrying)"
        return ActionFailed(request.action_id, error, attempt.retryable, elapsed_ms, attempts)
    raw, cap = attempt.observation, options.max_output_chars
    output = clean_text(redactor.head(raw, cap))
    if len(raw) > cap:
        output += f"\n[output cut at {cap:,} of {len(raw):,} characters]"
    if len(output) <= options.max_observation_chars:
        return ActionCompleted(request.action_id, output, elapsed_ms, attempts)
    return ActionCompleted(
        request.action_id,
        truncated(output, options.max_observation_chars),
        elapsed_ms,
        attempts,
        full_output=output,
    )


async def _attempts(
    tool: Tool,
    request: ActionRequested,
    run_id: str,
    first_attempt: int,
    options: ToolOptions,
    values: dict[str, str],
    redactor: Redactor,
    record: Record,
    started: float,
    stuck: Stuck | None,
) -> Outcome:
    """Try, and try again while the failure is retryable and the budget allows."""
    sink = _ToolEvents(redactor, request.action_id)
    number = first_attempt
    try:
        while True:
            context = ToolContext(run_id, request.action_id, number, values, sink)
            attempt = await _attempt_guarded(
                tool, request, context, options, redactor, record, stuck
            )
            sink.hand_over(record)
            tries = number - first_attempt + 1
            if attempt.observation is not None or not attempt.retryable or tries > options.retries:
                elapsed = round((time.perf_counter() - started) * 1000, 3)
                return _finish(request, attempt, number, options, redactor, elapsed)
            delay = backoff_delay(
                tries,
                base_delay=options.backoff_s,
                max_delay=options.max_backoff_s,
                retry_after=None,
                jitter=0.5,
            )
            record(ActionRetried(request.action_id, number, attempt.error, delay))
            await asyncio.sleep(delay)
            number += 1
    finally:
        sink.hand_over(record, close=True)


async def execute_action(
    tool: Tool,
    request: ActionRequested,
    run_id: str,
    *,
    first_attempt: int = 1,
    secrets: SecretsProvider | None = None,
    record: Record | None = None,
    stuck: Stuck | None = None,
) -> Outcome:
    """Run ``request`` with ``tool``, retrying as its options allow.

    Never raises, except ``CancelledError`` when the calling task itself is cancelled.
    ``record`` receives, on the event loop's thread, the events of the attempts: retries,
    breaker transitions and the events the tool recorded, all with secrets masked.

    Each call runs in a task of its own, so that a tool that ignores cancellation cannot
    hold its timeout or the caller. With ``stuck``, calls run in the caller's task instead
    (no task to start and switch to): a call that ignores the cancellation its timeout sends
    is reported as ``stuck(action_id, why)``, and the caller must leave its own task behind.
    """
    started = time.perf_counter()
    caller = _Caller()
    events: Record = record or (lambda event: None)
    redactor = _NO_SECRETS

    def failed(error: str) -> ActionFailed:
        elapsed = round((time.perf_counter() - started) * 1000, 3)
        return ActionFailed(request.action_id, error, False, elapsed, first_attempt)

    try:
        options = options_of(tool)
        values: dict[str, str] = {}
        if options.secrets:
            values = resolve_secrets(options.secrets, secrets or EnvSecrets())
            redactor = redactor_for(values)
        return await _attempts(
            tool, request, run_id, first_attempt, options, values, redactor, events, started, stuck
        )
    except ToolError as e:
        return failed(_error_text(e, redactor, bare=True))
    except asyncio.CancelledError:
        if caller.cancelled():
            raise
        return failed(
            f"tool {request.tool!r} could not be run: CancelledError, but nothing cancelled it"
        )
    except BaseException as e:  # a fault of the tool object itself (a broken property...)
        reason = f"tool {request.tool!r} could not be run: {_error_text(e, redactor)}"
        _log.error("action %s: %s", request.action_id, reason)
        return failed(reason)
