"""The agents the service tests serve (importable by name: ``autonomic serve --agents
service_agents``).

``calc`` answers at once; ``payer`` asks a person to approve a payment, then answers;
``chatty`` calls ``note`` in waves of ten for CHATTY_TURNS turns (22 events a turn), so
its log is long; ``slow`` takes a while per turn, so a run can be watched live;
``frugal`` runs out of tool calls and waits for a budget top-up; ``private`` masks PII
and answers with what its model was shown (kept in PROMPTS).
"""

from __future__ import annotations

import os

from autonomic import Agent, FunctionModel, ModelRequest, ScriptedModel, tool, tool_call
from autonomic.guards.budget import Budget
from autonomic.guards.pii import PIIGuard


@tool(requires_approval=True)
def pay(account: str, amount: int) -> str:
    "Pay an amount to an account (a person must approve it)."
    return f"paid {amount} to {account}"


@tool
def note(i: int) -> str:
    "Note a number."
    return f"noted {i}"


CHATTY_TURNS = int(os.environ.get("CHATTY_TURNS", "20"))
CHATTY_LATENCY = float(os.environ.get("CHATTY_LATENCY", "0"))

calc = Agent("calc", model=ScriptedModel(["5"]))
payer = Agent(
    "payer",
    model=ScriptedModel([tool_call("pay", account="acme", amount=3), "paid"]),
    tools=[pay],
)
chatty = Agent(
    "chatty",
    model=ScriptedModel(
        [[tool_call("note", i=10 * t + k) for k in range(10)] for t in range(CHATTY_TURNS)]
        + ["noted everything"],
        latency=CHATTY_LATENCY,
    ),
    tools=[note],
    max_steps=CHATTY_TURNS + 5,
    max_wall_s=3600,
)
slow = Agent(
    "slow",
    model=ScriptedModel([tool_call("note", i=i) for i in range(5)] + ["slowly done"], latency=0.2),
    tools=[note],
)
frugal = Agent(
    "frugal",
    model=ScriptedModel([tool_call("note", i=i) for i in range(4)] + ["counted"] * 3),
    tools=[note],
    guards=[Budget(tool_calls=2)],
)

PROMPTS: list[str] = []


def _echo(request: ModelRequest) -> str:
    seen = request.messages[-1].content
    PROMPTS.append(seen)
    return f"Noted: {seen}"


private = Agent("private", model=FunctionModel(_echo), guards=[PIIGuard()])
