"""Episodic memory (L3) with the real offline embedder and a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from autonomic.errors import ConfigError
from autonomic.memory.embedders import MiniLMEmbedder
from autonomic.memory.episodic import EpisodicMemory, Scoring

FACTS = [
    "The user's daughter is called Maya and she is seven.",
    "The quarterly report is due on the 14th of March.",
    "The staging server runs PostgreSQL 16 on port 5433.",
    "The user is allergic to peanuts.",
    "Invoices are sent from billing@example.com.",
]


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_recall_finds_the_memory_by_meaning(location: str, embedder: MiniLMEmbedder) -> None:
    memory = EpisodicMemory(location, embedder)
    await memory.remember_many(FACTS, "user:1")
    found = await memory.recall("which database does staging use?", "user:1", k=3)
    assert found[0].memory.text == FACTS[2]
    assert found[0].similarity > found[1].similarity
    assert [r.score for r in found] == sorted((r.score for r in found), reverse=True)
    food = await memory.recall("what food must the user avoid", "user:1", k=1)
    assert food[0].memory.text == FACTS[3] and food[0].memory.access_count == 1
    memory.close()
    reopened = EpisodicMemory(location, embedder)  # vectors live in the database
    with reopened:
        again = await reopened.recall("kid's name", "user:1", k=1)
    assert again[0].memory.text == FACTS[0]


async def test_exact_and_near_duplicates_are_merged(
    location: str, embedder: MiniLMEmbedder
) -> None:
    # 0.9, not the default 0.94: a margin for int8 kernels that differ across CPUs
    with EpisodicMemory(location, embedder, dedup_threshold=0.9) as memory:
        await check_duplicates(memory)


async def check_duplicates(memory: EpisodicMemory) -> None:
    first, merged = await memory.remember("The user prefers window seats.", "user:1")
    assert not merged
    same, merged = await memory.remember("  the user prefers WINDOW seats ", "user:1")
    assert merged and same.id == first.id and same.merged == 1
    near, merged = await memory.remember("The user prefers a window seat.", "user:1")
    assert merged and near.id == first.id
    other, merged = await memory.remember("The user prefers aisle seats on trains.", "user:2")
    assert not merged and other.id != first.id  # another namespace never merges
    assert memory.count("user:1") == 1
    assert memory.get(first.id).importance > 1.0


ONE_WORD_APART = [
    ("The rent is 1200 euros a month.", "The rent is 1250 euros a month."),
    ("Alice is allergic to peanuts.", "Alice is not allergic to peanuts."),
    ("The user can't eat gluten.", "The user can eat gluten."),
    ("Alice booked the flight to Oslo.", "Bob booked the flight to Oslo."),
    ("The meeting moved to Monday.", "The meeting moved to Tuesday."),
    ("The user likes the red bike.", "The user dislikes the red bike."),
    ("The flight leaves at 9:15.", "The flight leaves at 9:45."),
]


async def test_texts_a_word_of_meaning_apart_are_never_merged(
    location: str, embedder: MiniLMEmbedder
) -> None:
    with EpisodicMemory(location, embedder, dedup_threshold=0.9) as memory:
        pairs = [t for pair in ONE_WORD_APART for t in pair]
        # the embedder alone would merge most of them: the word check is what holds
        vectors = await embedder.embed(pairs)
        close = sum(float(vectors[i] @ vectors[i + 1]) >= 0.9 for i in range(0, len(pairs), 2))
        assert close >= 4
        results = await memory.remember_many(pairs, "user:1")
        assert [merged for _, merged in results] == [False] * len(pairs)
        again = await memory.remember("the rent is 1200 euros a month again!", "user:1")
        assert again[1] and again[0].id == results[0][0].id  # fillers and case still merge
        assert memory.count("user:1") == len(pairs)


async def test_recency_decay_and_weights(embedder: MiniLMEmbedder) -> None:
    clock = Clock()
    memory = EpisodicMemory(":memory:", embedder, clock=clock)
    await memory.remember("The office wifi password is tulip-42.", at=clock.now - 200 * 86400)
    await memory.remember("The guest wifi password is orchid-7.", at=clock.now)
    newest = await memory.recall("office wifi password", k=2)
    assert newest[0].memory.text.startswith("The office")  # far more similar
    decaying = EpisodicMemory(
        ":memory:",
        embedder,
        clock=clock,
        scoring=Scoring(half_life_days=5, recency_weight=1.0),
    )
    await decaying.remember("The office wifi password is tulip-42.", at=clock.now - 200 * 86400)
    await decaying.remember("The guest wifi password is orchid-7.", at=clock.now)
    ranked = await decaying.recall("office wifi password", k=2)
    assert ranked[0].memory.text.startswith("The guest")  # the old one has decayed away


async def test_as_of_and_pruning(location: str, embedder: MiniLMEmbedder) -> None:
    clock = Clock(100.0)
    with EpisodicMemory(location, embedder, clock=clock) as memory:
        await check_as_of(memory, clock)


async def check_as_of(memory: EpisodicMemory, clock: Clock) -> None:
    old, _ = await memory.remember("Project Falcon ships in May.")
    clock.now = 200.0
    await memory.remember("Project Falcon is delayed to July.")
    clock.now = 300.0
    memory.prune([old.id])
    now = await memory.recall("when does Project Falcon ship", k=5)
    assert [r.memory.text for r in now] == ["Project Falcon is delayed to July."]
    then = await memory.recall("when does Project Falcon ship", k=5, as_of=150.0)
    assert [r.memory.text for r in then] == ["Project Falcon ships in May."]
    assert memory.count("shared") == 1 and memory.count("shared", live=False) == 2


async def test_namespaces_are_separate_unless_read_together(embedder: MiniLMEmbedder) -> None:
    memory = EpisodicMemory(":memory:", embedder)
    await memory.remember("Alice's favourite colour is green.", "user:alice")
    await memory.remember("Bob's favourite colour is red.", "user:bob")
    await memory.remember("The company colour is navy blue.", "shared")
    alone = await memory.recall("favourite colour", "user:alice", k=5)
    assert [r.memory.namespace for r in alone] == ["user:alice"]
    both = await memory.recall("favourite colour", ["user:alice", "shared"], k=5)
    assert {r.memory.namespace for r in both} == {"user:alice", "shared"}


async def test_bad_input_is_refused_clearly(tmp_path: Path, embedder: MiniLMEmbedder) -> None:
    memory = EpisodicMemory(tmp_path / "m.db", embedder)
    with pytest.raises(ConfigError, match="empty text"):
        await memory.remember("   ")
    with pytest.raises(ConfigError, match="namespace"):
        await memory.remember("x", "")
    await memory.remember("a fact")
    memory.close()

    class Other:
        name, dim = "other", 384

        async def embed(self, texts: list[str]) -> np.ndarray:
            return np.ones((len(texts), 384), np.float32) / np.sqrt(384)

    with pytest.raises(ConfigError, match="holds vectors of"):
        await EpisodicMemory(tmp_path / "m.db", Other()).recall("a fact")


def test_embeddings_are_unit_vectors_and_batch_invariant(embedder: MiniLMEmbedder) -> None:
    one = embedder.embed_sync(["A short sentence."])
    many = embedder.embed_sync(["A short sentence.", "A much longer sentence " * 20])
    assert one.shape == (1, 384) and many.dtype == np.float32
    assert np.allclose(np.linalg.norm(many, axis=1), 1.0, atol=1e-5)
    assert float(one[0] @ many[0]) > 0.999  # padding in a batch changes nothing
