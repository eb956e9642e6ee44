"""The cascade (rules, then cheap to strong models) and the response cache (exact, semantic)."""

from __future__ import annotations

import math
import re
from collections import Counter

import pytest

from autonomic.errors import ModelUnavailable
from autonomic.models import (
    CachedModel,
    Cascade,
    FunctionModel,
    Message,
    ModelRequest,
    ModelResponse,
    ResponseCache,
    ToolCall,
    Usage,
)
from autonomic.models.cache import Embedder
from autonomic.models.openai import OpenAIModel

from .model_fakes import ADD, Reply, ServerFactory


def ask(text: str, *, system: str = "be helpful") -> ModelRequest:
    return ModelRequest((Message("system", system), Message("user", text)))


def answering(response: ModelResponse | Exception, name: str) -> FunctionModel:
    def answer(request: ModelRequest) -> ModelResponse:
        if isinstance(response, Exception):
            raise response
        return response

    return FunctionModel(answer, name=name)


GOOD = ModelResponse(text="a fine answer", usage=Usage(10, 3), cost=0.01, model="strong")


async def test_rules_answer_first_and_cost_nothing() -> None:
    strong = answering(GOOD, "strong")
    model = Cascade([strong], rules=[lambda r: "4" if "2+2" in r.messages[-1].content else None])
    response = await model.complete(ask("what is 2+2?"))
    assert response.text == "4" and response.meta["tier"] == "rules" and response.cost == 0.0
    assert strong.calls == 0
    assert (await model.complete(ask("something else"))).meta["tier"] == "strong"


async def test_escalates_an_unusable_tool_call(fake_server: ServerFactory) -> None:
    bad = {"id": "c1", "function": {"name": "add", "arguments": "{not json"}}
    server = await fake_server(
        [Reply(body={"model": "cheap", "choices": [{"message": {"tool_calls": [bad]}}]})]
    )
    strong = answering(GOOD, "strong")
    async with OpenAIModel("cheap", base_url=f"{server.url}/v1") as cheap:
        response = await Cascade([cheap, strong]).complete(
            ModelRequest((Message("user", "add"),), tools=(ADD,))
        )
    assert response.meta["tier"] == "strong" and response.text == "a fine answer"
    (escalation,) = response.meta["escalations"]
    assert escalation["tier"] == cheap.name and "unusable" in escalation["reason"]


async def test_escalation_adds_up_usage_and_cost() -> None:
    empty = ModelResponse(text="", usage=Usage(10, 5), cost=0.001, model="cheap")
    cascade = Cascade([answering(empty, "cheap"), answering(GOOD, "strong")])
    response = await cascade.complete(ask("hard question"))
    assert response.usage == Usage(20, 8)
    assert response.cost == pytest.approx(0.011)
    assert response.meta["escalations"][0]["reason"] == "empty answer"


@pytest.mark.parametrize(("confidence", "tier"), [(0.2, "strong"), (0.9, "cheap")])
async def test_low_reported_confidence_escalates(confidence: float, tier: str) -> None:
    unsure = ModelResponse(text="maybe", meta={"confidence": confidence}, cost=0.0)
    cascade = Cascade([answering(unsure, "cheap"), answering(GOOD, "strong")], min_confidence=0.5)
    assert (await cascade.complete(ask("q"))).meta["tier"] == tier


async def test_a_failing_cheap_tier_escalates() -> None:
    cascade = Cascade([answering(ModelUnavailable("down"), "cheap"), answering(GOOD, "strong")])
    response = await cascade.complete(ask("q"))
    assert response.meta["tier"] == "strong"
    assert response.meta["escalations"][0]["reason"].startswith("failed")


async def test_not_json_when_json_was_asked_escalates_and_the_last_tier_is_final() -> None:
    prose = ModelResponse(text="not json", cost=0.0)
    cascade = Cascade([answering(prose, "cheap"), answering(prose, "strong")])
    request = ModelRequest((Message("user", "json please"),), response_schema={"type": "object"})
    response = await cascade.complete(request)
    assert response.meta["tier"] == "strong" and "JSON" in response.meta["unvalidated"]


async def test_a_custom_check() -> None:
    short = ModelResponse(text="no", cost=0.0)
    cascade = Cascade(
        [answering(short, "cheap"), answering(GOOD, "strong")],
        check=lambda request, response: "too short" if len(response.text) < 5 else None,
    )
    assert (await cascade.complete(ask("q"))).meta["escalations"][0]["reason"] == "too short"


async def test_unknown_costs_stay_unknown() -> None:
    unpriced = ModelResponse(text="", cost=None, meta={"price_unknown": True})
    cascade = Cascade([answering(unpriced, "cheap"), answering(GOOD, "strong")])
    response = await cascade.complete(ask("q"))
    assert response.cost is None and response.meta["price_unknown"] is True


OK = Reply(
    body={
        "model": "m",
        "choices": [{"message": {"content": "Paris"}}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 1},
    }
)


async def test_exact_hit_is_free_and_marked(fake_server: ServerFactory) -> None:
    server = await fake_server([OK])
    async with OpenAIModel("m", base_url=f"{server.url}/v1") as inner:
        model = CachedModel(inner)
        first = await model.complete(ask("capital of France?"))
        second = await model.complete(ask("capital of France?"))
        await model.complete(ask("capital of Spain?"))
    assert len(server.requests) == 2
    assert "cached" not in first.meta and first.usage.total_tokens == 10
    assert second.text == "Paris" and second.meta["cached"] is True
    assert second.meta["cache"] == "exact"
    assert second.usage == Usage() and second.cost == 0.0


def words(text: str) -> list[float]:
    """A toy embedder: word counts over a fixed vocabulary (no model download)."""
    vocabulary = ["what", "is", "the", "capital", "of", "france", "tell", "joke", "cats"]
    counts = Counter(re.findall(r"[a-z]+", text.lower()))
    return [float(counts[w]) for w in vocabulary]


async def async_words(text: str) -> list[float]:
    return words(text)


@pytest.mark.parametrize("embedder", [words, async_words], ids=["sync", "async"])
async def test_semantic_hit_over_the_threshold(embedder: Embedder) -> None:
    inner = answering(ModelResponse(text="Paris", cost=0.001), "m")
    model = CachedModel(inner, ResponseCache(embedder=embedder, threshold=0.8))
    await model.complete(ask("What is the capital of France?"))
    hit = await model.complete(ask("what's the capital of france"))
    miss = await model.complete(ask("Tell me a joke about cats"))
    assert inner.calls == 2
    assert hit.meta["cache"] == "semantic" and hit.cost == 0.0
    assert 0.8 <= hit.meta["similarity"] < 1.0 and "cached" not in miss.meta


async def test_semantic_hit_needs_the_same_conversation() -> None:
    inner = answering(ModelResponse(text="Paris", cost=0.0), "m")
    model = CachedModel(inner, ResponseCache(embedder=words, threshold=0.8))
    await model.complete(ask("What is the capital of France?"))
    await model.complete(ask("What is the capital of France?", system="answer in French"))
    assert inner.calls == 2


async def test_semantic_matching_is_off_by_default() -> None:
    inner = answering(ModelResponse(text="Paris", cost=0.0), "m")
    model = CachedModel(inner)
    await model.complete(ask("What is the capital of France?"))
    await model.complete(ask("what is the capital of france?"))
    assert inner.calls == 2


async def test_entries_expire_and_are_evicted() -> None:
    now = [0.0]
    inner = answering(ModelResponse(text="x", cost=0.0), "m")
    model = CachedModel(inner, ResponseCache(max_entries=1, ttl=60, clock=lambda: now[0]))
    await model.complete(ask("a"))
    await model.complete(ask("a"))
    now[0] = 61
    await model.complete(ask("a"))
    await model.complete(ask("b"))
    await model.complete(ask("a"))
    assert inner.calls == 4 and len(model.cache) == 1


async def test_unusable_answers_are_not_cached() -> None:
    broken = ModelResponse(tool_calls=(ToolCall("c", "add", {}, error="bad JSON"),), cost=0.0)
    inner = answering(broken, "m")
    model = CachedModel(inner)
    await model.complete(ask("add"))
    await model.complete(ask("add"))
    assert inner.calls == 2


def test_cosine_of_the_toy_embedder() -> None:
    a, b = words("What is the capital of France?"), words("what's the capital of france")
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    assert dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b)) >= 0.8
