"""Retries, circuit breakers and fallback against a fault-injecting loopback server.

Time is a fake clock: backoff sleeps advance it instead of waiting, so nothing here
depends on how fast the machine is.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from autonomic.errors import ModelError, ModelUnavailable
from autonomic.models import (
    CircuitBreaker,
    CircuitBreakerModel,
    Fallback,
    Message,
    Model,
    ModelRequest,
    Retrying,
    resilient,
    subscribe_transitions,
)
from autonomic.models.openai import OpenAIModel
from autonomic.models.retry import backoff_delay
from autonomic.resilience import CircuitOpen

from .model_fakes import Reply, Request, ServerFactory

REQUEST = ModelRequest((Message("user", "hi"),))
OK = Reply(body={"model": "m", "choices": [{"message": {"content": "fine"}}]})


def failing(status: int = 503, **headers: str) -> Reply:
    return Reply(status, {"error": {"message": "injected"}}, headers)


class Clock:
    """A clock that moves only when a retry sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


async def served(start: ServerFactory, *replies: Reply, **options: Any) -> OpenAIModel:
    server = await start(list(replies))
    return OpenAIModel("m", base_url=f"{server.url}/v1", **options)


async def test_retry_honours_retry_after(fake_server: ServerFactory) -> None:
    clock = Clock()
    server = await fake_server([failing(429, **{"retry-after": "7"}), OK])
    async with OpenAIModel("m", base_url=f"{server.url}/v1") as inner:
        response = await Retrying(inner, sleep=clock.sleep).complete(REQUEST)
    assert response.text == "fine" and response.meta["attempts"] == 2
    assert len(server.requests) == 2 and clock.sleeps[0] >= 7


async def test_retry_backs_off_exponentially_on_5xx(fake_server: ServerFactory) -> None:
    clock = Clock()
    server = await fake_server([failing(500), failing(502), OK])
    async with OpenAIModel("m", base_url=f"{server.url}/v1") as inner:
        model = Retrying(inner, base_delay=0.5, jitter=0.0, sleep=clock.sleep)
        response = await model.complete(REQUEST)
    assert response.meta["attempts"] == 3 and clock.sleeps == [0.5, 1.0]


@pytest.mark.parametrize(
    "fault", [Reply(drop=True), Reply(delay=30)], ids=["dropped-connection", "slow-response"]
)
async def test_retry_after_a_transport_fault(fake_server: ServerFactory, fault: Reply) -> None:
    clock = Clock()
    server = await fake_server([fault, OK])
    async with OpenAIModel("m", base_url=f"{server.url}/v1", timeout=0.3) as inner:
        response = await Retrying(inner, sleep=clock.sleep).complete(REQUEST)
    assert response.text == "fine" and response.meta["attempts"] == 2
    assert len(server.requests) == 2


async def test_no_retry_on_a_request_that_cannot_succeed(fake_server: ServerFactory) -> None:
    clock = Clock()
    server = await fake_server([failing(400), OK])
    async with OpenAIModel("m", base_url=f"{server.url}/v1") as inner:
        with pytest.raises(ModelError) as raised:
            await Retrying(inner, sleep=clock.sleep).complete(REQUEST)
    assert not isinstance(raised.value, ModelUnavailable)
    assert len(server.requests) == 1 and clock.sleeps == []


async def test_retry_gives_up(fake_server: ServerFactory) -> None:
    clock = Clock()
    server = await fake_server([failing(503)])
    async with OpenAIModel("m", base_url=f"{server.url}/v1") as inner:
        with pytest.raises(ModelUnavailable):
            await Retrying(inner, attempts=3, sleep=clock.sleep).complete(REQUEST)
    assert len(server.requests) == 3


async def test_a_wait_longer_than_max_delay_is_not_waited_on(fake_server: ServerFactory) -> None:
    clock = Clock()
    server = await fake_server([failing(429, **{"retry-after": "3600"}), OK])
    async with OpenAIModel("m", base_url=f"{server.url}/v1") as inner:
        with pytest.raises(ModelUnavailable) as raised:
            await Retrying(inner, max_delay=30, sleep=clock.sleep).complete(REQUEST)
    assert raised.value.retry_after == 3600 and len(server.requests) == 1


def test_backoff_jitter_stays_in_bounds() -> None:
    delays = [
        backoff_delay(3, base_delay=1.0, max_delay=30.0, retry_after=None, jitter=0.5)
        for _ in range(200)
    ]
    assert all(2.0 <= d <= 4.0 for d in delays) and len(set(delays)) > 1


def state(breaker: CircuitBreaker) -> str:
    """The breaker's state, read through a call so a type checker does not pin it."""
    return breaker.state


class Switch:
    """A server script whose answer the test flips between failing and healthy."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply

    def __call__(self, request: Request) -> Reply:
        return self.reply


async def test_breaker_opens_fails_fast_then_recovers(fake_server: ServerFactory) -> None:
    clock = Clock()
    switch = Switch(failing(503))
    server = await fake_server(switch)
    seen: list[dict[str, Any]] = []
    unsubscribe = subscribe_transitions(seen.append)
    breaker = CircuitBreaker("test-endpoint", failure_threshold=2, reset_timeout=10, clock=clock)
    try:
        async with OpenAIModel("m", base_url=f"{server.url}/v1") as inner:
            model = CircuitBreakerModel(inner, breaker=breaker)
            for _ in range(2):
                with pytest.raises(ModelUnavailable):
                    await model.complete(REQUEST)
            assert state(breaker) == "open"
            with pytest.raises(ModelUnavailable, match="circuit open") as raised:
                await model.complete(REQUEST)
            assert raised.value.retry_after == 10 and len(server.requests) == 2
            switch.reply = OK
            clock.now += 10
            response = await model.complete(REQUEST)
    finally:
        unsubscribe()
    assert breaker.state == "closed"
    moves = [(t["from"], t["to"]) for t in response.meta["breaker"]]
    assert moves == [("open", "half_open"), ("half_open", "closed")]
    assert [(t["from"], t["to"]) for t in seen] == [("closed", "open"), *moves]
    assert all(t["endpoint"] == "test-endpoint" for t in seen)


async def test_a_failed_probe_reopens(fake_server: ServerFactory) -> None:
    clock = Clock()
    server = await fake_server([failing(503)])
    breaker = CircuitBreaker("probe", failure_threshold=1, reset_timeout=5, clock=clock)
    async with OpenAIModel("m", base_url=f"{server.url}/v1") as inner:
        model = CircuitBreakerModel(inner, breaker=breaker)
        with pytest.raises(ModelUnavailable):
            await model.complete(REQUEST)
        clock.now += 5
        with pytest.raises(ModelUnavailable, match="injected"):
            await model.complete(REQUEST)
    assert breaker.state == "open" and len(server.requests) == 2


def test_half_open_lets_one_probe_through() -> None:
    clock = Clock()
    breaker = CircuitBreaker("one-probe", failure_threshold=1, reset_timeout=1, clock=clock)
    breaker.on_failure(ModelUnavailable("down"))
    clock.now += 1
    breaker.before_call()
    with pytest.raises(CircuitOpen, match="probe"):
        breaker.before_call()
    breaker.on_success()
    breaker.before_call()
    assert breaker.state == "closed"


async def test_errors_that_say_nothing_about_health_do_not_count(
    fake_server: ServerFactory,
) -> None:
    server = await fake_server([failing(400)])
    breaker = CircuitBreaker("healthy", failure_threshold=1)
    async with OpenAIModel("m", base_url=f"{server.url}/v1") as inner:
        with pytest.raises(ModelError):
            await CircuitBreakerModel(inner, breaker=breaker).complete(REQUEST)
    assert breaker.state == "closed"


async def test_transitions_of_retried_attempts_reach_the_response(
    fake_server: ServerFactory,
) -> None:
    clock = Clock()
    server = await fake_server([failing(503), OK])
    breaker = CircuitBreaker("retried", failure_threshold=1, reset_timeout=5, clock=clock)
    async with OpenAIModel("m", base_url=f"{server.url}/v1") as inner:
        model = Retrying(CircuitBreakerModel(inner, breaker=breaker), jitter=0.0, sleep=clock.sleep)
        response = await model.complete(REQUEST)
    moves = [(t["from"], t["to"]) for t in response.meta["breaker"]]
    assert moves == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    assert response.meta["attempts"] == 3 and len(server.requests) == 2


def test_one_breaker_per_endpoint_process_wide() -> None:
    url = f"http://127.0.0.1:1/{uuid.uuid4().hex}/v1"
    first = CircuitBreakerModel(OpenAIModel("a", base_url=url))
    second = CircuitBreakerModel(OpenAIModel("b", base_url=url))
    other = CircuitBreakerModel(OpenAIModel("a", base_url=url + "x"))
    assert first.breaker is second.breaker and first.breaker is not other.breaker


async def test_fallback_to_the_next_model(fake_server: ServerFactory) -> None:
    primary = await served(fake_server, failing(503))
    backup = await served(fake_server, OK)
    async with primary, backup:
        chain = Fallback([primary, backup])
        response = await chain.complete(REQUEST)
    assert isinstance(chain, Model)
    assert response.text == "fine" and response.meta["fallback_from"] == [primary.name]


async def test_fallback_also_on_errors_a_retry_would_not_fix(fake_server: ServerFactory) -> None:
    primary = await served(fake_server, failing(404))
    backup = await served(fake_server, OK)
    async with primary, backup:
        response = await Fallback([primary, backup]).complete(REQUEST)
    assert response.meta["fallback_from"] == [primary.name]


@pytest.mark.parametrize(
    ("statuses", "error"),
    [((503, 429), ModelUnavailable), ((503, 400), ModelError)],
    ids=["all-transient", "one-permanent"],
)
async def test_fallback_when_every_model_fails(
    fake_server: ServerFactory, statuses: tuple[int, int], error: type[ModelError]
) -> None:
    models = [await served(fake_server, failing(s, **{"retry-after": "2"})) for s in statuses]
    with pytest.raises(ModelError, match="every model") as raised:
        await Fallback(models).complete(REQUEST)
    for model in models:
        await model.aclose()
    assert type(raised.value) is error


async def test_resilient_composes_retry_breaker_and_fallback(fake_server: ServerFactory) -> None:
    primary = await served(fake_server, failing(503))
    backup = await served(fake_server, OK)
    async with primary, backup:
        model = resilient(primary, fallbacks=[backup], attempts=2, base_delay=0.001)
        response = await model.complete(REQUEST)
    assert response.text == "fine" and response.meta["fallback_from"]
