"""Models: the protocol, test doubles, resilience wrappers, and model strings (``openai:gpt-4o``).

The provider adapters need extras and are imported from their own modules:
``autonomic.models.openai.OpenAIModel``, ``autonomic.models.anthropic.AnthropicModel``,
``autonomic.models.local.LocalModel`` (or named by a string through ``resolve_model``).
"""

from __future__ import annotations

from autonomic.models.base import (
    Message,
    Model,
    ModelChunk,
    ModelRequest,
    ModelResponse,
    StreamingModel,
    ToolCall,
    ToolSpec,
    Usage,
)
from autonomic.models.breaker import (
    CircuitBreaker,
    CircuitBreakerModel,
    breaker_for,
    subscribe_transitions,
)
from autonomic.models.cache import CachedModel, ResponseCache
from autonomic.models.cascade import Cascade, default_check
from autonomic.models.fallback import Fallback
from autonomic.models.pricing import Price, PriceTable, default_prices, register_price
from autonomic.models.registry import (
    default_model,
    default_model_spec,
    register_provider,
    resolve_model,
)
from autonomic.models.resilience import resilient
from autonomic.models.retry import Retrying
from autonomic.models.testing import FunctionModel, ScriptedModel, tool_call
from autonomic.models.wrapper import ModelWrapper

__all__ = [
    "CachedModel",
    "Cascade",
    "CircuitBreaker",
    "CircuitBreakerModel",
    "Fallback",
    "FunctionModel",
    "Message",
    "Model",
    "ModelChunk",
    "ModelRequest",
    "ModelResponse",
    "ModelWrapper",
    "Price",
    "PriceTable",
    "ResponseCache",
    "Retrying",
    "ScriptedModel",
    "StreamingModel",
    "ToolCall",
    "ToolSpec",
    "Usage",
    "breaker_for",
    "default_check",
    "default_model",
    "default_model_spec",
    "default_prices",
    "register_price",
    "register_provider",
    "resilient",
    "resolve_model",
    "subscribe_transitions",
    "tool_call",
]
