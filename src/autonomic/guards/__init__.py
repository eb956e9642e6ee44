"""Guards: checks on every step, every tool call and every event of a run."""

from autonomic.guards.base import (
    ALLOW,
    Allow,
    CallVerdict,
    Deny,
    Guard,
    RequireApproval,
    Rewrite,
    Verdict,
)
from autonomic.guards.budget import Budget
from autonomic.guards.detectors import Detection, PresidioDetector, RegexDetector
from autonomic.guards.pii import PIIGuard, reveal

__all__ = [
    "ALLOW",
    "Allow",
    "Budget",
    "CallVerdict",
    "Deny",
    "Detection",
    "Guard",
    "PIIGuard",
    "PresidioDetector",
    "RegexDetector",
    "RequireApproval",
    "Rewrite",
    "Verdict",
    "reveal",
]
