"""An agent whose tools come from an MCP server. Needs ``pip install "autonomic[mcp]"``.

    autonomic run --agent examples/mcp_agent.py:agent "What is 2+3?"

The agent is defined at import time, as a process that resumes one of its runs must be
able to rebuild it: ``load()`` lists the server's tools here and now, and the tools
connect to the server when first used, in the event loop that runs them.
"""

import sys

from autonomic import Agent, ScriptedModel, tool_call
from autonomic.tools.mcp import mcp_tools, stdio

# The server is usually someone else's program (started the same way with its own command,
# or reached with http("https://...")); here it is a few lines of the MCP SDK.
CALCULATOR = '''
from mcp.server.mcpserver import MCPServer

server = MCPServer("calculator")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


server.run("stdio")
'''

calculator = mcp_tools(stdio(sys.executable, "-c", CALCULATOR)).load()

agent = Agent(
    name="mcp-calc",
    instructions="You are a careful calculator. Use the add tool for arithmetic.",
    model=ScriptedModel([tool_call("add", a=2, b=3), "2 + 3 = 5"]),
    tools=calculator,
)
