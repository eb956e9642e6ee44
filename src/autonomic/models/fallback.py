"""A fallback chain: ask the next model when one fails.

By default any ``ModelError`` moves on (a provider that is down, a model id the server
does not know, an answer that cannot be parsed). ``meta["fallback_from"]`` lists the
models that failed before the one that answered.
"""

from __future__ import annotations

from collections.abc import Sequence

from autonomic.errors import ConfigError, ModelError, ModelUnavailable
from autonomic.models.base import Model, ModelRequest, ModelResponse
from autonomic.models.wrapper import ModelWrapper, with_meta

__all__ = ["Fallback"]


class Fallback(ModelWrapper):
    """Tries ``models`` in order until one answers."""

    def __init__(
        self, models: Sequence[Model], *, on: tuple[type[ModelError], ...] = (ModelError,)
    ) -> None:
        if not models:
            raise ConfigError("a fallback chain needs at least one model")
        super().__init__(models[0])
        self.models = tuple(models)
        self._on = on

    @property
    def name(self) -> str:
        return "fallback(" + ", ".join(m.name for m in self.models) + ")"

    async def _complete(self, request: ModelRequest) -> ModelResponse:
        failures: list[tuple[str, ModelError]] = []
        for model in self.models:
            try:
                response = await model.complete(request)
            except self._on as e:
                failures.append((model.name, e))
                continue
            if not failures:
                return response
            return with_meta(response, fallback_from=[name for name, _ in failures])
        raise _all_failed(failures) from failures[-1][1]


def _all_failed(failures: list[tuple[str, ModelError]]) -> ModelError:
    summary = "; ".join(f"{name}: {error}" for name, error in failures)
    message = f"every model in the fallback chain failed: {summary}"
    if all(isinstance(e, ModelUnavailable) for _, e in failures):
        waits = [e.retry_after for _, e in failures if isinstance(e, ModelUnavailable)]
        known = [w for w in waits if w is not None]
        return ModelUnavailable(message, retry_after=min(known) if known else None)
    return ModelError(message)
