"""Secrets for tools: read at execution time, handed only to the tool that declared them,
and masked out of anything it returns, so they never reach events, prompts or traces."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from autonomic.errors import ConfigError, ToolError

__all__ = ["EnvSecrets", "FileSecrets", "SecretsProvider", "redact", "resolve_secrets"]


class SecretsProvider(Protocol):
    def get(self, name: str) -> str | None: ...


class EnvSecrets:
    """Secrets from environment variables (optionally with a prefix, e.g. ``AGENT_``)."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    def get(self, name: str) -> str | None:
        return os.environ.get(self.prefix + name)


class FileSecrets:
    """Secrets from a JSON object or a ``NAME=value`` file, read on every lookup so that
    rotating a secret needs no restart."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def get(self, name: str) -> str | None:
        try:
            text = self.path.read_text()
        except OSError as e:
            raise ConfigError(f"cannot read secrets file {self.path}: {e.strerror}") from e
        if text.lstrip().startswith("{"):
            try:
                value = json.loads(text).get(name)
            except json.JSONDecodeError as e:
                raise ConfigError(f"secrets file {self.path} is not valid JSON: {e}") from e
            return None if value is None else str(value)
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() == name:
                return value.strip().strip("'\"")
        return None


def resolve_secrets(names: tuple[str, ...], provider: SecretsProvider) -> dict[str, str]:
    """The values of ``names``; a missing one is a ToolError naming it (never its value)."""
    values: dict[str, str] = {}
    for name in names:
        value = provider.get(name)
        if not value:
            raise ToolError(
                f"secret {name} is not set: provide it to the runtime (environment or secrets file)"
            )
        values[name] = value
    return values


def redact(text: str, secrets: Mapping[str, str]) -> str:
    """``text`` with every secret value replaced by ``[secret NAME]``."""
    for name, value in secrets.items():
        if value and value in text:
            text = text.replace(value, f"[secret {name}]")
    return text
