"""The governance board: each role's output is an event, compliance applies the tool
policy and fixed rules, a no-go goes back to the proposer, and a go runs the actions."""

from __future__ import annotations

from autonomic import Agent, RunResult, Runtime, ScriptedModel, tool
from autonomic.guards.policy import ToolPolicy
from autonomic.loader import StoredEvent, read_events
from autonomic.store.base import Store
from autonomic.strategies.governance import BoardDecided, BoardSpoke, GovernanceBoard
from autonomic.views import render_trace

PAID: list[int] = []


@tool
def pay(amount: int) -> str:
    "Pay a supplier."
    PAID.append(amount)
    return f"paid {amount}"


POLICY = ToolPolicy(rules={"pay": lambda a: a["amount"] <= 1000 or "over the 1000 limit"})


def no_secrets(text: str) -> str | None:
    return "it mentions a password" if "password" in text.lower() else None


async def _run(store: Store, script: list[str]) -> tuple[RunResult, list[StoredEvent]]:
    agent = Agent(
        name="board",
        model=ScriptedModel(script),
        tools=[pay],
        guards=[POLICY],
        strategy=GovernanceBoard(policy=POLICY, rules=[no_secrets]),
    )
    async with Runtime(store) as rt:
        run = await rt.start(agent, "Pay the supplier for March")
        result = await run.wait(check=False)
        events = await read_events(rt.store, run.run_id)
        replayed = await rt.replay(run.run_id, agent=agent)
    assert replayed.status == result.status
    return result, events


def _board(events: list[StoredEvent]) -> list[tuple[str, int, bool]]:
    return [
        (e.event.role, e.event.round, e.event.ok)
        if isinstance(e.event, BoardSpoke)
        else ("decided", e.event.round, e.event.go)
        for e in events
        if isinstance(e.event, BoardSpoke | BoardDecided)
    ]


async def test_a_go_runs_the_proposed_actions(store: Store) -> None:
    PAID.clear()
    proposal = 'Pay 800 now.\n#E1 = pay[{"amount": 800}]'
    result, events = await _run(store, [proposal, "Worst case: a duplicate invoice.", "GO"])
    assert result.status == "completed" and PAID == [800]
    assert result.answer is not None and "→ paid 800" in result.answer
    assert _board(events) == [
        ("proposer", 1, True),
        ("advocate", 1, True),
        ("compliance", 1, True),
        ("chair", 1, True),
        ("decided", 1, True),
    ]
    assert "⚖ board decided (round 1): GO" in render_trace(events)


async def test_compliance_refuses_without_the_chair_and_the_proposer_revises(
    store: Store,
) -> None:
    PAID.clear()
    script = [
        'Pay it all.\n#E1 = pay[{"amount": 5000}]',
        "Worst case: we overpay.",
        'Pay the first instalment.\n#E1 = pay[{"amount": 900}]',
        "Worst case: the second instalment is late.",
        "NO-GO: wait for the audit",
    ]
    result, events = await _run(store, script)
    assert result.status == "failed" and PAID == []
    assert result.error == "the board said no-go after 2 round(s): wait for the audit"
    decisions = [e.event for e in events if isinstance(e.event, BoardDecided)]
    assert decisions[0].reason == "compliance: #E1 pay: over the 1000 limit"
    assert _board(events)[2:5] == [
        ("compliance", 1, False),
        ("decided", 1, False),
        ("proposer", 2, True),
    ]


async def test_a_fixed_text_rule_is_compliance_too(store: Store) -> None:
    script = ["Email the password.", "A leak.", "Post the password.", "A leak by post."]
    result, events = await _run(store, script)
    assert result.status == "failed" and result.model_calls == 4  # the chair never asked
    assert result.error == (
        "the board said no-go after 2 round(s): compliance: it mentions a password"
    )
    assert sum(isinstance(e.event, BoardDecided) for e in events) == 2
