"""The critic: a second model approves, sends back or refuses a proposed action; its calls
are recorded under their own purpose, count with the run's usage, stay out of the acting
transcript, and replay without divergence."""

from __future__ import annotations

import json

from autonomic import Agent, FunctionModel, ModelRequest, Runtime, tool, tool_call
from autonomic.events import (
    ActionCompleted,
    BudgetReserved,
    GuardTripped,
    ModelCalled,
    ModelResponded,
)
from autonomic.guards import Budget
from autonomic.guards.base import Allow, Deny, RequireApproval
from autonomic.guards.budget import ledger_spent
from autonomic.guards.critic import CRITIC_PURPOSE, CriticGuard, verdict_of
from autonomic.guards.loops import LoopGuard
from autonomic.replay import replay_events

done: list[str] = []


@tool
def delete_all() -> str:
    "Delete everything."
    done.append("delete_all")
    return "deleted"


@tool
def archive(folder: str) -> str:
    "Archive a folder."
    done.append(f"archive {folder}")
    return "archived"


@tool(idempotent=True)
def look(folder: str) -> str:
    "List a folder (no side effects)."
    return "3 old files"


def test_the_critics_first_word_decides() -> None:
    assert verdict_of("APPROVE: fine") == Allow()
    assert verdict_of("**DENY**: not asked for") == Deny("not asked for")
    assert verdict_of("revise: archive only old files") == Deny("revise: archive only old files")
    assert isinstance(verdict_of("ESCALATE: money"), RequireApproval)
    assert isinstance(verdict_of("I think it is fine"), Deny)


def critic_answer(request: ModelRequest) -> str:
    proposal = json.loads(request.messages[-1].content.split("Proposed action: ")[1])
    if proposal["tool"] == "delete_all":
        return "DENY: the user asked to tidy up, not to delete everything"
    if proposal["arguments"].get("folder") != "old":
        return "REVISE: archive only the old folder"
    return "APPROVE: it is what the user asked"


def actor(request: ModelRequest) -> object:
    seen = [m for m in request.messages if m.role == "tool"]
    assert not any("APPROVE" in m.content for m in request.messages)  # no critic text
    plan = [
        tool_call("look", folder="inbox"),
        tool_call("delete_all"),
        tool_call("archive", folder="inbox"),
        tool_call("archive", folder="old"),
    ]
    return plan[len(seen)] if len(seen) < len(plan) else "Tidied up."


async def test_critic_denies_revises_and_approves_through_the_runtime() -> None:
    done.clear()
    critic = FunctionModel(critic_answer, name="critic-model")
    agent = Agent(
        name="tidy",
        model=FunctionModel(actor),
        tools=[look, delete_all, archive],
        guards=[Budget(tokens=10**6), CriticGuard(critic), LoopGuard()],
    )
    async with Runtime("memory://") as rt:
        run = await rt.start(agent, "tidy up my mail")
        result = await run.wait()
        stored = [e async for e in rt.events(run.run_id, follow=False)]
        state = await rt.state(run.run_id)
    assert result.answer == "Tidied up." and done == ["archive old"]
    assert critic.calls == 3  # the read-only look was not reviewed
    events = [s.event for s in stored]
    consults = [e for e in events if isinstance(e, ModelCalled) and e.purpose == CRITIC_PURPOSE]
    answers = [e for e in events if isinstance(e, ModelResponded) and e.purpose == CRITIC_PURPOSE]
    assert len(consults) == len(answers) == 3
    assert [a.text.split(":")[0] for a in answers] == ["DENY", "REVISE", "APPROVE"]
    trips = [e for e in events if isinstance(e, GuardTripped)]
    assert [t.guard for t in trips] == ["critic", "critic"]
    assert trips[1].detail.startswith("revise: archive only the old folder")
    # the critic's calls are counted, and kept out of the acting transcript
    assert state.model_calls == 5 + 3
    critic_tokens = sum(a.usage.total_tokens for a in answers)
    assert critic_tokens > 0 and ledger_spent(state)["tokens"] == state.usage.total_tokens
    assert len(state.transcripts[CRITIC_PURPOSE]) == 3
    assert not any("REVISE" in m.content and m.role == "assistant" for m in state.messages)
    completed = [e for e in events if isinstance(e, ActionCompleted)]
    assert len(completed) == 2
    replayed = replay_events(run.run_id, stored, agent)
    assert replayed.answer == "Tidied up."


async def test_a_critic_that_fails_denies() -> None:
    done.clear()

    def broken(request: ModelRequest) -> str:
        raise RuntimeError("critic down")

    def once(request: ModelRequest) -> object:
        tools = [m for m in request.messages if m.role == "tool"]
        return tool_call("delete_all") if not tools else tools[0].content

    agent = Agent(
        name="tidy-broken-critic",
        model=FunctionModel(once),
        tools=[delete_all],
        guards=[CriticGuard(FunctionModel(broken, name="down"))],
    )
    async with Runtime("memory://") as rt:
        run = await rt.start(agent, "delete it all")
        result = await run.wait()
    assert done == []
    assert "denied by critic: could not consult 'down'" in (result.answer or "")


async def test_a_critic_call_is_reserved_first_and_refused_when_it_does_not_fit() -> None:
    done.clear()

    def once(request: ModelRequest) -> object:
        tools = [m for m in request.messages if m.role == "tool"]
        # a long argument: the critic's prompt (which shows it) is far longer than the actor's
        return tool_call("archive", folder="x " * 2000) if not tools else tools[0].content

    def agent(name: str, tokens: int, critic: FunctionModel) -> Agent:
        budget = Budget(tokens=tokens, max_tokens=200)
        return Agent(
            name=name,
            model=FunctionModel(once),
            tools=[archive],
            guards=[budget, CriticGuard(critic)],
        )

    roomy = FunctionModel(critic_answer, name="critic-model")
    async with Runtime("memory://") as rt:
        run = await rt.start(agent("tidy-reserved-critic", 10**6, roomy), "archive it")
        await run.wait()
        events = [s.event async for s in rt.events(run.run_id, follow=False)]
    consult = next(
        i
        for i, e in enumerate(events)
        if isinstance(e, ModelCalled) and e.purpose == CRITIC_PURPOSE
    )
    reserved = events[consult + 1]  # recorded with the call, before it is made
    assert isinstance(reserved, BudgetReserved) and reserved.tokens > 1000
    assert roomy.calls == 1

    # room for the actor's calls, not for the critic's: it is not consulted, the call is refused
    stingy = FunctionModel(critic_answer, name="critic-model")
    async with Runtime("memory://") as rt:
        run = await rt.start(agent("tidy-stingy-critic", 1000, stingy), "archive it")
        await run.wait_until_waiting()  # the long call in its transcript: out of budget
        state = await run.state()
        await run.cancel()
    assert stingy.calls == 0 and done == []
    [refused] = [m.content for m in state.messages if m.role == "tool"]
    assert "could not consult 'critic-model': budget: token limit" in refused
