"""Memory: the context window (L1/L2), episodic memory (L3), the knowledge graph (L4)
and the dreamer that consolidates them.

The context window needs nothing extra; the embedders and everything built on them need
``pip install "autonomic[memory]"`` (numpy, onnxruntime, tokenizers and the model), and are
imported from their modules: ``autonomic.memory.episodic``, ``.knowledge``, ``.dreamer``,
``.embedders``, ``.tools``.
"""

from autonomic.memory.context import (
    ContextManaged,
    ContextSlot,
    ContextWindow,
    Fitted,
    MemoryCompacted,
    fit_request,
)
from autonomic.memory.events import FactAsserted, FactRetracted, Recalled, Remembered
from autonomic.memory.recall import recall_tool
from autonomic.memory.tokens import EstimatedTokens, TokenCounter, TokenizerTokens

__all__ = [
    "ContextManaged",
    "ContextSlot",
    "ContextWindow",
    "EstimatedTokens",
    "FactAsserted",
    "FactRetracted",
    "Fitted",
    "MemoryCompacted",
    "Recalled",
    "Remembered",
    "TokenCounter",
    "TokenizerTokens",
    "fit_request",
    "recall_tool",
]
