"""Approvals bound to content: a digest of exactly what will run, and signed decisions.

A tool call that needs a person's approval is recorded as ``ApprovalRequested`` with a
digest over (run, call id, tool, arguments, policy version). A decision names that
digest and is signed with an HMAC key the runtime holds, so a decision for another
call, a forged one, or one replayed onto another run is refused when the run reads it.
An approver may edit the arguments: the edited call gets its own digest, and that is
what runs.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from autonomic.errors import ConfigError
from autonomic.events import ApprovalDenied, ApprovalGranted, ApprovalRequested
from autonomic.tools.secrets import SecretsProvider

__all__ = [
    "APPROVAL_KEY_NAME",
    "POLICY_VERSION",
    "ApprovalSigner",
    "PendingApproval",
    "approval_digest",
    "load_approval_key",
]

POLICY_VERSION = "1"
APPROVAL_KEY_NAME = "AUTONOMIC_APPROVAL_KEY"
"""The secret that signs decisions; without it, a key file is made in the config folder."""

_canonical = msgspec.json.Encoder(order="sorted")


def approval_digest(run_id: str, call_id: str, tool: str, args: dict[str, Any]) -> str:
    """SHA-256 over a canonical encoding of exactly the call that would run."""
    body = _canonical.encode([POLICY_VERSION, run_id, call_id, tool, args])
    return hashlib.sha256(body).hexdigest()


class PendingApproval(msgspec.Struct, frozen=True):
    """A tool call waiting for a person: what it is, why it waits, and its digest."""

    run_id: str
    action_id: str
    call_id: str
    tool: str
    args: dict[str, Any]
    rationale: str
    reason: str
    digest: str

    @classmethod
    def of(cls, run_id: str, e: ApprovalRequested) -> PendingApproval:
        return cls(
            run_id, e.action_id, e.call_id, e.tool, dict(e.args), e.rationale, e.reason, e.digest
        )


def _config_dir() -> Path:
    base = os.environ.get("AUTONOMIC_HOME") or os.environ.get("XDG_CONFIG_HOME")
    return Path(base) / "autonomic" if base else Path.home() / ".config" / "autonomic"


def load_approval_key(provider: SecretsProvider) -> bytes:
    """The signing key: the ``AUTONOMIC_APPROVAL_KEY`` secret, or a per-user key file
    (created once, readable by its owner only) so that local processes agree."""
    value = provider.get(APPROVAL_KEY_NAME)
    if value:
        return value.encode()
    path = _config_dir() / "approval.key"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    except OSError as e:
        raise ConfigError(
            f"cannot read the approval key {path}: {e.strerror}; set {APPROVAL_KEY_NAME}"
        ) from e
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(
            f"cannot create the approval key {path}: {e.strerror}; set {APPROVAL_KEY_NAME}"
        ) from e
    key = secrets.token_hex(32).encode()
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


class ApprovalSigner:
    """Signs and checks decisions on approval requests. The key is read when first
    needed, so a runtime that never meets an approval never needs one."""

    def __init__(self, key: bytes | Callable[[], bytes]) -> None:
        self._key = key

    def _mac(self, *parts: object) -> str:
        if callable(self._key):
            self._key = self._key()
        return hmac.new(self._key, _canonical.encode(parts), hashlib.sha256).hexdigest()

    def grant(
        self,
        run_id: str,
        request: ApprovalRequested,
        approver: str,
        args: dict[str, Any] | None = None,
    ) -> ApprovalGranted:
        approved = (
            approval_digest(run_id, request.call_id, request.tool, args)
            if args is not None
            else request.digest
        )
        signature = self._mac("grant", run_id, request.digest, approver, approved)
        return ApprovalGranted(request.digest, approver, signature, args, approved)

    def deny(
        self, run_id: str, request: ApprovalRequested, approver: str, reason: str = ""
    ) -> ApprovalDenied:
        signature = self._mac("deny", run_id, request.digest, approver, reason)
        return ApprovalDenied(request.digest, approver, signature, reason)

    def refusal(
        self, run_id: str, request: ApprovalRequested, decision: ApprovalGranted | ApprovalDenied
    ) -> str | None:
        """Why ``decision`` must not be acted on, or None when it is genuine."""
        if isinstance(decision, ApprovalGranted):
            parts: tuple[object, ...] = ("grant", run_id, request.digest, decision.approver)
            parts += (decision.approved_digest,)
        else:
            parts = ("deny", run_id, request.digest, decision.approver, decision.reason)
        if not hmac.compare_digest(decision.signature, self._mac(*parts)):
            return "its signature is not valid (forged, or signed with another key)"
        if isinstance(decision, ApprovalGranted):
            expected = (
                approval_digest(run_id, request.call_id, request.tool, decision.args)
                if decision.args is not None
                else request.digest
            )
            if decision.approved_digest != expected:
                return "the approved digest does not match the approved arguments"
        return None
