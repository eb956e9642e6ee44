"""Guards: checks on every step, every tool call and every event of a run."""

from autonomic.guards.base import (
    ALLOW,
    Allow,
    CallVerdict,
    Consult,
    Deny,
    Guard,
    RequireApproval,
    Rewrite,
    Verdict,
)
from autonomic.guards.budget import Budget
from autonomic.guards.critic import CriticGuard
from autonomic.guards.detectors import Detection, PresidioDetector, RegexDetector
from autonomic.guards.loops import LoopGuard
from autonomic.guards.pii import PIIGuard, reveal
from autonomic.guards.policy import ToolPolicy
from autonomic.guards.shields import InjectionGuard

__all__ = [
    "ALLOW",
    "Allow",
    "Budget",
    "CallVerdict",
    "Consult",
    "CriticGuard",
    "Deny",
    "Detection",
    "Guard",
    "InjectionGuard",
    "LoopGuard",
    "PIIGuard",
    "PresidioDetector",
    "RegexDetector",
    "RequireApproval",
    "Rewrite",
    "ToolPolicy",
    "Verdict",
    "reveal",
]
