"""What only a network bus does: take over what a dead member held, say clearly when its
broker is down, ride out a broker restart, and carry wake-ups between runtimes."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from autonomic import Agent, ConfigError, Runtime, ScriptedModel, tool, tool_call
from autonomic.bus import open_bus
from autonomic.loader import read_events
from autonomic.worker import Worker
from bus_kinds import Broker, bus_for, forget, free_port

NETWORK = ["redis", "nats"]


async def _until(sub: object, count: int, deadline_s: float = 20.0) -> list[str]:
    got: list[str] = []
    async with asyncio.timeout(deadline_s):
        while len(got) < count:
            message = await sub.next(1.0)  # type: ignore[attr-defined]
            if message is not None:
                got.append(message)
    return got


async def _until_seen(sub: object, wanted: set[str], deadline_s: float = 30.0) -> list[str]:
    """Distinct messages in the order first heard, until all of ``wanted`` were (an empty
    one is a wake-up after a reconnect, not a message)."""
    got: list[str] = []
    async with asyncio.timeout(deadline_s):
        while not wanted <= set(got):
            message = await sub.next(1.0)  # type: ignore[attr-defined]
            if message and message not in got:
                got.append(message)
    return got


@pytest.mark.parametrize("kind", NETWORK)
async def test_a_message_a_dead_member_held_goes_to_another(kind: str) -> None:
    async with bus_for(kind, "&claim_idle_s=0.5") as bus:
        dead = bus.subscribe("jobs", group="g")
        await dead.__aenter__()  # it takes a message, then dies: it never acknowledges
        async with bus.subscribe("jobs", group="g") as survivor:
            bus.publish("jobs", "only")
            taken = await dead.next(5.0)
            assert taken == "only"
            assert await _until(survivor, 1) == ["only"]


@pytest.mark.parametrize("kind", NETWORK)
async def test_a_broker_that_is_down_is_one_clear_error(kind: str, tmp_path: Path) -> None:
    url = f"{kind}://127.0.0.1:{free_port()}"
    bus = open_bus(url)
    with pytest.raises(ConfigError) as refused:
        await bus.open()
    message = str(refused.value)
    assert message.startswith(f"cannot reach the {'Redis' if kind == 'redis' else 'NATS'} bus")
    assert url in message and "\n" not in message
    runtime = Runtime(f"sqlite:///{tmp_path / 'runs.db'}", bus=url)
    with pytest.raises(ConfigError, match="cannot reach"):
        await runtime.__aenter__()
    async with Runtime(runtime.store) as again:  # the store was closed, and opens again
        assert await again.list_runs() == []


@pytest.mark.parametrize("kind", NETWORK)
def test_the_cli_says_so_in_one_line(kind: str) -> None:
    url = f"{kind}://127.0.0.1:{free_port()}"
    cli = subprocess.run(
        [sys.executable, "-m", "autonomic", "--store", "memory://", "--bus", url, "runs", "list"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 2
    assert cli.stderr.count("\n") == 1 and "cannot reach" in cli.stderr


@contextlib.contextmanager
def private_server(kind: str, port: int, data: Path) -> Iterator[Broker]:
    broker = Broker(kind, data, port)
    broker.start()
    try:
        yield broker
    finally:
        broker.kill(signal.SIGTERM)


@pytest.mark.parametrize("kind", NETWORK)
async def test_the_bus_rides_out_a_broker_restart(kind: str, tmp_path: Path) -> None:
    port = free_port()
    url = f"{kind}://127.0.0.1:{port}?prefix=restart"
    data = tmp_path / "data"
    with private_server(kind, port, data):
        bus = open_bus(url)
        await bus.open()
        follower = await bus.subscribe("run:x").__aenter__()
        member = await bus.subscribe("run:x", group="g").__aenter__()
        bus.publish("run:x", "1")
        assert await _until(follower, 1) == ["1"]
        assert await _until(member, 1) == ["1"]
    bus.publish("run:x", "2")  # the broker is down: held, never raised
    await asyncio.sleep(0.5)
    with private_server(kind, port, data):
        bus.publish("run:x", "3")
        # at least once: a publish retried across the outage may arrive twice, in order
        assert await _until_seen(follower, {"2", "3"}) == ["2", "3"]
        assert await _until_seen(member, {"2", "3"}) == ["2", "3"]
        await follower.__aexit__(None, None, None)
        await member.__aexit__(None, None, None)
        await bus.close()


@pytest.mark.parametrize("kind", NETWORK)
async def test_a_bus_closed_while_its_broker_is_down_lets_go(kind: str, tmp_path: Path) -> None:
    """Nothing of it is left reconnecting in the background (NATS refuses to drain a
    connection that is reconnecting: the bus must close it instead)."""
    with private_server(kind, free_port(), tmp_path / "data") as broker:
        bus = open_bus(f"{broker.url}?prefix=gone")
        await bus.open()
        bus.publish("run:x", "sent")
        await asyncio.sleep(0.2)
    bus.publish("run:x", "held")  # the broker is down
    await asyncio.sleep(0.6)
    await bus.close()
    await asyncio.sleep(1.0)  # a client still reconnecting would have tried again by now
    assert asyncio.all_tasks() == {asyncio.current_task()}


@pytest.mark.parametrize("kind", NETWORK)
async def test_a_follower_hears_of_what_was_published_while_it_reconnected(
    kind: str, tmp_path: Path
) -> None:
    """A hint sent while a follower was still reconnecting reaches it (Redis: its stream
    kept the message) or wakes it anyway (NATS: a core subscription never sees it)."""
    port, data = free_port(), tmp_path / "data"
    with private_server(kind, port, data) as broker:
        bus = open_bus(f"{broker.url}?prefix=missed")
        await bus.open()
        follower = await bus.subscribe("ready").__aenter__()
    with private_server(kind, port, data) as broker:
        other = open_bus(f"{broker.url}?prefix=missed")
        await other.open()  # connected at once, while the follower's client waits to retry
        other.publish("ready", "r1")
        await other.close()  # (sends what waits first)
        assert await follower.next(5.0) in ("r1", "")
        await follower.__aexit__(None, None, None)
        await bus.close()


@pytest.mark.parametrize("kind", NETWORK)
async def test_the_bus_works_again_after_its_broker_restarts_empty(
    kind: str, tmp_path: Path
) -> None:
    """A broker that comes back without its data (no persistence, a new volume) has lost
    the NATS stream and the Redis groups: the bus makes them again and carries on."""
    port, data = free_port(), tmp_path / "data"
    with private_server(kind, port, data) as broker:
        bus = open_bus(f"{broker.url}?prefix=empty")
        await bus.open()
        follower = await bus.subscribe("run:x").__aenter__()
        member = await bus.subscribe("run:x", group="g").__aenter__()
        bus.publish("run:x", "1")
        assert await _until(member, 1) == ["1"]
    shutil.rmtree(data)
    with private_server(kind, port, data):
        heard: dict[str, set[str]] = {"follower": set(), "member": set()}
        async with asyncio.timeout(30):  # hints published before a group is back are lost
            while not all("again" in got for got in heard.values()):
                bus.publish("run:x", "again")
                for name, sub in (("follower", follower), ("member", member)):
                    heard[name].add(await sub.next(0.5) or "")  # type: ignore[attr-defined]
        await follower.__aexit__(None, None, None)
        await member.__aexit__(None, None, None)
        await bus.close()


@pytest.mark.parametrize("kind", NETWORK)
async def test_a_subscription_entered_while_its_broker_is_down_works_once_it_is_back(
    kind: str, tmp_path: Path
) -> None:
    """Entering does not fail (a claim loop subscribing then would die): it subscribes
    when the broker is back."""
    port, data = free_port(), tmp_path / "data"
    with private_server(kind, port, data) as broker:
        bus = open_bus(f"{broker.url}?prefix=late")
        await bus.open()
    await asyncio.sleep(0.5)  # the client has seen it go
    async with asyncio.timeout(20):
        follower = await bus.subscribe("run:x").__aenter__()
        member = await bus.subscribe("run:x", group="g").__aenter__()
        assert await follower.next(0.2) is None and await member.next(0.2) is None
    with private_server(kind, port, data):
        heard: dict[str, set[str]] = {"follower": set(), "member": set()}
        async with asyncio.timeout(30):
            while not all("back" in got for got in heard.values()):
                bus.publish("run:x", "back")
                for name, sub in (("follower", follower), ("member", member)):
                    heard[name].add(await sub.next(0.5) or "")
        await follower.__aexit__(None, None, None)
        await member.__aexit__(None, None, None)
        await bus.close()


@pytest.mark.parametrize("kind", NETWORK)
async def test_next_returns_by_its_wait_while_the_broker_hangs(kind: str, tmp_path: Path) -> None:
    """A broker that stops answering (SIGSTOP: connections stay open) must not hold a
    subscriber past its wait, or a claim loop would stop polling (it took 5.5 s on Redis)."""
    with private_server(kind, free_port(), tmp_path / "data") as broker:
        bus = open_bus(f"{broker.url}?prefix=hung")
        await bus.open()
        follower = await bus.subscribe("run:x").__aenter__()
        member = await bus.subscribe("run:x", group="g").__aenter__()
        assert broker.process is not None
        broker.process.send_signal(signal.SIGSTOP)
        try:
            async with asyncio.timeout(4):
                assert await follower.next(0.5) is None
                assert await member.next(0.5) is None
        finally:
            broker.process.send_signal(signal.SIGCONT)
        await follower.__aexit__(None, None, None)
        await member.__aexit__(None, None, None)
        await bus.close()


async def test_a_worker_waits_for_a_bus_broker_that_is_not_up_yet(tmp_path: Path) -> None:
    """As for its store: a worker started while its broker restarts is not lost."""
    port = free_port()
    agent = Agent(name="calc", model=ScriptedModel(["5"]))
    url = f"nats://127.0.0.1:{port}?prefix=late"
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    worker = Worker(store, [agent], bus=url, connect_s=30)
    serving = asyncio.create_task(worker.run())
    await asyncio.sleep(1.0)
    assert not serving.done()
    with private_server("nats", port, tmp_path / "data"):
        client = Runtime(store, wake=False, bus=url)
        async with client, asyncio.timeout(30):
            run = await client.submit(agent, "What is 2+3?")
            assert (await run.wait()).answer == "5"
        worker.stop()
        await serving


@tool
def add(a: int, b: int) -> int:
    "Add two integers."
    return a + b


@pytest.fixture(params=NETWORK)
async def shared_bus(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    from bus_kinds import bus_url

    prefix = f"rt{free_port()}"
    yield bus_url(request.param, prefix)
    await forget(request.param, prefix)


async def test_a_run_submitted_in_one_runtime_is_woken_and_followed_in_another(
    shared_bus: str, tmp_path: Path
) -> None:
    """The worker polls only once a minute: only the bus can wake it in time."""
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    agent = Agent(name="calc", model=ScriptedModel([tool_call("add", a=2, b=3), "5"]), tools=[add])
    worker = Runtime(store, agents=[agent], bus=shared_bus, poll_s=60)
    client = Runtime(store, wake=False, bus=shared_bus)
    async with worker, client:
        await asyncio.sleep(0.5)  # the worker has claimed what was ready, and now waits
        async with asyncio.timeout(20):
            run = await client.submit(agent, "What is 2+3?")
            result = await run.wait()
            followed = [stored.seq async for stored in client.events(run.run_id)]
        assert result.answer == "5"
        assert followed == list(range(1, result.events + 1))
        assert run.run_id not in client.supervisor.tasks


# On NATS this also checks that no reconnect attempt leaks its socket (nats-py 2.16 does
# unless NatsBus closes it): pytest turns an unclosed socket into an error.
@pytest.mark.parametrize("kind", NETWORK)
async def test_runs_finish_while_their_bus_broker_restarts(kind: str, tmp_path: Path) -> None:
    """Degraded but correct: with the broker away, hints wait in the outbox and the
    runtimes poll; every run ends, and its log is whole."""
    port = free_port()
    url = f"{kind}://127.0.0.1:{port}?prefix=chaos"
    data = tmp_path / "data"
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    script: list[object] = [tool_call("add", a=i, b=1) for i in range(6)]
    agent = Agent(name="calc", model=ScriptedModel([*script, "done"], latency=0.05), tools=[add])
    with contextlib.ExitStack() as servers:
        first = contextlib.ExitStack()
        first.enter_context(private_server(kind, port, data))
        worker = Runtime(store, agents=[agent], bus=url, poll_s=0.3)
        client = Runtime(store, wake=False, bus=url)
        async with worker, client:
            runs = [await client.submit(agent, f"job {i}") for i in range(8)]
            await asyncio.sleep(0.3)
            first.close()  # the broker goes away mid-run
            await asyncio.sleep(1.0)
            servers.enter_context(private_server(kind, port, data))
            async with asyncio.timeout(90):
                results = [await run.wait() for run in runs]
            logs = [[s.seq for s in await read_events(client.store, r.run_id)] for r in runs]
    assert [r.answer for r in results] == ["done"] * len(runs)
    assert all(seqs == list(range(1, len(seqs) + 1)) for seqs in logs)
