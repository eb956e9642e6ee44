"""The loop monitor: each pattern as plain data, no false alarm on legitimate runs, and the
warn → nudge → stop escalation through the runtime."""

from __future__ import annotations

import asyncio
import random

import pytest

from autonomic import (
    Agent,
    FunctionModel,
    ModelRequest,
    ReplayDivergence,
    Runtime,
    ScriptedModel,
    tool,
    tool_call,
)
from autonomic.events import GuardTripped, Suspended
from autonomic.guards.loops import LoopGuard, detect_loop
from autonomic.messages import Message, ToolCall
from autonomic.replay import replay_events
from autonomic.views import render_trace


def turn(name: str, thought: str = "", result: str = "ok", **args: object) -> list[Message]:
    call = ToolCall(f"c{random.random()}", name, dict(args))
    return [
        Message(role="assistant", content=thought, tool_calls=(call,)),
        Message(role="tool", content=result, tool_call_id=call.id, name=name),
    ]


def run_of(*turns: list[Message]) -> list[Message]:
    return [Message(role="user", content="do it"), *(m for t in turns for m in t)]


def test_identical_calls_escalate_with_the_repetition() -> None:
    assert detect_loop(run_of(*[turn("search", q="x")] * 2)) is None
    levels = [detect_loop(run_of(*[turn("search", q="x")] * n)) for n in (3, 4, 5)]
    assert [(loop.kind, loop.excess) for loop in levels if loop] == [
        ("repeated call", 0),
        ("repeated call", 1),
        ("repeated call", 2),
    ]


def test_a_b_a_b() -> None:
    turns = [turn("open", page="a"), turn("back")] * 3
    loop = detect_loop(run_of(*turns))
    assert loop is not None and loop.kind == "alternation" and "'open'/'back'" in loop.detail


def test_the_same_error_again_and_again() -> None:
    turns = [turn("fetch", result=f"Error: timeout after {i}s", url=f"u{i}") for i in range(3)]
    loop = detect_loop(run_of(*turns))
    assert loop is not None and loop.kind == "repeated error"


def test_monologue() -> None:
    talk = [Message(role="assistant", content=f"hmm {i}") for i in range(4)]
    loop = detect_loop([Message(role="user", content="go"), *talk])
    assert loop is not None and loop.kind == "monologue"


def test_near_duplicate_thoughts_by_words_or_by_an_embedder() -> None:
    thoughts = [
        Message(role="assistant", content="I should check the weather in Paris today"),
        Message(role="user", content="?"),
        Message(role="assistant", content="I should check the weather in Paris today."),
        Message(role="user", content="?"),
        Message(role="assistant", content="i should check the weather in paris today"),
    ]
    loop = detect_loop(thoughts, monologue=10)
    assert loop is not None and loop.kind == "near-duplicate thoughts"
    same = detect_loop(thoughts, monologue=10, embed=lambda t: [1.0, 0.0])
    assert same is not None and same.kind == "near-duplicate thoughts"
    texts = [m.content for m in thoughts]
    apart = detect_loop(thoughts, monologue=10, embed=lambda t: [float(t == x) for x in texts])
    assert apart is None


def test_a_tool_declared_identity_key_is_honoured() -> None:
    turns = [turn("search", q=q) for q in ("Paris", "paris ", "PARIS")]
    assert detect_loop(run_of(*turns)) is None
    loop = detect_loop(run_of(*turns), identities={"search": lambda a: str(a["q"]).strip().lower()})
    assert loop is not None and loop.kind == "repeated call"


def legitimate_runs() -> list[list[Message]]:
    """Runs that use one tool many times with different arguments, with boilerplate
    thoughts, alternating tools over different items, and varied errors. (The same call
    three times in a row is a loop even when it fails differently: retrying is the
    tool's job.)"""
    rng = random.Random(3)
    runs = []
    for n in range(40):
        kind = n % 4
        if kind == 0:  # paging
            turns = [turn("read_page", "Reading the next page.", page=i) for i in range(12)]
        elif kind == 1:  # many searches
            turns = [turn("search", "Let me search.", q=f"topic {rng.random()}") for _ in range(10)]
        elif kind == 2:  # search → open, over different results
            turns = [
                t
                for i in range(6)
                for t in (turn("search", q=f"q{i}"), turn("open", url=f"https://x.example/{i}"))
            ]
        else:  # mirrors tried one after another, failing differently, then success
            errors = ("Error: timeout", "Error: 503 busy", "Error: DNS failure", "ok")
            turns = [
                turn("fetch", result=e, url=f"https://m{i}.example") for i, e in enumerate(errors)
            ]
        runs.append(run_of(*turns))
    return runs


def test_no_false_alarm_on_legitimate_same_tool_runs() -> None:
    corpus = legitimate_runs()
    assert len(corpus) == 40
    for messages in corpus:
        for end in range(2, len(messages) + 1):  # judged before every model call
            assert detect_loop(messages[:end]) is None, messages[:end]


@tool(idempotent=True)
def status(job: str) -> str:
    "The job's status."
    return "still running"


async def test_warn_then_nudge_then_stop_through_the_runtime() -> None:
    prompts: list[ModelRequest] = []

    def stubborn(request: ModelRequest) -> object:
        prompts.append(request)
        return tool_call("status", job="42")

    agent = Agent(
        name="looper",
        model=FunctionModel(stubborn),
        tools=[status],
        guards=[LoopGuard()],
        max_steps=20,
    )
    async with Runtime("memory://") as rt:
        run = await rt.start(agent, "wait for job 42")
        result = await run.wait(check=False)
        stored = [e async for e in rt.events(run.run_id, follow=False)]
    assert result.status == "failed" and "loops: stopped: repeated call" in (result.error or "")
    trips = [e.event for e in stored if isinstance(e.event, GuardTripped)]
    assert [t.detail.split(":")[0] for t in trips] == ["warned", "nudged to re-plan", "stopped"]
    assert len(prompts) == 5  # three calls, then the warned and the nudged one
    assert prompts[3].messages[-1].content.startswith("[loop monitor] You seem")
    assert "re-plan" in prompts[4].messages[-1].content
    # the nudge is made hotter; every other call keeps the model's own temperature
    assert [p.temperature for p in prompts] == [None, None, None, None, 1.0]
    assert "(at temperature 1)" in trips[1].detail
    trace = render_trace(stored)
    assert "loops" in trace and "stopped" in trace
    assert replay_events(run.run_id, stored, agent).status == "failed"  # no divergence


async def test_pause_waits_for_a_person_and_then_watches_again() -> None:
    calls: list[int] = []

    def stubborn(request: ModelRequest) -> object:
        calls.append(1)
        return tool_call("status", job="42")

    agent = Agent(
        name="looper-paused",
        model=FunctionModel(stubborn),
        tools=[status],
        guards=[LoopGuard(on_stuck="pause")],
        max_steps=50,
    )
    async with Runtime("memory://") as rt:
        run = await rt.start(agent, "wait for job 42")
        first = await run.wait_until_waiting()
        assert first.status == "waiting" and len(calls) == 5
        await rt.signal(run.run_id, "unstick")
        seen = 0
        async with asyncio.timeout(10):
            async for stored in rt.events(run.run_id):  # warned, nudged, paused again
                seen += isinstance(stored.event, Suspended)
                if seen == 2:
                    break
        second = await run.wait_until_waiting()
        assert second.status == "waiting" and len(calls) == 8
        stored = [e async for e in rt.events(run.run_id, follow=False)]
        await run.cancel()
    trips = [e.event.detail.split(":")[0] for e in stored if isinstance(e.event, GuardTripped)]
    assert trips == ["warned", "nudged to re-plan", "paused"] * 2


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="repeat >= 2"):
        LoopGuard(repeat=1)
    with pytest.raises(ValueError, match="on_stuck"):
        LoopGuard(on_stuck="sleep")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nudge_temperature"):
        LoopGuard(nudge_temperature=5.0)


async def test_a_childs_replay_keeps_the_loop_guard_it_inherited() -> None:
    """The child ran under its caller's loop monitor, so its replay must too."""
    worker = Agent(
        name="poller",
        model=FunctionModel(lambda request: tool_call("status", job="42")),
        tools=[status],
        max_steps=20,
    )
    boss = Agent(
        name="boss",
        model=ScriptedModel([tool_call("poller", goal="wait for job 42"), "gave up"]),
        tools=[worker.as_tool()],
        guards=[LoopGuard()],
    )
    async with Runtime("memory://", agents=[boss, worker]) as rt:
        run = await rt.start(boss, "go")
        assert (await run.wait()).answer == "gave up"
        [child] = await rt.list_runs(parent_run_id=run.run_id)
        stored = [e async for e in rt.events(child.run_id, follow=False)]
        replayed = await rt.replay(child.run_id)
    assert any(isinstance(e.event, GuardTripped) and e.event.guard == "loops" for e in stored)
    assert replayed.status == "failed" and replayed.seq == stored[-1].seq
    with pytest.raises(ReplayDivergence):  # without the inherited guard it decides otherwise
        replay_events(child.run_id, stored, worker)
