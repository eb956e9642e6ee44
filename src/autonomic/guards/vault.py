"""The PII vault: which value each placeholder (``[EMAIL_1]``) stands for, encrypted.

One vault per tree of runs (keyed by the root run's id), so a child run and its parent
give one value one placeholder. Each value is sealed with AES-256-GCM under a key that
never enters the store; the placeholder is bound in as associated data, so a sealed value
moved to another name does not open. Entries are only ever added: the store refuses to
overwrite a name, and a writer that loses a race reads the vault again and retries.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from typing import Any

from autonomic.errors import ConfigError
from autonomic.store.base import Vaults

__all__ = ["KEY_ENV", "PLACEHOLDER", "Vault", "load_key", "vault_store"]

KEY_ENV = "AUTONOMIC_VAULT_KEY"
PLACEHOLDER = re.compile(r"\[([A-Z][A-Z_]*?)_(\d+)\]")
_NONCE = 12


def load_key(key: bytes | str | None = None) -> bytes:
    """A 32-byte key: ``key`` itself, or ``$AUTONOMIC_VAULT_KEY`` (base64 or hex)."""
    raw: bytes | str | None = key if key is not None else os.environ.get(KEY_ENV)
    if raw is None or raw == "":
        raise ConfigError(
            f"the PII vault needs a key: set {KEY_ENV} to 32 random bytes in base64 "
            '(python -c "import os,base64;print(base64.b64encode(os.urandom(32)).decode())")'
            ", or pass PIIGuard(key=...)"
        )
    if isinstance(raw, bytes) and len(raw) == 32:
        return raw
    text = raw.decode() if isinstance(raw, bytes) else raw
    decoded: bytes | None = None
    try:
        decoded = bytes.fromhex(text) if len(text) == 64 else base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        decoded = None
    if decoded is None or len(decoded) != 32:
        raise ConfigError(f"the PII vault key must be 32 bytes (base64 or hex in {KEY_ENV})")
    return decoded


def _aesgcm(key: bytes) -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:
        raise ConfigError(
            'the PII vault needs the cryptography package: pip install "autonomic[pii]"'
        ) from None
    return AESGCM(key)


_HOLDERS: dict[type, bool] = {}


def vault_store(store: object) -> Vaults:
    """``store`` as a vault holder; ConfigError naming the store when it cannot be one."""
    kind = type(store)
    holds = _HOLDERS.get(kind)
    if holds is None:  # a protocol check is slow: once per type
        holds = _HOLDERS[kind] = isinstance(store, Vaults)
    if not holds:
        raise ConfigError(
            f"store {getattr(store, 'url', type(store).__name__)!r} cannot hold a PII vault "
            "(the memory and SQLite stores can)"
        )
    return store  # type: ignore[return-value]


class Vault:
    """One tree of runs' placeholders, decrypted in memory while a process drives it."""

    def __init__(self, store: Vaults, vault_id: str, key: bytes) -> None:
        self.store, self.vault_id = store, vault_id
        self._cipher = _aesgcm(key)
        self.values: dict[str, str] = {}
        self.names: dict[str, str] = {}
        self._counts: dict[str, int] = {}
        self.loaded = False

    def _aad(self, name: str) -> bytes:
        return f"{self.vault_id}\0{name}".encode()

    async def load(self) -> None:
        """Read every entry (again): another process may have added some."""
        sealed = await self.store.get_vault(self.vault_id)
        self.loaded = True
        for name, blob in sealed.items():
            if name in self.values:
                continue
            try:
                value = self._cipher.decrypt(blob[:_NONCE], blob[_NONCE:], self._aad(name))
            except Exception:
                raise ConfigError(
                    f"the PII vault of run {self.vault_id} does not open with this key "
                    f"(is {KEY_ENV} the key its runs were written with?)"
                ) from None
            self._add(name, value.decode())

    def _add(self, name: str, value: str) -> None:
        self.values[name] = value
        self.names[value] = name
        match = PLACEHOLDER.fullmatch(name)
        if match is not None:
            label, number = match.group(1), int(match.group(2))
            self._counts[label] = max(self._counts.get(label, 0), number)

    def propose(self, label: str, value: str, fresh: dict[str, str]) -> str:
        """The placeholder of ``value``: its own if known, else a new one (added to
        ``fresh``, to be written with ``save``)."""
        known = self.names.get(value)
        if known is not None:
            return known
        number = self._counts.get(label, 0) + 1
        name = f"[{label}_{number}]"
        self._counts[label] = number
        fresh[name] = value
        self.names[value] = name
        return name

    async def save(self, fresh: Mapping[str, str]) -> bool:
        """Write new entries; False (nothing of ours kept) when another writer took one
        of the names first: read the vault again and start over."""
        sealed = {}
        for name, value in fresh.items():
            nonce = os.urandom(_NONCE)
            sealed[name] = nonce + self._cipher.encrypt(nonce, value.encode(), self._aad(name))
        taken = await self.store.put_vault(self.vault_id, sealed)
        if taken:
            for value in fresh.values():
                self.names.pop(value, None)
            self._counts.clear()
            for name in self.values:
                self._add(name, self.values[name])
            return False
        for name, value in fresh.items():
            self._add(name, value)
        return True

    def restore(self, text: str) -> str:
        """``text`` with every known placeholder replaced by its value."""
        if "[" not in text:
            return text
        return PLACEHOLDER.sub(lambda m: self.values.get(m.group(), m.group()), text)
