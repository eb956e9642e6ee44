"""Secrets for tools: read at execution time, handed only to the tool that declared them,
and masked out of anything it returns, raises or records, so they never reach events,
prompts or traces.

A secret can come back encoded: inside a JSON result (quotes and backslashes escaped,
non-ASCII escaped as ``\\u00e9`` or not), in a ``repr`` (a ``KeyError`` quotes its key), URL-quoted,
or escaped twice. ``Redactor`` masks every such form, longest first, so a secret that
contains another is masked whole.
"""

from __future__ import annotations

import functools
import json
import os
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

import msgspec
import pydantic_core

from autonomic.errors import ConfigError, ToolError
from autonomic.tools.observations import clean_text

__all__ = [
    "EnvSecrets",
    "FileSecrets",
    "Redactor",
    "SecretsProvider",
    "encoded_forms",
    "redact",
    "redactor_for",
    "resolve_secrets",
]

E = TypeVar("E")


class SecretsProvider(Protocol):
    def get(self, name: str) -> str | None: ...


class EnvSecrets:
    """Secrets from environment variables (optionally with a prefix, e.g. ``AGENT_``)."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    def get(self, name: str) -> str | None:
        return os.environ.get(self.prefix + name)


class FileSecrets:
    """Secrets from a JSON object or a ``NAME=value`` file.

    The file is parsed again only when it changes (its modification time, size or inode),
    so rotating a secret needs no restart and an action costs one ``stat``, not a read.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._version: tuple[int, int, int] | None = None
        self._values: dict[str, str] = {}

    def get(self, name: str) -> str | None:
        try:
            stat = self.path.stat()
        except OSError as e:
            raise ConfigError(f"cannot read secrets file {self.path}: {e.strerror}") from None
        version = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        with self._lock:
            if version != self._version:
                self._values = self._parse()
                self._version = version
            return self._values.get(name)

    def _parse(self) -> dict[str, str]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read secrets file {self.path}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"secrets file {self.path} is not UTF-8 text") from None
        if not text.lstrip().startswith("{"):
            values: dict[str, str] = {}
            for line in text.splitlines():
                key, sep, value = line.partition("=")
                if sep:
                    values.setdefault(key.strip(), value.strip().strip("'\""))
            return values
        try:
            data: dict[str, object] = json.loads(text)  # it starts with "{": an object
        except json.JSONDecodeError as e:  # the message gives a position, never file content
            raise ConfigError(
                f"secrets file {self.path} is not valid JSON (line {e.lineno}, column {e.colno})"
            ) from None
        return {str(k): str(v) for k, v in data.items() if v is not None}


def resolve_secrets(names: tuple[str, ...], provider: SecretsProvider) -> dict[str, str]:
    """The values of ``names``; a missing one is a ToolError naming it (never its value)."""
    values: dict[str, str] = {}
    for name in names:
        try:
            value = provider.get(name)
        except ConfigError as e:
            raise ToolError(f"secret {name} could not be read: {e}") from None
        except Exception as e:
            raise ToolError(
                f"secret {name} could not be read: the secrets provider raised {type(e).__name__}"
            ) from None
        if value is not None and not isinstance(value, str):
            raise ToolError(
                f"secret {name}: the secrets provider returned a {type(value).__name__}, not a str"
            )
        if not value:
            raise ToolError(
                f"secret {name} is not set: provide it to the runtime (environment or secrets file)"
            )
        values[name] = value
    return values


def _json_inner(text: str, *, ensure_ascii: bool) -> str:
    return json.dumps(text, ensure_ascii=ensure_ascii)[1:-1]


def _msgspec_inner(text: str) -> str:
    return msgspec.json.encode(text).decode()[1:-1]


def _pydantic_inner(text: str) -> str:
    return pydantic_core.to_json(text).decode()[1:-1]


_ENCODERS: tuple[Callable[[str], str], ...] = (
    functools.partial(_json_inner, ensure_ascii=True),
    functools.partial(_json_inner, ensure_ascii=False),
    _msgspec_inner,
    _pydantic_inner,
    lambda text: repr(text)[1:-1],
    lambda text: ascii(text)[1:-1],
    lambda text: urllib.parse.quote(text, safe=""),
    urllib.parse.quote_plus,
)


def _encodings(text: str) -> Iterator[str]:
    for encode in _ENCODERS:
        try:
            yield encode(text)
        except (ValueError, UnicodeError, msgspec.EncodeError):  # e.g. a lone surrogate
            continue


def encoded_forms(secret: str) -> set[str]:
    """``secret`` as it may appear in text: raw, escaped by JSON (either ASCII mode), ``repr``,
    ``ascii`` or URL quoting, each once or twice, and JSON-unescaped when it holds escapes."""
    forms = {secret}
    for _ in range(2):
        forms.update(form for known in list(forms) for form in _encodings(known))
    if "\\" in secret:
        try:
            decoded = json.loads(f'"{secret}"')
        except json.JSONDecodeError:
            pass
        else:
            forms.add(decoded)
    return {form for form in forms if form}


class Redactor:
    """Replaces every encoded form of each secret value with ``[secret NAME]``."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        names: dict[str, str] = {}
        for name, value in sorted(secrets.items(), key=lambda item: -len(item[1])):
            for form in encoded_forms(value) if value else ():
                names.setdefault(form, name)
        self._names = names
        self.longest = max(map(len, names), default=0)
        ordered = sorted(names, key=len, reverse=True)  # longest first: a secret inside another
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def __call__(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(lambda m: f"[secret {self._names[m.group()]}]", text)

    def head(self, text: str, limit: int) -> str:
        """The first ``limit`` characters of ``text``, masked, with no start of a secret left
        at the cut (a form cut in two would otherwise escape the mask)."""
        masked = self(text[:limit])
        if self._pattern is None or len(text) <= limit:
            return masked
        cut, cut_name = 0, ""
        for form, name in self._names.items():
            for k in range(min(len(form) - 1, len(masked)), cut, -1):
                if masked.endswith(form[:k]):
                    cut, cut_name = k, name
                    break
        return f"{masked[:-cut]}[secret {cut_name}]" if cut else masked

    def value(self, value: E) -> E:
        """``value`` with every string inside it (lists, dicts, structs) masked, and its lone
        surrogates replaced, so that it can be stored."""
        return self._walk(value)  # type: ignore[no-any-return]

    def _walk(self, value: Any) -> Any:
        if isinstance(value, str):
            return clean_text(self(value))
        if isinstance(value, msgspec.Struct):
            changes = {f: self._walk(getattr(value, f)) for f in value.__struct_fields__}
            return msgspec.structs.replace(value, **changes)
        if isinstance(value, dict):
            return {self._walk(k): self._walk(v) for k, v in value.items()}
        if type(value) in (list, tuple):
            return type(value)(self._walk(v) for v in value)
        return value


@functools.lru_cache(maxsize=256)
def _cached(items: tuple[tuple[str, str], ...]) -> Redactor:
    return Redactor(dict(items))


def redactor_for(secrets: Mapping[str, str]) -> Redactor:
    """A (cached) ``Redactor`` for ``secrets``."""
    return _cached(tuple(sorted(secrets.items())))


def redact(text: str, secrets: Mapping[str, str]) -> str:
    """``text`` with every encoded form of every secret value replaced by ``[secret NAME]``."""
    return redactor_for(secrets)(text)
