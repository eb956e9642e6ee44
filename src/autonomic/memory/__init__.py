"""Memory: the context window (L1/L2), episodic memory (L3), the knowledge graph (L4)
and the dreamer that consolidates them."""

from autonomic.memory.context import (
    ContextManaged,
    ContextSlot,
    ContextWindow,
    Fitted,
    MemoryCompacted,
    fit_request,
)
from autonomic.memory.recall import recall_tool
from autonomic.memory.tokens import EstimatedTokens, TokenCounter, TokenizerTokens

__all__ = [
    "ContextManaged",
    "ContextSlot",
    "ContextWindow",
    "EstimatedTokens",
    "Fitted",
    "MemoryCompacted",
    "TokenCounter",
    "TokenizerTokens",
    "fit_request",
    "recall_tool",
]
