"""The agents a process serves, by name: registered ones, and ones imported by path.

A run records its agent's name and import path; a process that drives the run gets the
agent here. Importing user code may be slow or do I/O, so it happens off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence

from autonomic.agent import Agent, load_agent
from autonomic.errors import AgentNotFound

__all__ = ["AgentRegistry"]

log = logging.getLogger("autonomic.runtime")


class AgentRegistry:
    def __init__(self, agents: Iterable[Agent] = ()) -> None:
        self._agents: dict[str, Agent] = {}
        for agent in agents:
            self.register(agent)

    def register(self, agent: Agent) -> None:
        """Serve ``agent`` (and the agents it may start as children) under its name."""
        known = self._agents.get(agent.name)
        if known is agent:
            return
        if known is not None:
            log.debug("agent %r is registered again; its runs go on with the new one", agent.name)
        self._agents[agent.name] = agent
        for child in agent.team().values():
            self._agents.setdefault(child.name, child)

    def names(self) -> frozenset[str]:
        return frozenset(self._agents)

    def get(self, name: str) -> Agent | None:
        return self._agents.get(name)

    def ancestors(self, lineage: Sequence[str]) -> list[Agent | None]:
        """The agents of a run's lineage, root first, whose guards it runs under (None
        for one this process does not know)."""
        return [self._agents.get(name) for name in lineage]

    async def load(self, name: str, path: str | None, *, run_id: str = "") -> Agent:
        """The agent named ``name``: registered, else imported from ``path``."""
        agent = self._agents.get(name)
        if agent is not None:
            return agent
        if not path or path.startswith("__main__:"):
            raise AgentNotFound(
                f"agent {name!r}{f' of run {run_id}' if run_id else ''} is not registered and "
                "has no importable path: pass agent=..., or Runtime(agents=[...]), or define "
                "it in an importable module"
            )
        agent = await asyncio.to_thread(load_agent, path)
        self.register(agent)
        return agent

    def resolve_child(self, parent: Agent, name: str) -> Agent:
        """The agent a child run of ``parent`` named ``name`` runs."""
        agent = parent.team().get(name) or self._agents.get(name)
        if agent is None:
            raise AgentNotFound(
                f"no agent named {name!r}: list it in Agent(subagents=[...]) of {parent.name!r}"
            )
        return agent
