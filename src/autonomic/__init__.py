"""autonomic: a durable, event-driven runtime for autonomous LLM agents.

A run is an append-only log of typed events; strategies are pure; the runtime does all I/O.
The sandbox (Linux only) is imported when one of its names is first used, so that
``import autonomic`` works on every platform.
"""

import importlib
from typing import TYPE_CHECKING

import autonomic.memory  # noqa: F401 - registers memory's event types for every reader
from autonomic.agent import Agent, load_agent
from autonomic.approvals import PendingApproval
from autonomic.bus import Bus, LocalBus
from autonomic.errors import (
    AgentNotFound,
    ApprovalRefused,
    AutonomicError,
    ConcurrencyConflict,
    ConfigError,
    LeaseLost,
    MalformedOutput,
    MissingExtra,
    ModelError,
    ModelUnavailable,
    ReplayDivergence,
    RunEnded,
    RunFailedError,
    RunNotFound,
    SandboxError,
    SandboxViolation,
    StoreCorrupt,
    StoreError,
    ToolError,
)
from autonomic.events import Event, register_event
from autonomic.guards import Allow, Budget, Deny, Guard, RequireApproval, Rewrite, ToolPolicy
from autonomic.loader import StoredEvent
from autonomic.models import (
    CachedModel,
    Cascade,
    CircuitBreaker,
    CircuitBreakerModel,
    Fallback,
    FunctionModel,
    Message,
    Model,
    ModelChunk,
    ModelRequest,
    ModelResponse,
    Price,
    ResponseCache,
    Retrying,
    ScriptedModel,
    StreamingModel,
    ToolCall,
    ToolSpec,
    Usage,
    default_model,
    register_price,
    register_provider,
    resilient,
    resolve_model,
    subscribe_transitions,
    tool_call,
)
from autonomic.resilience import CircuitOpen
from autonomic.runtime import RunHandle, RunResult, Runtime, run_sync
from autonomic.state import RunState, folds, register_slot
from autonomic.steps import (
    Approval,
    Await,
    Children,
    ChildSpec,
    Fail,
    Finish,
    ModelCall,
    Record,
    Signal,
    Spawn,
    Step,
    Timer,
    ToolCalls,
)
from autonomic.store import InMemoryStore, RunInfo, Store, open_store
from autonomic.strategies import AgentView, DAGPlanner, ReAct, ReWOO, Strategy
from autonomic.tools import FunctionTool, Tool, ToolContext, tool
from autonomic.tools.awaiting import AgentTool, sleep
from autonomic.tools.options import ToolOptions
from autonomic.tools.secrets import EnvSecrets, FileSecrets, SecretsProvider

if TYPE_CHECKING:
    from autonomic.sandbox import (
        Sandbox,
        SandboxLimits,
        SandboxResult,
        UnsafeSandboxWarning,
        open_sandbox,
    )
    from autonomic.tools.sandboxed import run_python, run_shell

_LAZY = {
    "Sandbox": "autonomic.sandbox",
    "SandboxLimits": "autonomic.sandbox",
    "SandboxResult": "autonomic.sandbox",
    "UnsafeSandboxWarning": "autonomic.sandbox",
    "open_sandbox": "autonomic.sandbox",
    "run_python": "autonomic.tools.sandboxed",
    "run_shell": "autonomic.tools.sandboxed",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'autonomic' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "Agent",
    "AgentNotFound",
    "AgentTool",
    "AgentView",
    "Allow",
    "Approval",
    "ApprovalRefused",
    "AutonomicError",
    "Await",
    "Budget",
    "Bus",
    "CachedModel",
    "Cascade",
    "ChildSpec",
    "Children",
    "CircuitBreaker",
    "CircuitBreakerModel",
    "CircuitOpen",
    "ConcurrencyConflict",
    "ConfigError",
    "DAGPlanner",
    "Deny",
    "EnvSecrets",
    "Event",
    "Fail",
    "Fallback",
    "FileSecrets",
    "Finish",
    "FunctionModel",
    "FunctionTool",
    "Guard",
    "InMemoryStore",
    "LeaseLost",
    "LocalBus",
    "MalformedOutput",
    "Message",
    "MissingExtra",
    "Model",
    "ModelCall",
    "ModelChunk",
    "ModelError",
    "ModelRequest",
    "ModelResponse",
    "ModelUnavailable",
    "PendingApproval",
    "Price",
    "ReAct",
    "ReWOO",
    "Record",
    "ReplayDivergence",
    "RequireApproval",
    "ResponseCache",
    "Retrying",
    "Rewrite",
    "RunEnded",
    "RunFailedError",
    "RunHandle",
    "RunInfo",
    "RunNotFound",
    "RunResult",
    "RunState",
    "Runtime",
    "Sandbox",
    "SandboxError",
    "SandboxLimits",
    "SandboxResult",
    "SandboxViolation",
    "ScriptedModel",
    "SecretsProvider",
    "Signal",
    "Spawn",
    "Step",
    "Store",
    "StoreCorrupt",
    "StoreError",
    "StoredEvent",
    "Strategy",
    "StreamingModel",
    "Timer",
    "Tool",
    "ToolCall",
    "ToolCalls",
    "ToolContext",
    "ToolError",
    "ToolOptions",
    "ToolPolicy",
    "ToolSpec",
    "UnsafeSandboxWarning",
    "Usage",
    "default_model",
    "folds",
    "load_agent",
    "open_sandbox",
    "open_store",
    "register_event",
    "register_price",
    "register_provider",
    "register_slot",
    "resilient",
    "resolve_model",
    "run_python",
    "run_shell",
    "run_sync",
    "sleep",
    "subscribe_transitions",
    "tool",
    "tool_call",
]

__version__ = "0.1.0"
