"""Tools: the protocol, the ``@tool`` decorator, execution options, secrets, the executor."""

from autonomic.tools.base import FunctionTool, Tool, ToolContext, tool
from autonomic.tools.options import ToolOptions
from autonomic.tools.secrets import EnvSecrets, FileSecrets, SecretsProvider

__all__ = [
    "EnvSecrets",
    "FileSecrets",
    "FunctionTool",
    "SecretsProvider",
    "Tool",
    "ToolContext",
    "ToolOptions",
    "tool",
]
