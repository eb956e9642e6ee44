"""Per-tenant budgets: the same mechanism as a child's share of its parent's budget.

A tenant's budget lives in the store. Each new root run of the tenant is given a share
of what the tenant has left (recorded on its ``RunStarted``, and enforced by a Budget
guard as a child's share is), which the tenant holds until the run ends. The hold is
settled lazily, whenever the tenant's budget is read or a new run takes its share:
every held run that has ended gives back what it did not spend. Nothing needs to run
when a run ends, so a crash can never lose a settlement; at worst a hold is counted a
little longer.

Topping a tenant up wakes its runs that wait for budget: each is given a share of what
the tenant now has left, held under ``RUN_ID#topup-N`` beside its first hold and settled
(at nothing: the run's spending is counted under its first hold) when it ends.
"""

from __future__ import annotations

import math

from autonomic.errors import ConfigError, RunNotFound
from autonomic.guards.budget import ledger_spent, waits_for_budget
from autonomic.loader import load_state
from autonomic.state import TERMINAL
from autonomic.store.base import Store, TenantBudget, TenantBudgets

__all__ = [
    "checked_limits",
    "grant_for_run",
    "grant_waiting_runs",
    "settled_budget",
    "tenant_store",
]

_EXTRA = "#topup-"
"""Joins a run id and the number of a further share it was given when it waited."""


def _owner(key: str) -> str:
    """The run a hold belongs to."""
    return key.split(_EXTRA, 1)[0]


def tenant_store(store: Store) -> TenantBudgets:
    if not isinstance(store, TenantBudgets):
        raise ConfigError(
            f"the store {type(store).__name__} keeps no tenant budgets: use the SQLite or "
            "in-memory store"
        )
    return store


def checked_limits(cost_usd: float | None, tokens: float | None) -> dict[str, float]:
    """The limits (or amounts) given, checked; ConfigError for a bad one or none."""
    limits: dict[str, float] = {}
    for key, value in (("cost_usd", cost_usd), ("tokens", tokens)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"a tenant's {key} must be a number, not {value!r}")
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"a tenant's {key} must be a finite number >= 0, not {value!r}")
        limits[key] = float(value)
    if not limits:
        raise ConfigError("give the tenant a limit: cost_usd=... and/or tokens=...")
    return limits


async def settled_budget(store: Store, tenant: str) -> TenantBudget | None:
    """The tenant's budget after every ended run it holds has given back what it did
    not spend."""
    budgets = tenant_store(store)
    budget = await budgets.get_tenant_budget(tenant)
    if budget is None:
        return None
    changed = False
    for key in list(budget.held):
        run_id = _owner(key)
        try:
            info = await store.get_run(run_id)
        except RunNotFound:
            continue  # being created right now (the hold comes first), or never was
        if info.status not in TERMINAL:
            continue
        # what the run spent counts once, under its first hold; further shares go back whole
        spent = ledger_spent(await load_state(store, run_id)) if key == run_id else {}
        changed |= await budgets.settle_tenant_budget(tenant, key, spent)
    return await budgets.get_tenant_budget(tenant) if changed else budget


async def grant_waiting_runs(store: Store, tenant: str) -> list[tuple[str, dict[str, float]]]:
    """Give each of ``tenant``'s root runs that waits for budget a share of what the
    tenant has left (held like a new run's), oldest first: (run id, what to top it up
    by) for each that got something."""
    budget = await settled_budget(store, tenant)
    if budget is None:
        return []
    shares: dict[str, int] = {}
    for key in budget.held:
        shares[_owner(key)] = shares.get(_owner(key), 0) + 1
    granted = []
    for run_id, held in shares.items():
        try:
            info = await store.get_run(run_id)
        except RunNotFound:
            continue
        if info.status != "waiting" or info.wait is None or not waits_for_budget(info.wait.reason):
            continue
        grant = await tenant_store(store).hold_tenant_budget(tenant, f"{run_id}{_EXTRA}{held}")
        # tokens are whole: a share of less than one is no share
        grant = {k: v for k, v in (grant or {}).items() if v >= (1 if k == "tokens" else 1e-9)}
        if grant:
            granted.append((run_id, grant))
    return granted


async def grant_for_run(store: Store, tenant: str | None, run_id: str) -> dict[str, float] | None:
    """What a new root run of ``tenant`` is given (held by the tenant); None when the
    tenant has no budget (or the store keeps none)."""
    if tenant is None or not isinstance(store, TenantBudgets):
        return None
    if await settled_budget(store, tenant) is None:
        return None
    return await store.hold_tenant_budget(tenant, run_id)
