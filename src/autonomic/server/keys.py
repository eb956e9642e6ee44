"""API keys: created once and shown once, stored only as scrypt hashes, with scopes, a
tenant, an optional expiry and a rate limit each; revocable.

The keys live in one JSON file (``$AUTONOMIC_KEYS``, or ``keys.json`` in the autonomic
config directory), written atomically and readable by its owner only, so that
``autonomic keys create`` in one shell and ``autonomic serve`` in another agree without a
database; the server re-reads the file when it changes, so a revocation takes effect at
the next request. Checking a key costs one scrypt hash the first time it is seen by a
process; after that a memo of its SHA-256 answers, while the record still allows it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import msgspec

from autonomic.approvals import _config_dir
from autonomic.errors import AutonomicError, ConfigError

__all__ = [
    "SCOPES",
    "ApiKey",
    "KeyRefused",
    "KeyStore",
    "default_keys_path",
]

SCOPES = (
    "runs:read",
    "runs:write",
    "approvals:write",
    "budgets:write",
    "metrics:read",
    "pii:reveal",
)
"""What a key may be allowed to do: read runs and their events; create, cancel, fork,
resume and signal runs; approve or deny tool calls; top up budgets; read metrics; read a
run's goal and answer with the PII vault's values restored."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_TOKEN = re.compile(r"^ak_([0-9a-f]{12})\.([A-Za-z0-9_-]{20,100})$")


class KeyRefused(AutonomicError):
    """The presented key is unknown, malformed, expired or revoked (the message says which)."""


class ApiKey(msgspec.Struct, frozen=True, kw_only=True):
    """A key's record: everything but the key itself, which is kept only as a hash."""

    id: str
    name: str
    tenant: str
    scopes: tuple[str, ...]
    salt: str
    hash: str
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    rate_per_s: float = 20.0
    burst: int = 60

    @property
    def identity(self) -> str:
        """Who acted, as recorded in the log (an approval's approver, say)."""
        return f"key:{self.name}({self.id})@{self.tenant}"

    def refusal(self, now: float) -> str | None:
        if self.revoked_at is not None:
            return f"API key {self.id} was revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return f"API key {self.id} expired; create a new one with 'autonomic keys create'"
        return None

    def public(self) -> dict[str, object]:
        """The record without its hash and salt, for listing."""
        fields = msgspec.to_builtins(self)
        del fields["salt"], fields["hash"]
        return fields  # type: ignore[no-any-return]


class _File(msgspec.Struct):
    keys: list[ApiKey] = msgspec.field(default_factory=list)


def default_keys_path() -> Path:
    env = os.environ.get("AUTONOMIC_KEYS")
    return Path(env) if env else _config_dir() / "keys.json"


def _hash(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)


class KeyStore:
    """The key file at ``path``, read again whenever it changes on disk."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_keys_path()
        self._seen: tuple[float, int] | None = None
        self._keys: dict[str, ApiKey] = {}
        self._verified: dict[str, str] = {}  # sha256 of a presented key → its key id
        self._lock = threading.Lock()

    # -- reading ----------------------------------------------------------------------------

    def _load(self) -> dict[str, ApiKey]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._seen, self._keys = None, {}
            return self._keys
        stamp = (st.st_mtime, st.st_size)
        if stamp != self._seen:
            try:
                data = msgspec.json.decode(self.path.read_bytes(), type=_File)
            except (OSError, msgspec.DecodeError) as e:
                raise ConfigError(f"cannot read the API key file {self.path}: {e}") from e
            self._keys, self._seen = {k.id: k for k in data.keys}, stamp
        return self._keys

    def list(self) -> list[ApiKey]:
        with self._lock:
            return sorted(self._load().values(), key=lambda k: k.created_at)

    def seen(self, token: str) -> bool:
        """Whether ``token`` was verified here before (checking it again costs no hash)."""
        return hashlib.sha256(token.encode()).hexdigest() in self._verified

    def verify(self, token: str, now: float | None = None) -> ApiKey:
        """The key record of ``token``; KeyRefused saying why when it does not allow access."""
        match = _TOKEN.match(token)
        if match is None:
            raise KeyRefused("malformed API key: expected 'ak_<id>.<secret>'")
        key_id, secret = match.groups()
        memo = hashlib.sha256(token.encode()).hexdigest()
        with self._lock:
            record = self._load().get(key_id)
            known = self._verified.get(memo) == key_id
        if record is None:
            raise KeyRefused(f"unknown API key {key_id}")
        if not known:
            expected = bytes.fromhex(record.hash)
            if not hmac.compare_digest(_hash(secret, bytes.fromhex(record.salt)), expected):
                raise KeyRefused(f"wrong secret for API key {key_id}")
            with self._lock:
                if len(self._verified) > 10_000:
                    self._verified.clear()
                self._verified[memo] = key_id
        refusal = record.refusal(time.time() if now is None else now)
        if refusal is not None:
            raise KeyRefused(refusal)
        return record

    # -- writing ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _editing(self) -> Iterator[dict[str, ApiKey]]:
        """The keys, to change in place; written back atomically under a file lock."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a") as lock, self._lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._seen = None
            keys = dict(self._load())
            yield keys
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(msgspec.json.format(msgspec.json.encode(_File(list(keys.values())))))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            self._seen = None

    def create(
        self,
        name: str,
        *,
        tenant: str,
        scopes: Sequence[str],
        expires_in_s: float | None = None,
        rate_per_s: float = 20.0,
        burst: int = 60,
    ) -> tuple[ApiKey, str]:
        """A new key: its record and the key itself (shown once, never stored)."""
        for what, value in (("name", name), ("tenant", tenant)):
            if not isinstance(value, str) or not _NAME.match(value):
                raise ConfigError(
                    f"key {what} {value!r} must be 1-64 letters, digits, '.', '_', '@' or '-'"
                )
        unknown = [s for s in scopes if s not in SCOPES]
        if unknown or not scopes:
            raise ConfigError(
                f"unknown scope(s) {', '.join(unknown) or '(none given)'}: "
                f"choose from {', '.join(SCOPES)}"
            )
        if expires_in_s is not None and expires_in_s <= 0:
            raise ConfigError("a key's lifetime must be positive")
        if not rate_per_s > 0 or burst < 1:
            raise ConfigError("a key's rate limit must be positive (requests per second, burst)")
        secret, salt = secrets.token_urlsafe(32), secrets.token_bytes(16)
        now = time.time()
        record = ApiKey(
            id=secrets.token_hex(6),
            name=name,
            tenant=tenant,
            scopes=tuple(dict.fromkeys(scopes)),
            salt=salt.hex(),
            hash=_hash(secret, salt).hex(),
            created_at=now,
            expires_at=None if expires_in_s is None else now + expires_in_s,
            rate_per_s=float(rate_per_s),
            burst=burst,
        )
        with self._editing() as keys:
            keys[record.id] = record
        return record, f"ak_{record.id}.{secret}"

    def revoke(self, key_id: str) -> ApiKey:
        with self._editing() as keys:
            record = keys.get(key_id)
            if record is None:
                raise ConfigError(f"no API key {key_id!r}; 'autonomic keys list' shows them")
            if record.revoked_at is None:
                record = keys[key_id] = msgspec.structs.replace(record, revoked_at=time.time())
        return record
