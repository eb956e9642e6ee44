"""The tool executor's resilience: retries, breaker, rate limit, output cap, secrets."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from autonomic import Agent, FunctionModel, ModelRequest, Runtime, ScriptedModel, tool, tool_call
from autonomic.errors import ConfigError, ToolError
from autonomic.events import (
    ActionCompleted,
    ActionFailed,
    ActionRequested,
    ActionRetried,
    CircuitChanged,
    Event,
)
from autonomic.loader import read_events
from autonomic.resilience.ratelimit import TokenBucket
from autonomic.tools import ToolContext
from autonomic.tools.executor import execute_action
from autonomic.tools.secrets import EnvSecrets, FileSecrets
from autonomic.views import render_trace


def files_containing(folder: Path, pattern: str, text: str) -> list[Path]:
    return [f for f in folder.glob(pattern) if text.encode() in f.read_bytes()]


def request(name: str, action_id: str = "r-1", **args: object) -> ActionRequested:
    return ActionRequested(action_id, "c-1", name, dict(args))


async def test_retryable_failures_are_retried_with_backoff_until_they_succeed() -> None:
    calls: list[int] = []

    @tool(retries=3, backoff_s=0.01)
    def flaky(context: ToolContext) -> str:
        "Fails twice, then works."
        calls.append(context.attempt)
        if len(calls) < 3:
            raise ToolError("service busy", retryable=True)
        return "ok"

    events: list[Event] = []
    outcome = await execute_action(flaky, request("flaky"), "run", record=events.append)
    assert isinstance(outcome, ActionCompleted) and outcome.attempts == 3
    assert calls == [1, 2, 3]
    retried = [e for e in events if isinstance(e, ActionRetried)]
    assert [(e.attempt, e.error) for e in retried] == [(1, "service busy"), (2, "service busy")]
    assert all(0 < e.delay_s <= 0.04 for e in retried)


async def test_a_permanent_failure_after_the_retry_budget_says_so() -> None:
    @tool(retries=2, backoff_s=0.0)
    def down() -> str:
        "Always busy."
        raise ToolError("service busy", retryable=True)

    outcome = await execute_action(down, request("down"), "run")
    assert isinstance(outcome, ActionFailed) and outcome.attempts == 3
    assert outcome.error == "service busy (failed 3 attempts; not retrying)"


async def test_non_retryable_errors_and_timeouts_of_unsafe_tools_are_not_retried() -> None:
    seen: list[str] = []

    @tool(retries=5, timeout=0.05)
    async def charge(amount: int) -> str:
        "Charge once (not idempotent): a timeout may hide an effect."
        seen.append("charge")
        await asyncio.sleep(1)
        return "charged"

    @tool(retries=5)
    def strict(x: int) -> str:
        "Refuses."
        seen.append("strict")
        raise ToolError("x must be even")

    timed_out = await execute_action(charge, request("charge", amount=1), "run")
    refused = await execute_action(strict, request("strict", x=1), "run")
    assert isinstance(timed_out, ActionFailed) and timed_out.attempts == 1
    assert isinstance(refused, ActionFailed) and refused.attempts == 1
    assert seen == ["charge", "strict"]


async def test_timeouts_of_idempotent_tools_are_retried() -> None:
    attempts: list[int] = []

    @tool(retries=1, backoff_s=0.0, timeout=0.05, idempotent=True)
    async def lookup(context: ToolContext) -> str:
        "Slow the first time."
        attempts.append(context.attempt)
        if context.attempt == 1:
            await asyncio.sleep(1)
        return "found"

    outcome = await execute_action(lookup, request("lookup"), "run")
    assert isinstance(outcome, ActionCompleted) and attempts == [1, 2]


async def test_the_breaker_opens_fails_fast_and_records_its_transitions(tmp_path: Path) -> None:
    calls = 0

    @tool(breaker_threshold=2, breaker_reset_s=60)
    def fragile() -> str:
        "Always crashes."
        nonlocal calls
        calls += 1
        raise RuntimeError("backend is down")

    agent = Agent(
        name="b",
        model=ScriptedModel([tool_call("fragile")] * 3 + ["gave up"]),
        tools=[fragile],
    )
    async with Runtime(f"sqlite:///{tmp_path / 'r.db'}") as rt:
        run = await rt.start(agent, "go")
        assert (await run.wait()).answer == "gave up"
        stored = await read_events(rt.store, run.run_id)
    events = [s.event for s in stored]
    failures = [e.error for e in events if isinstance(e, ActionFailed)]
    assert calls == 2  # the third call never reached the tool
    assert failures[:2] == ["RuntimeError: backend is down"] * 2
    assert failures[2].startswith("circuit open for tool fragile after 2 failures")
    changes = [e for e in events if isinstance(e, CircuitChanged)]
    assert [(c.target, c.from_state, c.to_state) for c in changes] == [
        ("tool fragile", "closed", "open")
    ]
    assert "⚡ circuit tool fragile: closed → open" in render_trace(stored)


async def test_the_rate_limit_spaces_calls_out() -> None:
    now = [0.0]
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(rate=2.0, burst=2, clock=lambda: now[0], sleep=fake_sleep)
    waits = [await bucket.acquire() for _ in range(5)]
    assert waits[:2] == [0.0, 0.0]  # the burst
    assert all(w == pytest.approx(0.5) for w in waits[2:])  # then one every 1/rate seconds
    assert sum(slept) == pytest.approx(1.5)


async def test_long_outputs_are_cut_for_the_model_and_kept_whole_in_the_log(tmp_path: Path) -> None:
    @tool(max_observation_chars=1000)
    def dump() -> str:
        "Prints a lot."
        return "line\n" * 5000

    seen: list[str] = []

    def decide(request: ModelRequest) -> object:
        if not any(m.role == "tool" for m in request.messages):
            return tool_call("dump")
        seen.extend(m.content for m in request.messages if m.role == "tool")
        return "read it"

    agent = Agent(name="d", model=FunctionModel(decide), tools=[dump])
    async with Runtime(f"sqlite:///{tmp_path / 'r.db'}") as rt:
        run = await rt.start(agent, "go")
        await run.wait()
        events = [s.event for s in await read_events(rt.store, run.run_id)]
    (done,) = [e for e in events if isinstance(e, ActionCompleted)]
    assert done.full_output == "line\n" * 5000
    assert len(done.observation) < 1200 and "showing 1,000 of 25,000 characters" in seen[0]
    assert seen[0] == done.observation


async def test_secrets_reach_the_tool_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-live-9f8e7d6c5b4a"
    (tmp_path / "secrets.env").write_text(f"API_TOKEN={secret}\n")

    @tool(secrets=("API_TOKEN",))
    def call_api(path: str, context: ToolContext) -> str:
        "Calls an API with the token (and carelessly echoes it)."
        token = context.secret("API_TOKEN")
        assert token == secret
        return f"GET {path} with Authorization: Bearer {token} -> 200"

    prompts: list[str] = []

    def decide(request: ModelRequest) -> object:
        prompts.extend(m.content for m in request.messages)
        if not any(m.role == "tool" for m in request.messages):
            return tool_call("call_api", path="/v1/me")
        return "done"

    agent = Agent(name="s", model=FunctionModel(decide), tools=[call_api])
    db = tmp_path / "r.db"
    async with Runtime(f"sqlite:///{db}", secrets=FileSecrets(tmp_path / "secrets.env")) as rt:
        run = await rt.start(agent, "call the api")
        await run.wait()
        stored = await read_events(rt.store, run.run_id)
    observation = next(s.event for s in stored if isinstance(s.event, ActionCompleted))
    assert (
        observation.observation == "GET /v1/me with Authorization: Bearer [secret API_TOKEN] -> 200"
    )
    assert not any(secret in p for p in prompts)
    assert secret not in render_trace(stored)
    assert not files_containing(tmp_path, "r.db*", secret)


async def test_a_missing_secret_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_TOKEN", raising=False)

    @tool(secrets=("NOPE_TOKEN",))
    def needs(context: ToolContext) -> str:
        "Needs a token."
        return "never"

    outcome = await execute_action(needs, request("needs"), "run", secrets=EnvSecrets())
    assert isinstance(outcome, ActionFailed)
    assert outcome.error.startswith("secret NOPE_TOKEN is not set")


def test_unknown_tool_options_are_refused() -> None:
    with pytest.raises(ConfigError, match="retires"):
        tool(retires=3)(lambda: None)
    with pytest.raises(ConfigError, match="rate_per_s"):
        tool(rate_per_s=0)(lambda: None)
