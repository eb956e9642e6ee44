"""Strategies: pure state machines that pick a run's next step."""

from autonomic.strategies.base import AgentView, Strategy
from autonomic.strategies.controller import BoardController
from autonomic.strategies.dag import DAGPlanner
from autonomic.strategies.forkjoin import ForkJoin
from autonomic.strategies.governance import GovernanceBoard
from autonomic.strategies.hierarchy import Hierarchy
from autonomic.strategies.plans import PlanNode, PlanRecorded
from autonomic.strategies.react import ReAct
from autonomic.strategies.rewoo import ReWOO

__all__ = [
    "AgentView",
    "BoardController",
    "DAGPlanner",
    "ForkJoin",
    "GovernanceBoard",
    "Hierarchy",
    "PlanNode",
    "PlanRecorded",
    "ReAct",
    "ReWOO",
    "Strategy",
]
