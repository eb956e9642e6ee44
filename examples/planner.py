"""Planning agents you can try without a model server: ReWOO and the DAG planner.

Their "model" is scripted: it writes a plan whose independent steps run together, then
the answer. Run one and look at its plan, its steps and its KPIs:

    autonomic run --agent examples/planner.py:rewoo "Which is more populous, Paris or Rome?"
    autonomic runs trace <run id>      # ◆ plan 1 (rewoo, 3 steps): ... and the KPIs
"""

from autonomic import Agent, DAGPlanner, ReWOO, ScriptedModel, tool

POPULATION = {"paris": 2102, "rome": 2873}


@tool(idempotent=True)
def population(city: str) -> int:
    """Population of a city, in thousands.

    Args:
        city: the city's name
    """
    return POPULATION[city.strip().lower()]


@tool(idempotent=True)
def larger(a: int, b: int) -> int:
    """The larger of two numbers.

    Args:
        a: one number
        b: the other
    """
    return max(a, b)


PLAN = """Plan: look both cities up (at the same time)
#E1 = population[{"city": "Paris"}]
#E2 = population[{"city": "Rome"}]
Plan: compare them
#E3 = larger[{"a": "#E1", "b": "#E2"}]"""

rewoo = Agent(
    name="rewoo-demo",
    model=ScriptedModel([PLAN, "Rome (2,873 thousand people)"]),
    tools=[population, larger],
    strategy=ReWOO(),
)

dag = Agent(
    name="dag-demo",
    model=ScriptedModel([PLAN, "Answer: Rome (2,873 thousand people)"]),
    tools=[population, larger],
    strategy=DAGPlanner(),
)
