"""Memory benchmarks: token economy, retrieval, store hygiene, latency at scale.

Prints one JSON object with each figure beside its target:

* ``token_saving``: over 10 long scripted tasks (30-300 turns, large tool outputs) run
  through the real runtime, the fraction of prompt tokens the context manager saves
  against naive full-history ReAct, at equal task success (each task's answer needs a
  detail from an early tool output that compaction takes out of the prompt; the scripted
  agent gets it back with ``recall_events``). Target >= 0.4; ``largest_prompt`` must stay
  under the budget.
* ``recall_at_5``: the checked-in suite ``bench/data/memory_suite.json`` (640 questions
  over 40 users' multi-session histories; ``make_memory_suite.py`` makes it) through
  episodic memory with the offline MiniLM embedder: a question counts when all its
  evidence is in the top 5. Target >= 0.8. ``update_current_rate``: on changed
  preferences, the knowledge graph answers the current value (target 1.0); and how often
  episodic recall ranks the newest statement above the stale one.
* ``duplicate_rate``: after 10,000 writes of which about 40% restate an earlier one
  (exact, re-cased, re-punctuated or lightly reworded), the share of stored memories that
  duplicate another. Target < 0.02.
* ``false_merges``: of ~6,000 adversarial facts each one word away from one stored
  before (a number, a negation, a name, a weekday, a city, an antonym), how many were
  merged into it; ``false_merges_cosine_only`` counts the pairs within the threshold that
  a cosine-only rule would have merged. Target 0.
* Latency: ``remember`` and ``recall`` p50/p95 at 1k, 10k and 100k memories (store and
  index only: vectors precomputed, since embedding is the same at every size;
  ``embed_ms`` gives MiniLM's own cost), and a depth-3 graph traversal over 100,000 edges
  (target p95 < 50 ms).

    PYTHONPATH=src python bench/memory.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from autonomic import Agent, Runtime, tool
from autonomic.memory import ContextManaged, ContextWindow, recall_tool
from autonomic.memory.embedders import MiniLMEmbedder
from autonomic.memory.episodic import EpisodicMemory
from autonomic.memory.knowledge import KnowledgeGraph
from autonomic.memory.tokens import request_tokens
from autonomic.messages import ModelRequest
from autonomic.models.testing import FunctionModel, ScriptItem, tool_call
from autonomic.strategies import ReAct

SUITE = Path(__file__).parent / "data" / "memory_suite.json"
WINDOW = ContextWindow(max_tokens=8192, reserve_output=1024, tool_output_tokens=600)


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


# -- token economy -------------------------------------------------------------------------

TASKS = [  # (turns, characters per tool output)
    (30, 6000),
    (45, 3000),
    (60, 8000),
    (80, 2000),
    (100, 5000),
    (120, 1500),
    (150, 4000),
    (200, 2500),
    (250, 1200),
    (300, 3000),
]


def make_task(index: int, turns: int, size: int) -> tuple[Any, str]:
    secret = f"K-{index:02d}-{random.Random(index).randrange(10**6):06d}"
    filler = random.Random(index * 7)

    @tool
    def read_log(part: int) -> str:
        """Read one part of the incident log."""
        words = [
            f"{filler.choice(('ok', 'warn', 'retry', 'io', 'gc'))}{part}" for _ in range(size // 6)
        ]
        if part == 1:
            words.insert(len(words) // 2, f"ACCESS-CODE={secret}")
        return f"part {part}: " + " ".join(words)

    return read_log, secret


def agent_brain(turns: int, prompts: list[int]) -> FunctionModel:
    """Reads parts 1..turns, then answers with the access code, recalling it if needed."""
    code = re.compile(r"ACCESS-CODE=(K-\d\d-\d{6})")
    acted = [0]
    recalled = [False]

    def decide(request: ModelRequest) -> ScriptItem:
        prompts.append(request_tokens(request.messages, request.tools, WINDOW.counter))
        if request.purpose == "compact":
            parts = re.findall(r"part (\d+):", request.messages[1].content)
            return "Read log parts: " + ", ".join(parts)
        acted[0] += 1
        if acted[0] <= turns:
            return tool_call("read_log", part=acted[0])
        found = code.findall("\n".join(m.content for m in request.messages))
        if found:
            return f"The access code is {found[-1]}."
        if not recalled[0]:
            recalled[0] = True
            return tool_call("recall_events", query="ACCESS-CODE")
        return "I could not find the access code."

    return FunctionModel(decide)


async def token_economy(quick: bool) -> dict[str, Any]:
    tasks = TASKS[:3] if quick else TASKS
    rows = []
    async with Runtime("memory://") as rt:
        for index, (turns, size) in enumerate(tasks):
            read_log, secret = make_task(index, turns, size)
            result: dict[str, Any] = {"turns": turns, "output_chars": size}
            for mode in ("naive", "managed"):
                prompts: list[int] = []
                managed = mode == "managed"
                agent = Agent(
                    f"reader-{mode}",
                    model=agent_brain(turns, prompts),
                    tools=[read_log, recall_tool(rt.store)],
                    strategy=ContextManaged(ReAct(), WINDOW) if managed else ReAct(),
                    max_steps=turns * 2 + 20,
                    max_wall_s=600,
                )
                run = await rt.start(
                    agent, "Read every part of the incident log, then give the access code."
                )
                done = await run.wait()
                # the managed agent's turn count is in its log, not its (compacted) prompt
                result[mode] = {
                    "tokens": sum(prompts),
                    "largest_prompt": max(prompts),
                    "model_calls": len(prompts),
                    "success": done.status == "completed" and secret in (done.answer or ""),
                }
            result["saving"] = round(1 - result["managed"]["tokens"] / result["naive"]["tokens"], 3)
            rows.append(result)
    naive = sum(r["naive"]["tokens"] for r in rows)
    managed = sum(r["managed"]["tokens"] for r in rows)
    return {
        "token_saving": round(1 - managed / naive, 3),
        "token_saving_target": 0.4,
        "success_naive": sum(r["naive"]["success"] for r in rows) / len(rows),
        "success_managed": sum(r["managed"]["success"] for r in rows) / len(rows),
        "largest_prompt_managed": max(r["managed"]["largest_prompt"] for r in rows),
        "largest_prompt_naive": max(r["naive"]["largest_prompt"] for r in rows),
        "prompt_budget": WINDOW.budget,
        "tasks": rows,
    }


# -- retrieval -----------------------------------------------------------------------------


async def retrieval(embedder: MiniLMEmbedder) -> dict[str, Any]:
    suite = json.loads(SUITE.read_text())
    memory = EpisodicMemory(":memory:", embedder, dedup_threshold=0.97)
    graph = KnowledgeGraph(":memory:")
    hits: dict[str, list[bool]] = {}
    current_graph: list[bool] = []
    current_l3: list[bool] = []
    for user in suite["users"]:
        space = user["user"]
        ids = []
        for message in user["messages"]:
            stored, _ = await memory.remember(message["text"], space, at=message["ts"])
            ids.append(stored.id)
        asked_at = max(m["ts"] for m in user["messages"]) + 3600
        memory._clock = lambda t=asked_at: t
        for q in user["questions"]:
            found = await memory.recall(q["question"], space, k=5)
            top = [r.memory.id for r in found]
            wanted = {ids[i] for i in q["evidence"]}
            hits.setdefault(q["kind"], []).append(wanted <= set(top))
            if q["kind"] == "update":
                old, new = ids[q["stale"][0]], ids[q["evidence"][0]]
                current_l3.append(
                    new in top and (old not in top or top.index(new) < top.index(old))
                )
        for q in user["questions"]:
            if q["kind"] == "update":
                stale_ts = user["messages"][q["stale"][0]]["ts"]
                new_ts = user["messages"][q["evidence"][0]]["ts"]
                graph.assert_fact(
                    space,
                    q["relation"],
                    q["old"],
                    namespace=space,
                    single=True,
                    valid_from=stale_ts,
                )
                graph.assert_fact(
                    space,
                    q["relation"],
                    q["current"],
                    namespace=space,
                    single=True,
                    valid_from=new_ts,
                )
                now = [f.object for f in graph.facts(space, q["relation"], namespace=space)]
                before = graph.facts(space, q["relation"], namespace=space, as_of=stale_ts + 1)
                current_graph.append(now == [q["current"]] and before == [])
    every = [h for kind in hits.values() for h in kind]
    return {
        "recall_at_5": round(sum(every) / len(every), 3),
        "recall_at_5_target": 0.8,
        "questions": len(every),
        "recall_at_5_by_kind": {k: round(sum(v) / len(v), 3) for k, v in sorted(hits.items())},
        "update_current_rate": round(sum(current_graph) / len(current_graph), 3),
        "update_current_target": 1.0,
        "update_newest_ranked_first_l3": round(sum(current_l3) / len(current_l3), 3),
    }


# -- duplicates ----------------------------------------------------------------------------

CITIES = (
    "Lisbon Oslo Kyoto Denver Nairobi Porto Tallinn Quito Hanoi Lyon Perth Cork".split()  # noqa: SIM905
)
SUBJECTS = ("the user", "my manager", "the client", "our team", "the landlord", "my sister")
VERBS = ("prefers", "booked", "cancelled", "asked about", "paid for", "reviewed", "moved")
ADJECTIVES = ("the red", "the quarterly", "a new", "the old", "the shared", "a cheap")
NOUNS = ("invoice", "laptop", "meeting", "flat", "contract", "flight", "report", "bike")
OBJECTS = [f"{a} {b}" for a in ADJECTIVES for b in NOUNS]


def variants(text: str, rng: random.Random) -> str:
    kind = rng.randrange(4)
    if kind == 0:
        return text
    if kind == 1:
        return text.upper() if rng.random() < 0.5 else text.lower()
    if kind == 2:
        return "  " + text.rstrip(".") + "!"
    return text.rstrip(".") + " again."


async def duplicates(
    embedder: MiniLMEmbedder, writes: int, threshold: float = 0.94
) -> dict[str, Any]:
    rng = random.Random(5)
    memory = EpisodicMemory(":memory:", embedder, dedup_threshold=threshold)
    facts = [(s, v, o, c) for s in SUBJECTS for v in VERBS for o in OBJECTS for c in CITIES]
    rng.shuffle(facts)
    originals: list[str] = []
    groups: dict[int, int] = {}  # memory id -> first group stored as it
    texts, truth = [], []
    for _ in range(writes):
        if originals and rng.random() < 0.4:
            g = rng.randrange(len(originals))
            texts.append(variants(originals[g], rng))
        else:
            g = len(originals)
            subject, verb, obj, city = facts[g]
            originals.append(f"{subject.capitalize()} {verb} {obj} in {city}.")
            texts.append(originals[g])
        truth.append(g)
    started = time.perf_counter()
    stored_groups: dict[int, set[int]] = {}
    merged_wrongly = 0
    for start in range(0, writes, 256):
        batch = texts[start : start + 256]
        results = await memory.remember_many(batch)
        for (mem, merged), g in zip(results, truth[start : start + 256], strict=True):
            if not merged:
                groups[mem.id] = g
            elif groups.get(mem.id) != g:
                merged_wrongly += 1
            stored_groups.setdefault(g, set()).add(mem.id)
    seconds = time.perf_counter() - started
    stored = memory.count("shared")
    redundant = sum(len(ids) - 1 for ids in stored_groups.values())
    return {
        "writes": writes,
        "threshold": threshold,
        "distinct_facts": len(originals),
        "stored": stored,
        "duplicate_rate": round(redundant / stored, 4),
        "duplicate_rate_target": 0.02,
        "wrong_merges": merged_wrongly,
        "facts_lost_to_a_wrong_merge": len(originals) - len(set(groups.values())),
        "write_ms_each_with_embedding": round(seconds * 1000 / writes, 2),
    }


# -- false merges ---------------------------------------------------------------------------

NAMES = ("Alice", "Bob", "Carol", "Dmitri", "Esther", "Farid", "Greta", "Hiro", "Ines", "Jonas")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
ANTONYMS = (("likes", "dislikes"), ("accepted", "rejected"), ("opened", "closed"))


def one_word_apart(rng: random.Random) -> list[tuple[str, str]]:
    """(stored fact, a fact one meaningful word away from it), ~6,000 pairs."""
    pairs = []
    for name in NAMES:
        for noun in NOUNS:
            for city in CITIES:
                n = rng.randrange(2, 500)
                other = rng.choice([c for c in CITIES if c != city])
                who = rng.choice([x for x in NAMES if x != name])
                day, day2 = rng.sample(DAYS, 2)
                yes, no = rng.choice(ANTONYMS)
                base = f"{name} paid {n} euros for the {noun} in {city}"
                pairs += [
                    (
                        f"{base}.",
                        f"{name} paid {n + rng.randint(1, 9)} euros for the {noun} in {city}.",
                    ),
                    (
                        f"{name} is happy with the {noun} from {city}.",
                        f"{name} is not happy with the {noun} from {city}.",
                    ),
                    (f"{base}.", f"{who} paid {n} euros for the {noun} in {city}."),
                    (
                        f"{name} sees the {noun} in {city} on {day}.",
                        f"{name} sees the {noun} in {city} on {day2}.",
                    ),
                    (f"{base}.", f"{name} paid {n} euros for the {noun} in {other}."),
                    (
                        f"{name} {yes} the {noun} in {city}.",
                        f"{name} {no} the {noun} in {city}.",
                    ),
                ]
    return pairs


def _plain(text: str) -> str:
    return re.sub(r"\W+", " ", text.lower()).strip()


async def false_merges(embedder: MiniLMEmbedder, threshold: float = 0.94) -> dict[str, Any]:
    pairs = one_word_apart(random.Random(11))
    memory = EpisodicMemory(":memory:", embedder, dedup_threshold=threshold)
    wrong = cosine_close = 0
    for start in range(0, len(pairs), 256):
        batch = pairs[start : start + 256]
        await memory.remember_many([a for a, _ in batch])
        originals = await embedder.embed([a for a, _ in batch])
        variants = [b for _, b in batch]
        vectors = await embedder.embed(variants)
        cosine_close += int(np.sum(np.sum(vectors * originals, axis=1) >= threshold))
        for text, (mem, merged) in zip(variants, await memory.remember_many(variants), strict=True):
            wrong += merged and _plain(mem.text) != _plain(text)
    return {
        "pairs": len(pairs),
        "threshold": threshold,
        "false_merges": wrong,
        "false_merges_cosine_only": cosine_close,
        "false_merges_target": 0,
    }


# -- latency at scale ------------------------------------------------------------------------


class Precomputed:
    """Hands out vectors computed beforehand, so the timings are the store's alone."""

    name, dim = "bench-random", 384

    def __init__(self) -> None:
        self.next: np.ndarray = np.zeros((0, 384), np.float32)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        vectors, self.next = self.next[: len(texts)], self.next[len(texts) :]
        return vectors


def unit(rows: int, rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal((rows, 384)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


async def latency(sizes: Sequence[int], samples: int) -> dict[str, Any]:
    rng = np.random.default_rng(3)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        embedder = Precomputed()
        memory = EpisodicMemory(Path(tmp) / "m.db", embedder)
        have = 0
        for size in sizes:
            while have < size:  # bulk-load in batches (dedup scan included)
                n = min(2000, size - have)
                embedder.next = unit(n, rng)
                await memory.remember_many([f"memory {have + i}" for i in range(n)])
                have += n
            writes, recalls = [], []
            for i in range(samples):
                embedder.next = unit(1, rng)
                t = time.perf_counter()
                await memory.remember_many([f"probe {size}-{i}"])
                writes.append((time.perf_counter() - t) * 1000)
                have += 1
                query = unit(1, rng)[0]
                t = time.perf_counter()
                memory.recall_vector(query, "shared", 5)
                recalls.append((time.perf_counter() - t) * 1000)
            out[str(size)] = {
                "write_p50_ms": pct(writes, 0.5),
                "write_p95_ms": pct(writes, 0.95),
                "recall_p50_ms": pct(recalls, 0.5),
                "recall_p95_ms": pct(recalls, 0.95),
            }
        memory.close()
    return out


def graph_latency(edges: int, samples: int) -> dict[str, Any]:
    rng = random.Random(9)
    nodes = edges // 2
    with tempfile.TemporaryDirectory() as tmp:
        graph = KnowledgeGraph(Path(tmp) / "kg.db")
        started = time.perf_counter()
        for _ in range(edges):
            graph.assert_fact(
                f"n{rng.randrange(nodes)}",
                rng.choice(("knows", "owns", "near")),
                f"n{rng.randrange(nodes)}",
            )
        load_s = time.perf_counter() - started
        times, reached = [], []
        for _ in range(samples):
            t = time.perf_counter()
            found = graph.traverse(f"n{rng.randrange(nodes)}", 3)
            times.append((time.perf_counter() - t) * 1000)
            reached.append(len(found))
        graph.close()
    return {
        "edges": edges,
        "depth3_p50_ms": pct(times, 0.5),
        "depth3_p95_ms": pct(times, 0.95),
        "depth3_p95_target_ms": 50,
        "facts_reached_median": statistics.median(reached),
        "assert_ms_each": round(load_s * 1000 / edges, 3),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller, faster smoke run")
    args = parser.parse_args()
    quick = args.quick
    embedder = MiniLMEmbedder()
    sentences = [f"The meeting about topic {i} moved to room {i % 7}." for i in range(64)]
    embedder.embed_sync(sentences[:1])
    t = time.perf_counter()
    for s in sentences[:32]:
        embedder.embed_sync([s])
    embed_one = (time.perf_counter() - t) * 1000 / 32
    t = time.perf_counter()
    embedder.embed_sync(sentences)
    embed_batch = (time.perf_counter() - t) * 1000 / 64
    report: dict[str, Any] = {
        "bench": "memory",
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "quick": quick,
    }
    report.update(await token_economy(quick))
    report.update(await retrieval(embedder))
    report["dedup"] = await duplicates(embedder, 1000 if quick else 10_000)
    report["duplicate_rate"] = report["dedup"]["duplicate_rate"]
    report["adversarial"] = await false_merges(embedder)
    report["false_merges"] = report["adversarial"]["false_merges"]
    report["embed_ms"] = {"one": round(embed_one, 2), "batched_each": round(embed_batch, 2)}
    report["latency"] = await latency(
        (1000, 10_000) if quick else (1000, 10_000, 100_000), 50 if quick else 200
    )
    report["graph"] = graph_latency(10_000 if quick else 100_000, 50 if quick else 300)
    json.dump(report, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    asyncio.run(main())
