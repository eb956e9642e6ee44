"""Tools: the protocol, the ``@tool`` decorator, execution options, secrets, the executor."""

from autonomic.tools.approval import ApprovalCheck, approval_check, needs_approval
from autonomic.tools.base import TOOL_EVENTS, FunctionTool, Tool, ToolContext, tool
from autonomic.tools.options import ToolOptions
from autonomic.tools.secrets import EnvSecrets, FileSecrets, SecretsProvider, redact

__all__ = [
    "TOOL_EVENTS",
    "ApprovalCheck",
    "EnvSecrets",
    "FileSecrets",
    "FunctionTool",
    "SecretsProvider",
    "Tool",
    "ToolContext",
    "ToolOptions",
    "approval_check",
    "needs_approval",
    "redact",
    "tool",
]
