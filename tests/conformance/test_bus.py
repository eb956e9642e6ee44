"""The bus contract, run against every backend (in process; the real Redis and NATS).

Every subscriber hears every message; a group's members share its messages, each going
to one of them; a message a member took and never acknowledged goes to another; order
holds per topic; publishing never fails the caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from autonomic.bus import Bus
from bus_kinds import BUS_KINDS, bus_for


@pytest.fixture(params=BUS_KINDS)
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    async with bus_for(request.param) as b:
        yield b


async def _drain(sub: object, wait_s: float = 0.3) -> list[str]:
    got: list[str] = []
    while (message := await sub.next(wait_s)) is not None:  # type: ignore[attr-defined]
        got.append(message)
    return got


async def _until(sub: object, count: int, deadline_s: float = 10.0) -> list[str]:
    got: list[str] = []
    async with asyncio.timeout(deadline_s):
        while len(got) < count:
            message = await sub.next(1.0)  # type: ignore[attr-defined]
            if message is not None:
                got.append(message)
    return got


async def test_every_subscriber_hears_every_message_in_order(bus: Bus) -> None:
    async with (
        bus.subscribe("run:a") as first,
        bus.subscribe("run:a") as second,
        bus.subscribe("run:b") as other,
    ):
        for i in range(50):
            bus.publish("run:a", str(i))
        expected = [str(i) for i in range(50)]
        assert await _until(first, 50) == expected
        assert await _until(second, 50) == expected
        assert await other.next(0.2) is None


async def test_a_subscriber_hears_only_what_comes_after_it(bus: Bus) -> None:
    bus.publish("run:c", "before")
    await asyncio.sleep(0.2)
    async with bus.subscribe("run:c") as sub:
        bus.publish("run:c", "after")
        assert await _until(sub, 1) == ["after"]
        assert await sub.next(0.2) is None


async def test_a_group_shares_messages_among_its_members(bus: Bus) -> None:
    async with (
        bus.subscribe("jobs", group="g") as one,
        bus.subscribe("jobs", group="g") as two,
        bus.subscribe("jobs") as everything,
    ):
        for i in range(40):
            bus.publish("jobs", str(i))
        assert await _until(everything, 40) == [str(i) for i in range(40)]
        got_one, got_two = await asyncio.gather(_drain(one, 1.0), _drain(two, 1.0))
    assert sorted(got_one + got_two, key=int) == [str(i) for i in range(40)]
    assert got_one == sorted(got_one, key=int) and got_two == sorted(got_two, key=int)


async def test_what_a_member_left_unread_goes_to_another(bus: Bus) -> None:
    async with bus.subscribe("tasks", group="workers") as survivor:
        async with bus.subscribe("tasks", group="workers") as leaver:
            for i in range(20):
                bus.publish("tasks", str(i))
            await asyncio.sleep(0.5)
            taken = await leaver.next(2.0)
        assert taken is not None
        rest = await _drain(survivor, 1.5)
    assert taken not in rest
    assert sorted([taken, *rest], key=int) == [str(i) for i in range(20)]


async def test_publishing_without_subscribers_and_odd_topics_never_fails(bus: Bus) -> None:
    bus.publish("nobody-listens", "x" * 10_000)
    async with bus.subscribe("run:with.dots*and>wild cards") as sub:
        bus.publish("run:with.dots*and>wild cards", "ok")
        assert await _until(sub, 1) == ["ok"]


async def test_open_and_close_nest(bus: Bus) -> None:
    await bus.open()
    await bus.close()  # still open for the fixture's own opening
    async with bus.subscribe("run:n") as sub:
        bus.publish("run:n", "still")
        assert await _until(sub, 1) == ["still"]


async def test_the_runtime_opens_a_bus_named_by_url(tmp_path: object) -> None:
    from autonomic import Runtime
    from autonomic.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown bus URL 'kafka://x'"):
        Runtime("memory://", bus="kafka://x")
    runtime = Runtime("memory://", bus="local://")
    async with runtime, runtime.bus.subscribe("run:r") as sub:
        runtime.bus.publish("run:r", "hi")
        assert await sub.next(1.0) == "hi"
