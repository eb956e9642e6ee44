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

__all__ = [
    "ALLOW",
    "Allow",
    "Budget",
    "CallVerdict",
    "Deny",
    "Guard",
    "RequireApproval",
    "Rewrite",
    "Verdict",
]
