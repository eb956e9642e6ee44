"""ClaimFilter: what a claim may take, checked and frozen once for every backend."""

from __future__ import annotations

import pytest

from autonomic.errors import ConfigError
from autonomic.store import ClaimFilter


def test_a_filter_copies_what_it_is_given_so_a_caller_cannot_change_it_later() -> None:
    agents, limits = {"x"}, {"x": 2}
    where = ClaimFilter(agents=agents, exclude_tenants=["acme"], agent_limits=limits)
    agents.add("y")
    limits["y"] = 1
    assert where.agents == frozenset({"x"})
    assert where.exclude_tenants == frozenset({"acme"})
    assert where.agent_limits == {"x": 2}
    with pytest.raises(TypeError):
        where.agent_limits["z"] = 3  # type: ignore[index]


def test_only_a_filter_with_limits_counts_the_leases() -> None:
    assert not ClaimFilter(agents={"x"}, orphans=True).limited
    assert not ClaimFilter(agent_limits={}).limited
    assert ClaimFilter(agent_limits={"x": 1}).limited
    assert ClaimFilter(tenant_limit=1).limited


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"agent_limits": {"x": 0}}, "limit of agent 'x'"),
        ({"agent_limits": {"x": 1.5}}, "limit of agent 'x'"),
        ({"tenant_limit": 0}, "tenant limit"),
        ({"agents": "x"}, "not a name"),
        ({"exclude_tenants": "acme"}, "not a name"),
    ],
)
def test_a_filter_that_would_strand_runs_or_misread_a_name_is_refused(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        ClaimFilter(**options)  # type: ignore[arg-type]
