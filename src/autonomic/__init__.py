"""autonomic: a durable, event-driven runtime for autonomous LLM agents.

A run is an append-only log of typed events; strategies are pure; the runtime does all I/O.
"""

from autonomic.agent import Agent, load_agent
from autonomic.errors import (
    AgentNotFound,
    AutonomicError,
    ConcurrencyConflict,
    ConfigError,
    LeaseLost,
    MalformedOutput,
    MissingExtra,
    ModelError,
    ModelUnavailable,
    ReplayDivergence,
    RunFailedError,
    RunNotFound,
    SandboxError,
    SandboxViolation,
    StoreCorrupt,
    StoreError,
    ToolError,
)
from autonomic.guards import Allow, Deny, Guard, Rewrite
from autonomic.loader import StoredEvent
from autonomic.models import (
    FunctionModel,
    Message,
    Model,
    ModelRequest,
    ModelResponse,
    ScriptedModel,
    ToolCall,
    ToolSpec,
    Usage,
    tool_call,
)
from autonomic.runtime import RunHandle, RunResult, Runtime, run_sync
from autonomic.state import RunState
from autonomic.steps import Fail, Finish, ModelCall, Step, ToolCalls
from autonomic.store import MemoryStore, RunInfo, Store, open_store
from autonomic.strategies import AgentView, ReAct, Strategy
from autonomic.tools import FunctionTool, Tool, ToolContext, tool

__all__ = [
    "Agent",
    "AgentNotFound",
    "AgentView",
    "Allow",
    "AutonomicError",
    "ConcurrencyConflict",
    "ConfigError",
    "Deny",
    "Fail",
    "Finish",
    "FunctionModel",
    "FunctionTool",
    "Guard",
    "LeaseLost",
    "MalformedOutput",
    "MemoryStore",
    "Message",
    "MissingExtra",
    "Model",
    "ModelCall",
    "ModelError",
    "ModelRequest",
    "ModelResponse",
    "ModelUnavailable",
    "ReAct",
    "ReplayDivergence",
    "Rewrite",
    "RunFailedError",
    "RunHandle",
    "RunInfo",
    "RunNotFound",
    "RunResult",
    "RunState",
    "Runtime",
    "SandboxError",
    "SandboxViolation",
    "ScriptedModel",
    "Step",
    "Store",
    "StoreCorrupt",
    "StoreError",
    "StoredEvent",
    "Strategy",
    "Tool",
    "ToolCall",
    "ToolCalls",
    "ToolContext",
    "ToolError",
    "ToolSpec",
    "Usage",
    "load_agent",
    "open_store",
    "run_sync",
    "tool",
    "tool_call",
]

__version__ = "0.1.0"
