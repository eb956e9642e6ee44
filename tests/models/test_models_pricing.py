"""Prices: exact and prefix matches, user prices, and never free when unknown."""

from __future__ import annotations

import pytest

from autonomic.models import Price, PriceTable, Usage, default_prices, register_price
from autonomic.models.pricing import FREE, cost_meta

MILLION = Usage(1_000_000, 1_000_000)


@pytest.mark.parametrize(
    ("model", "price"),
    [
        ("gpt-4o", Price(2.5, 10.0)),
        ("gpt-4o-mini-2024-07-18", Price(0.15, 0.6)),
        ("openai/gpt-4o-mini", Price(0.15, 0.6)),
        ("claude-opus-4-5-20251101", Price(5.0, 25.0)),
        ("claude-opus-4-20250514", Price(15.0, 75.0)),
    ],
)
def test_lookup(model: str, price: Price) -> None:
    assert default_prices.lookup(model) == price


def test_no_match_inside_a_word() -> None:
    assert default_prices.lookup("o3x") is None and default_prices.lookup("gpt-4ox") is None


def test_unknown_is_priced_at_the_highest_and_flagged() -> None:
    table = PriceTable({"a": Price(1.0, 2.0), "b": Price(3.0, 0.5)})
    cost, meta = cost_meta("mystery", MILLION, table=table)
    assert cost == 3.0 + 2.0 and meta == {"price_unknown": True}


def test_an_empty_table_still_never_prices_at_zero() -> None:
    cost, meta = cost_meta("mystery", Usage(10, 10), table=PriceTable())
    assert cost > 0 and meta["price_unknown"] is True


def test_a_configured_or_self_hosted_price_wins() -> None:
    assert cost_meta("gpt-4o", MILLION, price=Price(1.0, 1.0)) == (2.0, {})
    assert cost_meta("my-finetune", MILLION, unknown=FREE) == (0.0, {})
    assert cost_meta("gpt-4o", MILLION, unknown=FREE) == (12.5, {})


def test_users_register_prices() -> None:
    table = PriceTable()
    table.register("house-model", input=0.5, output=1.5)
    assert cost_meta("house-model-v2", MILLION, table=table) == (2.0, {})
    with pytest.raises(ValueError):
        table.register("x", input=-1, output=0)


def test_register_in_the_process_wide_table() -> None:
    register_price("test-only-model-7f3a", input=0.0, output=0.0)
    assert cost_meta("test-only-model-7f3a", MILLION) == (0.0, {})
