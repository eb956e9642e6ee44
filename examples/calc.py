"""A tiny agent for trying autonomic without any model server or API key.

Its "model" is scripted: it asks for the ``add`` tool, then answers. Swap in a real model
(``model="openai:gpt-4o-mini"``, ``model="local"``) and the rest stays the same.

    autonomic run --agent examples/calc.py:agent "What is 2+3?"
"""

from autonomic import Agent, ScriptedModel, tool, tool_call


@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first number
        b: the second number
    """
    return a + b


agent = Agent(
    name="calc",
    instructions="You are a careful calculator. Use the add tool for arithmetic.",
    model=ScriptedModel([tool_call("add", a=2, b=3), "2 + 3 = 5"]),
    tools=[add],
)
