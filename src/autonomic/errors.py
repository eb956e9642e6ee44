"""The exception tree of autonomic: one base, leaves named for what went wrong.

    AutonomicError
    ├── ConfigError                 the caller's mistake: bad argument, URL, agent path
    │   ├── AgentNotFound           an agent import path that does not resolve
    │   ├── ApprovalRefused         an approval that names no pending request, or is forged
    │   └── MissingExtra            an optional dependency is not installed
    ├── RunNotFound                 no run with that id in the store
    ├── StoreError                  the store failed or is not a store
    │   ├── StoreCorrupt            the file or database is not an autonomic store
    │   ├── ConcurrencyConflict     someone else appended first (optimistic check)
    │   ├── LeaseLost               another process owns the run now (or took it over)
    │   └── RunEnded                the run has ended: nothing more can be written to it
    ├── ModelError                  a model call failed
    │   ├── ModelUnavailable        transient: rate limit, 5xx, timeout, open breaker
    │   └── MalformedOutput         the model answered something unusable
    ├── ToolError                   a tool failed (becomes an observation, not a crash)
    ├── SandboxError                the sandbox could not run the code
    │   └── SandboxViolation        the code hit a limit or a forbidden operation
    ├── CircuitOpen                 a circuit breaker is failing calls fast (autonomic.resilience)
    ├── RunFailedError              ``run.wait()`` on a run that failed or was cancelled
    └── ReplayDivergence            replaying a run produced a different step

Driver errors (``sqlite3.OperationalError``, ``httpx.HTTPError``...) are mapped at the
boundary so callers only ever see these.
"""

from __future__ import annotations

__all__ = [
    "AgentNotFound",
    "ApprovalRefused",
    "AutonomicError",
    "ConcurrencyConflict",
    "ConfigError",
    "LeaseLost",
    "MalformedOutput",
    "MissingExtra",
    "ModelError",
    "ModelUnavailable",
    "ReplayDivergence",
    "RunEnded",
    "RunFailedError",
    "RunNotFound",
    "SandboxError",
    "SandboxViolation",
    "StoreCorrupt",
    "StoreError",
    "ToolError",
]


class AutonomicError(Exception):
    """Base of every error autonomic raises on purpose."""


class ConfigError(AutonomicError):
    """A mistake in how autonomic was called or configured."""


class AgentNotFound(ConfigError):
    """An agent import path (``module:attr``) that does not resolve to an Agent."""


class ApprovalRefused(ConfigError):
    """An approval or denial that names no pending request, or that is not genuine."""


class MissingExtra(ConfigError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, extra: str, what: str) -> None:
        super().__init__(f'{what} needs an optional dependency: pip install "autonomic[{extra}]"')
        self.extra = extra


class RunNotFound(AutonomicError):
    def __init__(self, run_id: str) -> None:
        super().__init__(f"no run with id {run_id!r} in this store")
        self.run_id = run_id


class StoreError(AutonomicError):
    """The store could not do what was asked."""


class StoreCorrupt(StoreError):
    """The file or database is not an autonomic store, or is damaged."""


class ConcurrencyConflict(StoreError):
    """An append expected the log to end at one sequence number and it ended at another."""

    def __init__(self, run_id: str, expected: int, actual: int) -> None:
        super().__init__(
            f"run {run_id}: expected the log to end at event {expected}, it ends at {actual}"
        )
        self.run_id, self.expected, self.actual = run_id, expected, actual


class LeaseLost(StoreError):
    """Another process holds this run's lease; this one must stop driving it."""


class RunEnded(StoreError):
    """The run has completed, failed or been cancelled; nothing more can be written to it."""

    def __init__(self, run_id: str, status: str) -> None:
        super().__init__(f"run {run_id} is {status}: fork it to continue from one of its events")
        self.run_id, self.status = run_id, status


class ModelError(AutonomicError):
    """A model call failed."""


class ModelUnavailable(ModelError):
    """A transient failure worth retrying: rate limit, server error, timeout.

    ``max_attempts`` caps the attempts worth making when the failure may well not be
    transient after all (an HTTP 500 is often a request the server cannot handle).
    """

    def __init__(
        self, message: str, *, retry_after: float | None = None, max_attempts: int | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.max_attempts = max_attempts


class MalformedOutput(ModelError):
    """The model's output could not be used (invalid JSON, no content, bad tool call)."""


class ToolError(AutonomicError):
    """Raise from a tool to report a failure; ``retryable`` tells the executor to try again."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class SandboxError(AutonomicError):
    """The sandbox could not be set up or run."""


class SandboxViolation(SandboxError):
    """Sandboxed code hit a limit or tried a forbidden operation."""


class RunFailedError(AutonomicError):
    """Raised by ``RunHandle.wait()`` when the run ended without an answer."""

    def __init__(self, run_id: str, status: str, reason: str) -> None:
        super().__init__(f"run {run_id} {status}: {reason}")
        self.run_id, self.status, self.reason = run_id, status, reason


class ReplayDivergence(AutonomicError):
    """Replaying a run's log made the strategy take a different step than was recorded."""
