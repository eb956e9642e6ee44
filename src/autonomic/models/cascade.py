"""A cascade: deterministic rules first, then the cheapest model, escalating only when needed.

Most requests in an agent loop are easy; a cascade answers them cheaply and pays for a
strong model only when the cheap answer fails a check (an unusable tool call, an empty
answer, text that is not the JSON asked for, or a caller's own check) or the model
reports low confidence. ``meta["tier"]`` names the tier that answered ("rules" or a
model's name) and ``meta["escalations"]`` why the ones before it were passed over. The
usage and cost of the rejected answers are added in: escalation is not free.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from autonomic.errors import ConfigError, ModelError
from autonomic.models.base import Model, ModelRequest, ModelResponse, Usage
from autonomic.models.wrapper import ModelWrapper, sum_costs

__all__ = ["Cascade", "Check", "Rule", "default_check", "reported_confidence"]

Rule = Callable[[ModelRequest], "ModelResponse | str | None"]
Check = Callable[[ModelRequest, ModelResponse], "str | None"]
RULES_TIER = "rules"


def default_check(request: ModelRequest, response: ModelResponse) -> str | None:
    """Why ``response`` should be escalated, or None when it is usable."""
    broken = [c for c in response.tool_calls if c.error]
    if broken:
        return f"tool call {broken[0].name!r} is unusable: {broken[0].error}"
    if not response.text.strip() and not response.tool_calls:
        return "empty answer"
    if request.response_schema is not None and not response.tool_calls:
        try:
            json.loads(response.text)
        except json.JSONDecodeError:
            return "the answer is not the JSON that was asked for"
    return None


def reported_confidence(response: ModelResponse) -> float | None:
    """The confidence a model (or an adapter) reported in ``meta["confidence"]``, if any."""
    value = response.meta.get("confidence")
    return float(value) if isinstance(value, int | float) else None


def _from_rule(answer: ModelResponse | str) -> ModelResponse:
    if isinstance(answer, str):
        return ModelResponse(text=answer, model=RULES_TIER, cost=0.0, meta={"tier": RULES_TIER})
    cost = 0.0 if answer.cost is None else answer.cost
    return msgspec.structs.replace(answer, cost=cost, meta={**answer.meta, "tier": RULES_TIER})


class Cascade(ModelWrapper):
    """Rules, then ``tiers`` from cheapest to strongest; the last tier's answer is final."""

    def __init__(
        self,
        tiers: Sequence[Model],
        *,
        rules: Sequence[Rule] = (),
        check: Check = default_check,
        min_confidence: float = 0.5,
        confidence: Callable[[ModelResponse], float | None] = reported_confidence,
    ) -> None:
        if not tiers:
            raise ConfigError("a cascade needs at least one model")
        super().__init__(tiers[0])
        self.tiers = tuple(tiers)
        self.rules = tuple(rules)
        self._check = check
        self._min_confidence = min_confidence
        self._confidence = confidence

    @property
    def name(self) -> str:
        return "cascade(" + ", ".join(m.name for m in self.tiers) + ")"

    def _escalation_reason(self, request: ModelRequest, response: ModelResponse) -> str | None:
        reason = self._check(request, response)
        if reason is not None:
            return reason
        confidence = self._confidence(response)
        if confidence is not None and confidence < self._min_confidence:
            return f"low confidence ({confidence:g} < {self._min_confidence:g})"
        return None

    async def _complete(self, request: ModelRequest) -> ModelResponse:
        for rule in self.rules:
            answer = rule(request)
            if answer is not None:
                return _from_rule(answer)
        answered: list[ModelResponse] = []
        escalations: list[dict[str, str]] = []
        for model in self.tiers[:-1]:
            try:
                response = await model.complete(request)
            except ModelError as e:
                escalations.append({"tier": model.name, "reason": f"failed: {e}"[:300]})
                continue
            answered.append(response)
            reason = self._escalation_reason(request, response)
            if reason is None:
                return _final(response, model.name, answered, escalations, None)
            escalations.append({"tier": model.name, "reason": reason})
        strongest = self.tiers[-1]
        response = await strongest.complete(request)
        answered.append(response)
        reason = self._escalation_reason(request, response)
        return _final(response, strongest.name, answered, escalations, reason)


def _final(
    response: ModelResponse,
    tier: str,
    answered: list[ModelResponse],
    escalations: list[dict[str, str]],
    unresolved: str | None,
) -> ModelResponse:
    meta: dict[str, Any] = {**response.meta, "tier": tier}
    if escalations:
        meta["escalations"] = escalations
    if unresolved is not None:
        meta["unvalidated"] = unresolved
    if any(r.meta.get("price_unknown") for r in answered):
        meta["price_unknown"] = True
    usage = sum((r.usage for r in answered), Usage())
    cost = sum_costs([r.cost for r in answered])
    return msgspec.structs.replace(response, usage=usage, cost=cost, meta=meta)
