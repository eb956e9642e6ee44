"""The blackboard: compare-and-set with no lost update under 8 concurrent writers,
per-agent write permissions, runs woken by a key's change, and a controller that picks
specialists from the board (and stops a selector that would loop)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from autonomic import Agent, Runtime, ScriptedModel, tool_call
from autonomic.blackboard import Blackboard, VersionConflict, board_signal
from autonomic.errors import ConfigError
from autonomic.state import RunState
from autonomic.steps import Await, Finish, Signal, Step
from autonomic.store import open_store
from autonomic.store.base import Store
from autonomic.strategies.base import AgentView
from autonomic.strategies.controller import BoardController, board_view

WRITERS, INCREMENTS = 8, 25


async def _increment(store: Store, times: int) -> int:
    """Add 1 to the counter ``times`` times by compare-and-set; the races it lost."""
    lost = 0
    for _ in range(times):
        while True:
            entry = (await store.board_entries("root")).get("n")  # type: ignore[attr-defined]
            value, version = (json.loads(entry.value), entry.version) if entry else (0, 0)
            written, _ = await store.board_put(  # type: ignore[attr-defined]
                "root", "n", json.dumps(value + 1).encode(), "w", version, 0.0
            )
            if written:
                break
            lost += 1
    return lost


async def test_compare_and_set_loses_no_update_with_8_concurrent_writers(store: Store) -> None:
    await asyncio.gather(*(_increment(store, INCREMENTS) for _ in range(WRITERS)))
    entry = (await store.board_entries("root"))["n"]  # type: ignore[attr-defined]
    assert (json.loads(entry.value), entry.version) == (WRITERS * INCREMENTS,) * 2


async def test_writers_on_separate_sqlite_connections_lose_no_update(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'board.db'}"
    stores = [open_store(url) for _ in range(WRITERS)]
    for s in stores:
        await s.open()
    try:
        raced = await asyncio.gather(*(_increment(s, INCREMENTS) for s in stores))
        entry = (await stores[0].board_entries("root"))["n"]  # type: ignore[attr-defined]
    finally:
        for s in stores:
            await s.close()
    assert json.loads(entry.value) == entry.version == WRITERS * INCREMENTS
    assert sum(raced) > 0  # the writers did race, and every lost race was retried


async def test_the_board_checks_versions_and_permissions(store: Store) -> None:
    board = Blackboard(writers={"researcher": ["facts."], "editor": [""]})
    async with Runtime(store) as rt:
        board.bind(rt)
        assert await board.write("r1", "facts.sky", "blue", writer="researcher", expected=0) == 1
        with pytest.raises(VersionConflict, match="at version 1, not 0"):
            await board.write("r1", "facts.sky", "grey", writer="researcher", expected=0)
        with pytest.raises(ConfigError, match="'researcher' may not write blackboard key 'draft'"):
            await board.write("r1", "draft", "x", writer="researcher")
        with pytest.raises(ConfigError, match="'intern' may not write"):
            await board.write("r1", "facts.sky", "x", writer="intern")
        await asyncio.gather(
            *(
                board.update("r1", "count", lambda n: (n or 0) + 1, writer="editor")
                for _ in range(WRITERS * 4)
            )
        )
        assert await board.read("r1") == {"count": WRITERS * 4, "facts.sky": "blue"}
        assert await board.read("r2") == {}


class WaitForGo:
    name = "wait-for-go"

    def next_step(self, state: RunState, agent: AgentView) -> Step:
        view = board_view(state)
        if "go" in view:
            return Finish(f"go = {view['go']}")
        return Await(Signal(board_signal("go")), reason="the go key")


async def test_a_run_waits_for_a_key_and_wakes_when_it_is_written(store: Store) -> None:
    board = Blackboard()
    agent = Agent(name="waiter", model=ScriptedModel([]), strategy=WaitForGo())
    async with Runtime(store) as rt:
        board.bind(rt)
        run = await rt.start(agent, "wait")
        assert (await run.wait_until_waiting()).status == "waiting"
        await board.write(run.run_id, "other", 1, writer="ops")  # not the key it waits for
        await board.write(run.run_id, "go", "now", writer="ops")
        result = await asyncio.wait_for(run.wait(), 10)
    assert result.answer == "go = now"


def team(board: Blackboard, pick: object, max_turns: int = 20) -> Agent:
    researcher = Agent(
        name="researcher",
        model=ScriptedModel(
            [tool_call("write_board", key="facts", value="the sky is blue", version=0), "done"]
        ),
        tools=board.tools("researcher"),
    )
    writer = Agent(
        name="writer",
        model=ScriptedModel(
            [
                tool_call("read_board"),
                tool_call("write_board", key="facts", value="overwritten", version=1),
                tool_call("write_board", key="draft", value="The sky is blue.", version=0),
                "done",
            ]
        ),
        tools=board.tools("writer"),
    )
    return Agent(
        name="controller",
        model=ScriptedModel([]),
        subagents=[researcher, writer],
        strategy=BoardController(
            pick,  # type: ignore[arg-type]
            answer=lambda view: str(view["draft"]),
            max_turns=max_turns,
        ),
    )


async def test_a_controller_picks_specialists_until_the_board_is_complete(
    store: Store,
) -> None:
    board = Blackboard(writers={"researcher": ["facts"], "writer": ["draft"]})

    def pick(view: dict[str, object]) -> str | None:
        return "researcher" if "facts" not in view else "writer" if "draft" not in view else None

    async with Runtime(store) as rt:
        board.bind(rt)
        run = await rt.start(team(board, pick), "Write a line about the sky")
        result = await asyncio.wait_for(run.wait(), 20)
        final = await board.read(run.run_id)
        writer_events = [e.event async for e in rt.events(f"{run.run_id}.2", follow=False)]
    assert result.answer == "The sky is blue."
    assert final == {"draft": "The sky is blue.", "facts": "the sky is blue"}
    refused = [getattr(e, "error", "") for e in writer_events if type(e).__name__ == "ActionFailed"]
    assert any("'writer' may not write blackboard key 'facts'" in r for r in refused)


async def test_a_selector_that_never_finishes_is_stopped(store: Store) -> None:
    board = Blackboard()
    async with Runtime(store) as rt:
        board.bind(rt)
        run = await rt.start(team(board, lambda view: "researcher", max_turns=3), "loop")
        result = await asyncio.wait_for(run.wait(check=False), 20)
    assert result.status == "failed"
    assert result.error == (
        "the controller picked 3 specialists without finishing (max_turns); "
        "last picks: researcher, researcher, researcher"
    )
