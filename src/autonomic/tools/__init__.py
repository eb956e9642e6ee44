"""Tools: the protocol, the ``@tool`` decorator, and the executor that runs them."""

from autonomic.tools.base import FunctionTool, Tool, ToolContext, tool

__all__ = ["FunctionTool", "Tool", "ToolContext", "tool"]
