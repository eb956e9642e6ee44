"""The bus: hints that something changed (a run's new events, a run ready to drive).

The store is the truth; the bus only wakes whoever waits, so that following a run or
claiming a woken one does not poll hard. A lost message costs latency, never data.
"""

from autonomic.bus.base import Bus, Subscription
from autonomic.bus.local import LocalBus

__all__ = ["Bus", "LocalBus", "Subscription"]
