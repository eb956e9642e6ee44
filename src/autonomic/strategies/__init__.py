"""Strategies: pure state machines that pick a run's next step."""

from autonomic.strategies.base import AgentView, Strategy
from autonomic.strategies.react import ReAct

__all__ = ["AgentView", "ReAct", "Strategy"]
