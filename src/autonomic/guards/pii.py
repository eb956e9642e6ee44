"""The PII guard: personal data never reaches a model, an event or a log.

Detected values become stable placeholders (``[EMAIL_1]``; one value, one placeholder,
across a whole tree of runs) in the goal before the run records it, and in every tool
output and error before they are recorded. The model reasons over placeholders; the tool
receives its arguments restored (that copy is never recorded), and its output is masked
again on the way back. The mapping lives only in the encrypted vault (``guards.vault``);
``reveal`` restores a run's answer for a reader who holds the key
(``autonomic runs show RUN --reveal``).
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

import msgspec

from autonomic.events import ActionCompleted, ActionFailed, ActionRequested, Event
from autonomic.guards.base import Guard, Outcome, run_store
from autonomic.guards.detectors import Detector, RegexDetector, detect
from autonomic.guards.vault import PLACEHOLDER, Vault, load_key, vault_store
from autonomic.state import RunState

__all__ = ["LABELS", "PIIGuard", "reveal"]

LABELS = {
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "CREDIT_CARD": "CARD",
    "IBAN_CODE": "IBAN",
    "IP_ADDRESS": "IP",
    "US_SSN": "SSN",
    "UK_NINO": "NINO",
    "API_KEY": "API_KEY",
    "PRIVATE_KEY": "PRIVATE_KEY",
    "PERSON": "PERSON",
}
"""Placeholder labels by entity type; other types are used as they are."""

_CACHED_VAULTS = 256


def _label(entity_type: str) -> str:
    known = LABELS.get(entity_type)
    if known is not None:
        return known
    return "".join(c if c.isalnum() else "_" for c in entity_type.upper()).strip("_") or "PII"


class PIIGuard(Guard):
    """Mask PII before any model sees it; restore it only for tools and authorised readers.

    ``detectors``: the built-in regex tier by default; add a ``PresidioDetector`` for
    names. ``key``: 32 bytes for the vault (default: ``$AUTONOMIC_VAULT_KEY``, read when
    first needed).
    """

    name = "pii"

    def __init__(
        self, detectors: Sequence[Detector] | None = None, *, key: bytes | str | None = None
    ) -> None:
        self.detectors: tuple[Detector, ...] = tuple(detectors or (RegexDetector(),))
        self._key_given = key
        self._key: bytes | None = None
        self._vaults: collections.OrderedDict[tuple[int, str], Vault] = collections.OrderedDict()

    def _vault(self, vault_id: str) -> Vault:
        store = vault_store(run_store())
        if self._key is None:
            self._key = load_key(self._key_given)
        slot = (id(store), vault_id)
        vault = self._vaults.get(slot)
        if vault is None or vault.store is not store:
            vault = self._vaults[slot] = Vault(store, vault_id, self._key)
            while len(self._vaults) > _CACHED_VAULTS:
                self._vaults.popitem(last=False)
        self._vaults.move_to_end(slot)
        return vault

    async def _opened(self, vault_id: str) -> Vault:
        vault = self._vault(vault_id)
        if not vault.loaded:
            await vault.load()
        return vault

    async def mask(self, vault: Vault, text: str) -> str:
        """``text`` with every detected value replaced by its placeholder."""
        found = detect(text, self.detectors)
        if not found:
            return text
        for _ in range(5):
            fresh: dict[str, str] = {}
            parts, at = [], 0
            for d in found:
                value = text[d.start : d.end]
                parts += [text[at : d.start], vault.propose(_label(d.entity_type), value, fresh)]
                at = d.end
            parts.append(text[at:])
            if not fresh or await vault.save(fresh):
                return "".join(parts)
            await vault.load()
        raise RuntimeError("the PII vault kept changing under this writer")

    async def screen_goal(self, run_id: str, goal: str) -> str:
        return await self.mask(await self._opened(run_id), goal)

    async def screen_inbound(self, state: RunState, kind: str, data: Any) -> Any:
        return await self._masked(await self._opened(_vault_id(state)), data)

    async def tool_input(self, state: RunState, request: ActionRequested) -> ActionRequested:
        if not _has_placeholder(request.args):
            return request
        vault = await self._opened(_vault_id(state))
        if any(p not in vault.values for p in _placeholders(request.args)):
            await vault.load()  # another process may have named it
        return msgspec.structs.replace(request, args=_restored(request.args, vault))

    async def tool_output(
        self, state: RunState, request: ActionRequested, outcome: Outcome
    ) -> Outcome:
        vault = await self._opened(_vault_id(state))
        if isinstance(outcome, ActionFailed):
            return msgspec.structs.replace(outcome, error=await self.mask(vault, outcome.error))
        assert isinstance(outcome, ActionCompleted)
        observation = await self.mask(vault, outcome.observation)
        full = await self.mask(vault, outcome.full_output) if outcome.full_output else ""
        return msgspec.structs.replace(outcome, observation=observation, full_output=full)

    async def tool_events(
        self, state: RunState, request: ActionRequested, events: list[Event]
    ) -> list[Event]:
        vault = await self._opened(_vault_id(state))
        masked = []
        for event in events:
            changes = {}
            for name in event.__struct_fields__:
                value = getattr(event, name)
                screened = await self._masked(vault, value)
                if screened is not value:
                    changes[name] = screened
            masked.append(msgspec.structs.replace(event, **changes) if changes else event)
        return masked

    async def _masked(self, vault: Vault, value: Any) -> Any:
        """``value`` with the strings in it masked (the same object when none changed)."""
        if isinstance(value, str):
            screened = await self.mask(vault, value)
            return value if screened == value else screened
        if isinstance(value, dict):
            items = {k: await self._masked(vault, v) for k, v in value.items()}
            return value if all(items[k] is value[k] for k in value) else items
        if isinstance(value, list | tuple):
            parts = [await self._masked(vault, v) for v in value]
            return (
                value
                if all(a is b for a, b in zip(parts, value, strict=True))
                else type(value)(parts)
            )
        return value


def _vault_id(state: RunState) -> str:
    return state.root_run_id or state.run_id


def _placeholders(value: Any) -> list[str]:
    if isinstance(value, str):
        return [m.group() for m in PLACEHOLDER.finditer(value)]
    if isinstance(value, dict):
        return [p for v in value.values() for p in _placeholders(v)]
    if isinstance(value, list | tuple):
        return [p for v in value for p in _placeholders(v)]
    return []


def _has_placeholder(value: Any) -> bool:
    return bool(_placeholders(value))


def _restored(value: Any, vault: Vault) -> Any:
    if isinstance(value, str):
        return vault.restore(value)
    if isinstance(value, dict):
        return {k: _restored(v, vault) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_restored(v, vault) for v in value)
    return value


async def reveal(store: Any, run_id: str, value: Any, *, key: bytes | str | None = None) -> Any:
    """``value`` (a run's answer, say, or any JSON data) with the run's placeholders
    restored in its strings: for a reader who holds the vault key."""
    info = await store.get_run(run_id)
    vault = Vault(vault_store(store), info.root_run_id or run_id, load_key(key))
    await vault.load()
    return _restored(value, vault)
