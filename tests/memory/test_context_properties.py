"""The context manager's promises over 10,000 generated histories: no request over the
budget, no orphaned tool call or result, every request valid for OpenAI and Anthropic."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autonomic.events import (
    ActionCompleted,
    ActionFailed,
    ActionRequested,
    ApprovalDenied,
    ApprovalRequested,
    Event,
    ModelResponded,
    RunStarted,
    SignalReceived,
)
from autonomic.memory.context import (
    ContextSlot,
    ContextWindow,
    Fitted,
    MemoryCompacted,
    fit_request,
)
from autonomic.memory.tokens import request_tokens
from autonomic.messages import Message, ModelRequest, ToolCall, ToolSpec
from autonomic.models.anthropic import _wire_messages
from autonomic.state import RunState
from autonomic.strategies import AgentView, ReAct

VIEW = AgentView(
    instructions="Solve the task with the tools.",
    tools=(ToolSpec("fetch", "Fetch a page.", {"type": "object", "properties": {}}),),
)
WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "report",
    "total",
    "invoice",
    "error",
    "ok",
    "shipment",
    "42",
    "7.5",
    "Paris",
    "€",
]
CORPUS = " ".join(random.Random(0).choice(WORDS) for _ in range(20_000))


def _text(rng: random.Random, big: bool = False) -> str:
    n = rng.choice((0, 5, 30, 120, 1200, 20_000)) if big else rng.choice((0, 20, 80, 240))
    start = rng.randrange(len(CORPUS) - n)
    return CORPUS[start : start + n]


def history(seed: int) -> tuple[RunState, int]:
    """A run's state after a random history, and its number of compactions."""
    rng = random.Random(seed)
    state = RunState(run_id="r")
    events: list[Event] = [RunStarted(goal="Goal: " + _text(rng), agent="a")]
    turns = rng.randint(1, 30)
    compactions = 0
    action = 0
    pending: list[Event] = []
    for turn in range(turns):
        calls = tuple(
            ToolCall(f"c{turn}-{i}", "fetch", {"q": _text(rng)})
            for i in range(rng.choice((0, 1, 1, 2, 4)))
        )
        events.append(ModelResponded(text=_text(rng), tool_calls=calls))
        last = turn == turns - 1
        for call in calls:
            action += 1
            aid = f"a{action}"
            fate = rng.random()
            if fate < 0.08:  # approval: denied, or pending at the end
                digest = f"d{action}"
                events.append(ApprovalRequested(aid, call.id, "fetch", digest))
                if not (last and rng.random() < 0.5):
                    events.append(ApprovalDenied(digest, "ops", "sig", "no"))
                continue
            events.append(ActionRequested(aid, call.id, "fetch"))
            if last and fate < 0.25:  # interrupted: no result recorded
                continue
            if fate < 0.35:
                pending.append(ActionFailed(aid, "timeout"))
            else:
                pending.append(ActionCompleted(aid, _text(rng, big=True)))
        rng.shuffle(pending)  # parallel calls end in any order
        events.extend(pending)
        pending.clear()
        if rng.random() < 0.1:
            events.append(SignalReceived("note", {"turn": turn}))
    seq = 0
    for event in events:
        seq += 1
        state.apply(event, seq, float(seq))
        if seq > 3 and compactions < 50 and rng.random() < 0.15:
            compactions += 1
            covers = (2, rng.randint(2, seq))  # any point, even inside a turn
            seq += 1
            state.apply(MemoryCompacted("so far: " + _text(rng, big=True), covers), seq, 0.0)
    if not compactions:
        compactions = 1
        state.apply(MemoryCompacted("so far", (2, rng.randint(2, seq))), seq + 1, 0.0)
    return state, compactions


def check_openai(messages: tuple[Message, ...]) -> None:
    roles = [m.role for m in messages]
    first = next(i for i, r in enumerate(roles) if r != "system")
    assert all(r == "system" for r in roles[:first]) and "system" not in roles[first:]
    assert roles[first] == "user"
    i = first
    while i < len(messages):
        m = messages[i]
        assert m.role != "tool", f"orphaned tool result at {i}"
        i += 1
        if m.role == "assistant" and m.tool_calls:
            answered = []
            while i < len(messages) and messages[i].role == "tool":
                answered.append(messages[i].tool_call_id)
                i += 1
            assert sorted(answered) == sorted(c.id for c in m.tool_calls), "orphaned tool call"


def check_anthropic(messages: tuple[Message, ...]) -> None:
    _, turns = _wire_messages(messages)
    assert turns and turns[0]["role"] == "user"
    for a, b in itertools.pairwise(turns):
        assert a["role"] != b["role"]
    for i, turn in enumerate(turns):
        assert turn["content"], "empty turn"
        uses = [b["id"] for b in turn["content"] if b["type"] == "tool_use"]
        results = [b["tool_use_id"] for b in turn["content"] if b["type"] == "tool_result"]
        if results:
            kinds = [b["type"] for b in turn["content"]]
            assert kinds[: len(results)] == ["tool_result"] * len(results)
            previous = turns[i - 1]["content"]
            assert sorted(results) == sorted(b["id"] for b in previous if b["type"] == "tool_use")
        if uses:
            assert i + 1 < len(turns), "a tool call without its result ends the request"
            after = [b.get("tool_use_id") for b in turns[i + 1]["content"]]
            assert set(uses) <= set(after)


def check(request: ModelRequest, window: ContextWindow) -> None:
    assert request_tokens(request.messages, request.tools, window.counter) <= window.budget
    check_openai(request.messages)
    check_anthropic(request.messages)


@pytest.mark.timeout(600)  # about 25 s alone; far longer on a crowded machine
@settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**32 - 1), max_tokens=st.integers(400, 12_000))
def test_every_request_fits_and_is_valid(seed: int, max_tokens: int) -> None:
    state, compactions = history(seed)
    assert 1 <= compactions <= 50
    window = ContextWindow(max_tokens=max_tokens, reserve_output=200, tool_output_tokens=120)
    request = ReAct._model_call(state, VIEW).request
    slot = state.slot(ContextSlot)
    assert len(slot.seqs) == len(state.messages)
    fitted = fit_request(request, state.messages, slot, window)
    assert isinstance(fitted, Fitted)
    if fitted.compaction is None:
        check(fitted.request, window)
        return
    assert fitted.stage == "compact" and fitted.covers is not None
    assert fitted.covers[0] <= fitted.covers[1]
    check(fitted.compaction, window)
    # the compaction is recorded; the next request (no second compaction in a row) fits
    summary = "summary " * (seed % 2000)
    state.apply(MemoryCompacted(summary, fitted.covers), state.seq + 1, 0.0)
    after = fit_request(request, state.messages, slot, window, may_compact=False)
    assert isinstance(after, Fitted) and after.compaction is None
    check(after.request, window)
