"""Agents are code: instructions, a model, tools, a strategy and limits, defined in Python.

A run records the agent's import path (``module:attr``) and a digest of its spec, so a
process that resumes the run can rebuild the same agent and notice if it has changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from autonomic._text import safe_str
from autonomic.errors import AgentNotFound, ConfigError
from autonomic.guards.base import Guard
from autonomic.models import Model, resolve_model
from autonomic.strategies.base import AgentView, Strategy
from autonomic.strategies.react import ReAct
from autonomic.tools.base import Tool
from autonomic.tools.options import options_of

__all__ = ["Agent", "load_agent"]

UnknownOutcomePolicy = Literal["fail", "rerun"]


@dataclass(eq=False)
class Agent:
    """An agent definition. ``model`` may be a Model or a model string; ``None`` picks the
    configured default when a run starts.

    ``on_unknown_outcome`` decides what happens to a non-idempotent action whose process
    died while it ran: ``"fail"`` (default) tells the model its outcome is unknown,
    ``"rerun"`` runs it again.

    ``subagents`` are the agents this one may start as child runs (agents given as tools
    with ``as_tool()`` count too). A child whose agent is already in its lineage is
    refused unless that agent sets ``allow_recursion``; no run is deeper than
    ``max_depth``. A model that is unavailable and asks to be retried after
    ``suspend_after_s`` seconds or more suspends the run until then instead of failing it.
    """

    name: str
    instructions: str = "You are a helpful assistant. Use the tools when they help."
    model: Model | str | None = None
    tools: Sequence[Tool] = ()
    strategy: Strategy = field(default_factory=ReAct)
    max_steps: int = 25
    max_wall_s: float = 600.0
    max_malformed: int = 3
    on_unknown_outcome: UnknownOutcomePolicy = "fail"
    guards: Sequence[Guard] = ()
    subagents: Sequence[Agent] = ()
    max_depth: int = 5
    allow_recursion: bool = False
    suspend_after_s: float = 30.0
    path: str | None = None
    _module: str | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.name or not self.name.strip():
            raise ConfigError("an agent needs a non-empty name")
        if self.max_steps < 1 or self.max_wall_s <= 0 or self.max_malformed < 1:
            raise ConfigError("max_steps, max_wall_s and max_malformed must be positive")
        if self.max_depth < 0 or self.suspend_after_s < 0:
            raise ConfigError("max_depth and suspend_after_s cannot be negative")
        if self.on_unknown_outcome not in ("fail", "rerun"):
            raise ConfigError("on_unknown_outcome must be 'fail' or 'rerun'")
        names = [t.spec.name for t in self.tools]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"agent {self.name!r} has two tools named {duplicates[0]!r}")
        self.tools = tuple(self.tools)
        self.guards = tuple(self.guards)
        self.subagents = tuple(self.subagents)
        if self._module is None:  # the module that defined the agent, to find its import path
            self._module = sys._getframe(2).f_globals.get("__name__")
        object.__setattr__(self, "_sealed", True)

    def __setattr__(self, name: str, value: Any) -> None:
        # what guards an agent is fixed once it exists: code running inside a run (a tool)
        # cannot swap them out
        if name == "guards" and self.__dict__.get("_sealed"):
            raise ConfigError(
                f"agent {self.name!r}: guards cannot be changed once the agent exists; "
                "build another Agent (dataclasses.replace) instead"
            )
        object.__setattr__(self, name, value)

    @property
    def tool_map(self) -> dict[str, Tool]:
        return {t.spec.name: t for t in self.tools}

    def view(self) -> AgentView:
        return AgentView(
            instructions=self.instructions,
            tools=tuple(t.spec for t in self.tools),
            max_malformed=self.max_malformed,
            subagents=tuple(sorted(self.team())),
        )

    def with_model(self, model: Model | str) -> Agent:
        """The same agent with another model."""
        return dataclasses.replace(self, model=model)

    def resolved_model(self) -> Model:
        if self.model is None:
            from autonomic.models import default_model

            return default_model()
        return resolve_model(self.model)

    @property
    def model_name(self) -> str:
        if self.model is None:
            return ""
        return self.model if isinstance(self.model, str) else self.model.name

    def limits(self) -> dict[str, Any]:
        return {
            "max_steps": self.max_steps,
            "max_wall_s": self.max_wall_s,
            "max_malformed": self.max_malformed,
            "max_depth": self.max_depth,
        }

    def team(self) -> dict[str, Agent]:
        """Every agent this one may start as a child, directly or through agent tools."""
        from autonomic.tools.awaiting import AgentTool

        found = {a.name: a for a in self.subagents}
        found.update((t.agent.name, t.agent) for t in self.tools if isinstance(t, AgentTool))
        return found

    def as_tool(
        self,
        *,
        name: str | None = None,
        description: str | None = None,
        priority: int | None = None,
    ) -> Tool:
        """This agent as a tool of another: each call is a durable child run (of
        ``priority``; None: the calling run's)."""
        from autonomic.tools.awaiting import AgentTool

        return AgentTool(self, name=name, description=description, priority=priority)

    def digest(self) -> str:
        """A digest of everything that changes the agent's behaviour."""
        spec = {
            "name": self.name,
            "instructions": self.instructions,
            "model": self.model_name,
            "tools": [(t.spec, t.idempotent, _approval_policy(t)) for t in self.tools],
            "strategy": self.strategy.name,
            "limits": self.limits(),
            "on_unknown_outcome": self.on_unknown_outcome,
            "guards": [guard_spec(g) for g in self.guards],
            "subagents": sorted(self.team()),
            "allow_recursion": self.allow_recursion,
        }
        return hashlib.sha256(msgspec.json.encode(spec)).hexdigest()[:16]

    def import_path(self) -> str | None:
        """``module:attr`` under which this agent can be imported again, if known."""
        if self.path:
            return self.path
        module = sys.modules.get(self._module or "")
        if module is None:
            return None
        attr = next((name for name, value in vars(module).items() if value is self), None)
        if attr is None:
            return None
        if self._module != "__main__":
            return f"{self._module}:{attr}"
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.name:
            return f"{spec.name}:{attr}"
        file = getattr(module, "__file__", None)
        return f"{os.path.abspath(file)}:{attr}" if file else None


def guard_spec(guard: Guard) -> tuple[Any, ...]:
    """What the digest records of a guard: its type and name, and its settings when it
    describes them (``digest_spec``), so that loosening a guard changes the digest."""
    base = (type(guard).__qualname__, guard.name)
    spec = getattr(guard, "digest_spec", None)
    return (*base, spec()) if callable(spec) else base


def _approval_policy(tool: Tool) -> str:
    rule = options_of(tool).requires_approval
    return (
        f"rule {getattr(rule, '__qualname__', type(rule).__name__)}"
        if callable(rule)
        else str(rule)
    )


def load_agent(path: str) -> Agent:
    """Import ``module:attr`` (or ``path/to/file.py:attr``) and check it is an Agent."""
    module_name, sep, attr = path.rpartition(":")
    dotted = all(part.isidentifier() for part in module_name.split("."))
    if not sep or not attr.isidentifier() or not (dotted or module_name.endswith(".py")):
        raise AgentNotFound(
            f"agent path {path!r} must look like module:attr or file.py:attr "
            "(e.g. myapp.agents:calc)"
        )
    try:
        if module_name.endswith(".py"):
            module = _import_file(module_name)
        else:
            module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise AgentNotFound(f"cannot import {module_name!r} for agent {path!r}: {e}") from e
    except (Exception, SystemExit) as e:
        raise AgentNotFound(
            f"importing {module_name!r} for agent {path!r} failed: {_describe(e)}"
        ) from e
    agent = getattr(module, attr, None)
    if not isinstance(agent, Agent):
        found = "nothing" if agent is None else type(agent).__name__
        raise AgentNotFound(f"{path!r} is {found}, not an autonomic.Agent")
    if agent.path is None:
        where = module.__file__ if module_name.endswith(".py") else module.__name__
        agent.path = f"{where}:{attr}"
    return agent


def _import_file(filename: str) -> Any:
    import importlib.util
    from pathlib import Path

    file = Path(filename).resolve()
    if not file.is_file():
        raise ImportError(f"no file {filename}")
    name = file.stem
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {filename}")
    if str(file.parent) not in sys.path:
        sys.path.insert(0, str(file.parent))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _describe(error: BaseException) -> str:
    """One line for an exception raised while importing user code."""
    if isinstance(error, SystemExit):
        return f"the module called sys.exit({error.code!r}) while being imported"
    if isinstance(error, SyntaxError):
        return f"SyntaxError: {error.msg} ({error.filename}, line {error.lineno})"
    return f"{type(error).__name__}: {safe_str(error)}"
