"""Guards: checks on every step and every event of a run."""

from autonomic.guards.base import Allow, Deny, Guard, Rewrite, Verdict

__all__ = ["Allow", "Deny", "Guard", "Rewrite", "Verdict"]
