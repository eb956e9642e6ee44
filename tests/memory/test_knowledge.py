"""The knowledge graph (L4): bi-temporal facts, supersession, multi-hop queries."""

from __future__ import annotations

import pytest

from autonomic.errors import ConfigError
from autonomic.memory.knowledge import KnowledgeGraph


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_superseded_fact_is_hidden_now_and_returned_as_of_its_time(location: str) -> None:
    clock = Clock()
    with KnowledgeGraph(location, clock=clock) as graph:
        check_supersession(graph, clock)


def check_supersession(graph: KnowledgeGraph, clock: Clock) -> None:
    old, _ = graph.assert_fact("alice", "lives_in", "Paris", single=True, provenance=["r1:4"])
    clock.now = 200.0
    new, closed = graph.assert_fact("alice", "lives_in", "Berlin", single=True)
    assert [f.id for f in closed] == [old.id]
    assert [f.object for f in graph.facts("alice", "lives_in")] == ["Berlin"]
    assert [f.object for f in graph.facts("alice", "lives_in", as_of=150.0)] == ["Paris"]
    assert graph.facts("alice", "lives_in", as_of=50.0) == []
    assert graph.facts("alice", "lives_in", as_of=150.0)[0].provenance == ("r1:4",)
    again, closed = graph.assert_fact("alice", "lives_in", "Berlin", single=True)
    assert again.id == new.id and closed == ()  # asserting a current fact changes nothing
    graph.assert_fact("alice", "speaks", "French")
    graph.assert_fact("alice", "speaks", "German")  # not single: both hold
    assert {f.object for f in graph.facts("alice", "speaks")} == {"French", "German"}
    clock.now = 300.0
    assert graph.retract(new.id) and not graph.retract(new.id)
    assert graph.facts("alice", "lives_in") == []
    assert [f.object for f in graph.facts("alice", "lives_in", as_of=250.0)] == ["Berlin"]


def test_traversal_follows_hops_relations_and_cycles(location: str) -> None:
    with KnowledgeGraph(location) as graph:
        check_traversal(graph)


def check_traversal(graph: KnowledgeGraph) -> None:
    for s, r, o in [
        ("alice", "works_for", "acme"),
        ("acme", "located_in", "berlin"),
        ("berlin", "in_country", "germany"),
        ("germany", "in_union", "eu"),
        ("acme", "owned_by", "alice"),  # a cycle
        ("bob", "works_for", "acme"),
    ]:
        graph.assert_fact(s, r, o)
    two = graph.traverse("alice", 2)
    assert {(f.triple, hop) for f, hop in two} == {
        (("alice", "works_for", "acme"), 1),
        (("acme", "located_in", "berlin"), 2),
        (("acme", "owned_by", "alice"), 2),
    }
    three = {f.object for f, _ in graph.traverse("alice", 3)}
    assert "germany" in three and "eu" not in three
    only = graph.traverse("alice", 3, relations=["works_for", "located_in"])
    assert [f.object for f, _ in only] == ["acme", "berlin"]
    with pytest.raises(ConfigError, match="depth"):
        graph.traverse("alice", 0)
    with pytest.raises(ConfigError, match="non-empty"):
        graph.assert_fact("alice", " ", "x")
