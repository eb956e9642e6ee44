"""The agent ``autonomic run "goal"`` uses when no ``--agent`` is given.

It lives in a module of its own so that a process resuming one of its runs can import it
by path, like any other agent. Its model is the one given with ``--model``, else the
configured default (``AUTONOMIC_MODEL``, or the embedded model).
"""

from autonomic.agent import Agent

__all__ = ["assistant"]

assistant = Agent(
    name="assistant",
    instructions="You are a helpful assistant. Answer briefly and accurately.",
    path="autonomic.assistant:assistant",
)
