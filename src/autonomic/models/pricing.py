"""What a model call cost, from a price table users can extend.

Prices are USD per million input and output tokens. A model missing from the table is
not counted as free (unless its adapter knows it is self-hosted): it is charged at the
table's highest prices and flagged, so a budget errs on the side of stopping early.
"""

from __future__ import annotations

import threading
from typing import Any, NamedTuple

from autonomic.models.base import Usage

__all__ = [
    "FREE",
    "Price",
    "PriceTable",
    "cost_meta",
    "default_prices",
    "register_price",
]


class Price(NamedTuple):
    """USD per million input tokens and per million output tokens."""

    input: float
    output: float

    def cost(self, usage: Usage) -> float:
        return (usage.input_tokens * self.input + usage.output_tokens * self.output) / 1e6


FREE = Price(0.0, 0.0)


_BUILTIN: dict[str, Price] = {
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "o1": Price(15.00, 60.00),
    "o3": Price(2.00, 8.00),
    "o3-mini": Price(1.10, 4.40),
    "o4-mini": Price(1.10, 4.40),
    "claude-3-haiku": Price(0.25, 1.25),
    "claude-3-5-haiku": Price(0.80, 4.00),
    "claude-haiku-4-5": Price(1.00, 5.00),
    "claude-3-5-sonnet": Price(3.00, 15.00),
    "claude-3-7-sonnet": Price(3.00, 15.00),
    "claude-sonnet-4": Price(3.00, 15.00),
    "claude-sonnet-4-5": Price(3.00, 15.00),
    "claude-opus-4": Price(15.00, 75.00),
    "claude-opus-4-1": Price(15.00, 75.00),
    "claude-opus-4-5": Price(5.00, 25.00),
}


class PriceTable:
    """Model id → price, matched exactly or by the longest ``id-`` prefix (dated snapshots).

    ``gpt-4o-mini-2024-07-18`` is priced as ``gpt-4o-mini``; ``openai/gpt-4o`` (an
    OpenRouter id) as ``gpt-4o``.
    """

    def __init__(self, prices: dict[str, Price] | None = None) -> None:
        self._prices = dict(prices or {})
        self._lock = threading.Lock()

    def register(self, model: str, *, input: float, output: float) -> None:
        """Add or replace the price of ``model`` (USD per million tokens)."""
        if input < 0 or output < 0:
            raise ValueError("prices cannot be negative")
        with self._lock:
            self._prices[model] = Price(input, output)

    def lookup(self, model: str) -> Price | None:
        for candidate in (model, model.rpartition("/")[2]):
            if candidate in self._prices:
                return self._prices[candidate]
            prefixes = [k for k in self._prices if candidate.startswith(k + "-")]
            if prefixes:
                return self._prices[max(prefixes, key=len)]
        return None

    def highest(self) -> Price:
        """The most expensive input and output prices in the table (the pessimistic guess)."""
        prices = list(self._prices.values()) or list(_BUILTIN.values())
        return Price(max(p.input for p in prices), max(p.output for p in prices))


default_prices = PriceTable(_BUILTIN)


def register_price(model: str, *, input: float, output: float) -> None:
    """Teach the process-wide table a price, in USD per million input/output tokens."""
    default_prices.register(model, input=input, output=output)


def cost_meta(
    model: str,
    usage: Usage,
    *,
    price: Price | None = None,
    table: PriceTable | None = None,
    unknown: Price | None = None,
) -> tuple[float, dict[str, Any]]:
    """The cost of a call and the meta entries that go with it (``price_unknown``).

    ``price`` (configured for this model) wins over the table; ``unknown`` is what a model
    missing from the table costs (a self-hosted server: free), by default the pessimistic
    guess, flagged.
    """
    if price is not None:
        return price.cost(usage), {}
    table = table or default_prices
    known = table.lookup(model)
    if known is not None:
        return known.cost(usage), {}
    if unknown is not None:
        return unknown.cost(usage), {}
    return table.highest().cost(usage), {"price_unknown": True}
