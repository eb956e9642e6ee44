"""Driving runs on other machines: the ``ChildRunner`` hook and its Ray implementation.

A runtime normally drives the child runs it spawns itself. Given a child runner, it
hands each new child (created, in the parent's commit, leased to this process) to the
runner instead, which has it driven elsewhere against the same store. The store stays
the truth: a child's end is delivered to its parent's inbox in the child's last commit,
wherever that commit is made, and wakes the parent.
"""

from __future__ import annotations

from typing import Protocol

from autonomic.store.base import Lease

__all__ = ["ChildRunner"]


class ChildRunner(Protocol):
    def start_child(self, store_url: str, run_id: str, lease: Lease, lease_s: float) -> None:
        """Have the child run ``run_id`` driven elsewhere: it is leased to this process
        with ``lease``, which the other side takes over. Never blocks."""
        ...
