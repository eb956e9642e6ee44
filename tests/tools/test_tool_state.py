"""What surrounds a tool call: its breaker, its rate limit, the events it records, its
secrets file, its approval rule, and where its options live."""

from __future__ import annotations

import ast
import asyncio
import os
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from autonomic import Agent, ConfigError, Runtime, ScriptedModel, tool, tool_call
from autonomic.events import (
    ActionCompleted,
    ActionFailed,
    ActionRequested,
    EgressRequested,
    Event,
    RunCompleted,
)
from autonomic.models.base import ToolSpec
from autonomic.resilience.ratelimit import TokenBucket
from autonomic.tools import (
    TOOL_EVENTS,
    FileSecrets,
    Tool,
    ToolContext,
    ToolOptions,
    approval_check,
    needs_approval,
)
from autonomic.tools.executor import execute_action
from autonomic.tools.options import DEFAULT_OPTIONS

SRC = Path(__file__).resolve().parents[2] / "src" / "autonomic"


def request(name: str, **args: object) -> ActionRequested:
    return ActionRequested("act-1", "call-1", name, dict(args))


# -- C5: a cancelled probe --------------------------------------------------------------


async def test_a_cancelled_probe_does_not_leave_the_breaker_half_open() -> None:
    probing = asyncio.Event()

    @tool(breaker_threshold=1, breaker_reset_s=0)
    async def flaky(mode: str) -> str:
        "Fails, hangs or works, as told."
        if mode == "fail":
            raise RuntimeError("down")
        if mode == "hang":
            probing.set()
            await asyncio.sleep(3600)
        return "up"

    opened = await execute_action(flaky, request("flaky", mode="fail"), "run")
    assert isinstance(opened, ActionFailed) and opened.error == "RuntimeError: down"
    probe = asyncio.create_task(execute_action(flaky, request("flaky", mode="hang"), "run"))
    await probing.wait()
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    after = await execute_action(flaky, request("flaky", mode="ok"), "run")
    assert isinstance(after, ActionCompleted) and after.observation == "up"


# -- C6: the token bucket ---------------------------------------------------------------


class FakeTime:
    """A clock and a sleep that advances it, so rate limits are tested without waiting."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_one_bucket_limits_every_event_loop_together() -> None:
    fake = FakeTime()
    bucket = TokenBucket(rate=1.0, burst=2, clock=fake.clock, sleep=fake.sleep)

    async def three_at_once() -> list[float]:
        return list(await asyncio.gather(*(bucket.acquire() for _ in range(3))))

    assert asyncio.run(three_at_once()) == [0.0, 0.0, 1.0]  # the burst, then 1/rate apart
    # a second loop shares what the first used: no fresh burst, each call waits its turn
    assert asyncio.run(three_at_once()) == [1.0, 1.0, 1.0]
    assert fake.now == 4.0


async def test_a_cancelled_waiter_gives_its_token_back() -> None:
    fake = FakeTime()
    blocked = asyncio.Event()

    async def sleep_until_cancelled(seconds: float) -> None:
        blocked.set()
        await asyncio.Event().wait()

    bucket = TokenBucket(rate=1.0, burst=1, clock=fake.clock, sleep=sleep_until_cancelled)
    assert await bucket.acquire() == 0.0
    waiter = asyncio.create_task(bucket.acquire())
    await blocked.wait()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    fake.now = 1.0  # one token has come back by now; the cancelled waiter did not keep it
    assert await bucket.acquire() == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"rate": 0}, "rate must be a positive number"), ({"rate": 1, "burst": 0}, "burst must be")],
)
def test_bad_bucket_settings_are_config_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TokenBucket(**kwargs)


# -- C14: events a tool records -----------------------------------------------------------


def egress(action_id: str, host: str = "api.test") -> EgressRequested:
    return EgressRequested(action_id, "GET", host, 443, True)


async def test_a_sync_tool_records_from_its_thread_and_the_run_gets_it_on_the_loop() -> None:
    tool_threads: list[threading.Thread] = []
    record_threads: list[threading.Thread] = []
    events: list[Event] = []

    @tool
    def fetch(context: ToolContext) -> str:
        "Fetches, and says so."
        tool_threads.append(threading.current_thread())
        context.record(egress(context.action_id))
        return "fetched"

    def record(event: Event) -> None:
        record_threads.append(threading.current_thread())
        events.append(event)

    outcome = await execute_action(fetch, request("fetch"), "run", record=record)
    assert isinstance(outcome, ActionCompleted)
    assert events == [egress("act-1")]
    assert tool_threads[0] is not threading.main_thread()
    assert record_threads == [threading.main_thread()]


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (
            RunCompleted("hijacked"),
            "not RunCompleted: the runtime records everything else",
        ),
        (
            ActionCompleted("act-1", "forged"),
            "not ActionCompleted: the runtime records everything else",
        ),
        (egress("someone-else"), "may record events of its own action"),
    ],
    ids=["a terminal event", "an outcome", "another action's event"],
)
async def test_a_tool_may_record_only_its_own_tool_events(
    tmp_path: Path, event: Event, reason: str
) -> None:
    @tool
    def sneaky(context: ToolContext) -> str:
        "Tries to write the log itself."
        context.record(event)
        return "done"

    agent = Agent(name="s", model=ScriptedModel([tool_call("sneaky"), "survived"]), tools=[sneaky])
    async with Runtime(f"sqlite:///{tmp_path / 'runs.db'}") as rt:
        run = await rt.start(agent, "go")
        result = await run.wait()
        events = [s.event async for s in rt.events(run.run_id, follow=False)]
    assert (result.status, result.answer) == ("completed", "survived")
    (failed,) = [e for e in events if isinstance(e, ActionFailed)]
    assert reason in failed.error
    assert not any(isinstance(e, EgressRequested) for e in events)
    assert EgressRequested in TOOL_EVENTS
    assert not {RunCompleted, ActionCompleted} & set(TOOL_EVENTS)


async def test_a_thread_that_outlives_its_action_can_record_nothing() -> None:
    release, finished = threading.Event(), threading.Event()
    late: list[BaseException] = []
    events: list[Event] = []

    @tool(timeout=0.1)
    def straggler(context: ToolContext) -> str:
        "Records after its timeout."
        release.wait()
        try:
            context.record(egress(context.action_id))
        except BaseException as e:
            late.append(e)
        finished.set()
        return "too late"

    outcome = await execute_action(straggler, request("straggler"), "run", record=events.append)
    assert isinstance(outcome, ActionFailed) and outcome.error == "timed out after 0.1s"
    release.set()
    await asyncio.to_thread(finished.wait)
    assert [str(e) for e in late] == ["action act-1 has ended: it can record nothing more"]
    assert events == []


async def test_recorded_events_are_made_storable_or_refused() -> None:
    events: list[Event] = []

    @tool
    def odd(context: ToolContext) -> str:
        "Records a host with half an emoji, then one that is not text at all."
        context.record(egress(context.action_id, host="api\ud83d.test"))
        context.record(EgressRequested(context.action_id, "GET", object(), 443, True))  # type: ignore[arg-type]
        return "unreachable"

    outcome = await execute_action(odd, request("odd"), "run", record=events.append)
    assert events == [egress("act-1", host="api\ufffd.test")]
    assert isinstance(outcome, ActionFailed)
    assert outcome.error == (
        "the event cannot be stored: TypeError: Encoding objects of type object is unsupported"
    )


# -- C13: the secrets file is not read on every action ----------------------------------


def test_the_secrets_file_is_read_again_only_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "secrets.env"
    path.write_text("TOKEN=first-value\n")
    secrets = FileSecrets(path)
    assert secrets.get("TOKEN") == "first-value"
    stat = path.stat()
    path.write_text("TOKEN=other-value\n")  # same size: only the modification time tells
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert secrets.get("TOKEN") == "first-value"  # unchanged as far as stat can see: cached
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert secrets.get("TOKEN") == "other-value"  # rotated: read again, no restart


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"TOKEN": ', "is not valid JSON (line 1, column 11)"),
        (b"TOKEN=\xff\xfe", "is not UTF-8 text"),
    ],
)
def test_a_broken_secrets_file_is_a_config_error(
    tmp_path: Path, content: str | bytes, message: str
) -> None:
    path = tmp_path / "secrets"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(ConfigError, match=re.escape(message)):
        FileSecrets(path).get("TOKEN")


# -- A9: options are plain configuration, on the Tool protocol ---------------------------


def test_options_is_a_leaf_module() -> None:
    tree = ast.parse((SRC / "tools" / "options.py").read_text())
    imported = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("autonomic")
    }
    assert imported == {"autonomic.errors"}


def test_the_tool_protocol_gives_default_options() -> None:
    class Minimal(Tool):
        spec = ToolSpec(name="minimal", description="Minimal.", parameters={"type": "object"})
        idempotent = False
        timeout = None

        async def invoke(self, arguments: dict[str, Any], context: ToolContext) -> str:
            return ""

    assert Minimal().options is DEFAULT_OPTIONS


# -- approval ---------------------------------------------------------------------------


def test_a_tool_may_require_approval_always_or_by_its_arguments() -> None:
    @tool(requires_approval=True)
    def delete_everything() -> str:
        "Deletes."
        return "gone"

    @tool(requires_approval=lambda args: args["amount"] > 100)
    def transfer(account: str, amount: int) -> str:
        "Moves money."
        return "moved"

    @tool
    def look() -> str:
        "Looks."
        return "seen"

    assert needs_approval(delete_everything, {})
    assert needs_approval(transfer, {"account": "a", "amount": 101})
    assert not needs_approval(transfer, {"account": "a", "amount": 100})
    assert not needs_approval(look, {})
    assert transfer.options.requires_approval is not False


def test_an_approval_rule_that_fails_requires_approval_and_says_why() -> None:
    def strict(args: dict[str, Any]) -> bool:
        args["amount"] = 0  # a rule cannot change what would run
        return bool(args["missing"])

    @tool(requires_approval=strict)
    def transfer(amount: int) -> str:
        "Moves money."
        return "moved"

    @tool(requires_approval=lambda args: "yes")
    def vague() -> str:
        "Answers a str."
        return ""

    args = {"amount": 5}
    check = approval_check(transfer, args)
    assert check.required
    assert check.reason == (
        "the approval rule of tool transfer failed (KeyError: 'missing'), so approval is required"
    )
    assert args == {"amount": 5}
    assert approval_check(vague, {}) == (
        True,
        "the approval rule of tool vague answered a str, not a bool, so approval is required",
    )


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("always", "requires_approval must be True, False or a function"),
        (lambda: True, "must take one argument: the call's arguments as a dict"),
        (lambda a, b: True, "must take one argument"),
    ],
)
def test_bad_approval_rules_are_refused_when_the_tool_is_declared(rule: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ToolOptions(requires_approval=rule)


def test_an_async_approval_rule_is_refused() -> None:
    async def rule(args: dict[str, Any]) -> bool:
        return True

    with pytest.raises(ConfigError, match="plain \\(not async\\) function"):
        ToolOptions(requires_approval=rule)


def test_needs_approval_never_raises_for_any_tool() -> None:
    class Odd:
        @property
        def options(self) -> ToolOptions:
            raise RuntimeError("broken property")

    assert approval_check(Odd(), {}) == (False, "tool Odd needs no approval")
