"""Models: the protocol, test doubles, and resolution of model strings like ``openai:gpt-4o``."""

from __future__ import annotations

from autonomic.errors import ConfigError
from autonomic.models.base import (
    Message,
    Model,
    ModelRequest,
    ModelResponse,
    ToolCall,
    ToolSpec,
    Usage,
)
from autonomic.models.testing import FunctionModel, ScriptedModel, tool_call

__all__ = [
    "FunctionModel",
    "Message",
    "Model",
    "ModelRequest",
    "ModelResponse",
    "ScriptedModel",
    "ToolCall",
    "ToolSpec",
    "Usage",
    "resolve_model",
    "tool_call",
]


def resolve_model(spec: Model | str) -> Model:
    """A Model from an instance or a model string (``provider:name``)."""
    if not isinstance(spec, str):
        return spec
    raise ConfigError(f"unknown model {spec!r}: pass a Model instance")
