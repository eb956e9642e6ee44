"""Offline planner bench: ReAct vs ReWOO vs the DAG planner on 30 multi-tool tasks.

Tasks in the spirit of LLMCompiler's ParallelQA and HotpotQA comparison questions ("which
of these three cities is the most populous?", "how much older is X than Y?", "what is
the population of the capital of Z?"), over in-process stub tools with a fixed latency.
The model is deterministic: it follows each task's reference steps (ReAct: one tool call
per turn; the planners: the whole plan at once) and computes its answer from the
observations it is shown, so a strategy that loses or garbles a result fails the task.
Every model call takes ``--model-latency`` seconds (200 ms by default); each tool call
takes 0.5 to 2 times ``--tool-latency`` (fixed per call, as real tools differ).

``react_parallel`` is ReAct with parallel function calling (every call whose inputs are
known in one turn), and ``dag_waves`` the DAG planner without eager scheduling (a node
waits for its whole batch), for reference. Prints one JSON object: per strategy success,
model calls, tokens and wall time (sum over tasks, each task a durable run in a SQLite
store), and the ratios ``rewoo_calls_ratio`` (ReWOO's model calls / ReAct's) and
``dag_wall_ratio`` (DAG wall time / ReAct's) with the targets (<= 0.5 each, at equal
success).

With ``--embedded`` the model is the embedded one (``local:brain``, extra ``[brain]``)
instead, on ``--tasks`` tasks (one of each kind in turn) per strategy: no artificial
latency, success when the reference answer appears in the run's answer.

    PYTHONPATH=src python bench/planner.py [--model-latency 0.2] [--tool-latency 0.1]
    PYTHONPATH=src python bench/planner.py --embedded [--tasks 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autonomic import Agent, FunctionModel, ModelRequest, Runtime, ToolCall, tool
from autonomic.kpis import run_kpis
from autonomic.loader import read_events
from autonomic.models.base import Model
from autonomic.strategies import DAGPlanner, ReAct, ReWOO, Strategy

CITIES = {
    "paris": (2102, "France", 35),
    "rome": (2873, "Italy", 21),
    "oslo": (709, "Norway", 23),
    "madrid": (3305, "Spain", 657),
    "lisbon": (545, "Portugal", 2),
    "vienna": (1931, "Austria", 151),
    "berlin": (3645, "Germany", 34),
    "athens": (664, "Greece", 70),
    "dublin": (592, "Ireland", 20),
    "prague": (1309, "Czechia", 235),
}
CAPITALS = {country.lower(): city.title() for city, (_, country, _) in CITIES.items()}
PEOPLE = {
    "ada lovelace": 1815,
    "alan turing": 1912,
    "grace hopper": 1906,
    "john von neumann": 1903,
    "claude shannon": 1916,
    "barbara liskov": 1939,
    "donald knuth": 1938,
    "edsger dijkstra": 1930,
}
TOOL_LATENCY = 0.1


async def _work(tool: str, arg: str) -> None:
    """A tool call's latency: 0.5, 1, 1.5 or 2 times TOOL_LATENCY, fixed per call."""
    factor = 0.5 + (zlib.crc32(f"{tool}:{arg.strip().lower()}".encode()) % 4) / 2
    await asyncio.sleep(TOOL_LATENCY * factor)


@tool(idempotent=True)
async def population(city: str) -> str:
    "Population of a city, in thousands."
    await _work("population", city)
    return str(CITIES[city.strip().lower()][0])


@tool(idempotent=True)
async def elevation(city: str) -> str:
    "Elevation of a city, in metres."
    await _work("elevation", city)
    return str(CITIES[city.strip().lower()][2])


@tool(idempotent=True)
async def capital(country: str) -> str:
    "The capital city of a country."
    await _work("capital", country)
    return CAPITALS[country.strip().lower()]


@tool(idempotent=True)
async def born(person: str) -> str:
    "The year a person was born."
    await _work("born", person)
    return str(PEOPLE[person.strip().lower()])


TOOLS = [population, elevation, capital, born]


@dataclass(frozen=True)
class Task:
    goal: str
    steps: tuple[tuple[str, dict[str, str]], ...]
    """The reference tool calls; ``#E<n>`` in an argument is step n's result."""
    answer: Callable[[list[str]], str]
    """The answer from the results of the steps, in order."""


def _largest(names: list[str]) -> Callable[[list[str]], str]:
    return lambda r: names[max(range(len(names)), key=lambda i: int(r[i]))]


def _more_populous(one: str, two: str) -> Callable[[list[str]], str]:
    return lambda r: one if int(r[2]) > int(r[3]) else two


def _tasks() -> list[Task]:
    groups = [
        ["Paris", "Rome", "Oslo"],
        ["Madrid", "Lisbon", "Vienna"],
        ["Berlin", "Athens", "Dublin"],
        ["Prague", "Paris", "Madrid", "Oslo"],
        ["Rome", "Vienna", "Berlin", "Lisbon"],
        ["Athens", "Dublin", "Prague"],
        ["Oslo", "Berlin", "Rome", "Madrid"],
        ["Lisbon", "Paris", "Athens"],
    ]
    tasks = [  # ParallelQA-style: n independent look-ups, then compare
        Task(
            f"Which of {', '.join(names)} has the largest population?",
            tuple(("population", {"city": n}) for n in names),
            _largest(names),
        )
        for names in groups
    ]
    tasks.extend(
        Task(
            f"Which of {', '.join(names)} lies highest?",
            tuple(("elevation", {"city": n}) for n in names),
            _largest(names),
        )
        for names in groups[:6]
    )
    pairs = [
        ("Ada Lovelace", "Alan Turing"),
        ("Grace Hopper", "John von Neumann"),
        ("Claude Shannon", "Barbara Liskov"),
        ("Donald Knuth", "Edsger Dijkstra"),
        ("Alan Turing", "Grace Hopper"),
        ("Barbara Liskov", "Ada Lovelace"),
        ("John von Neumann", "Donald Knuth"),
        ("Edsger Dijkstra", "Claude Shannon"),
    ]
    for a, b in pairs:  # HotpotQA comparison: two look-ups, then the difference
        tasks.append(
            Task(
                f"How many years apart were {a} and {b} born?",
                (("born", {"person": a}), ("born", {"person": b})),
                lambda r: str(abs(int(r[0]) - int(r[1]))),
            )
        )
    for one, two in [
        ("France", "Italy"),
        ("Spain", "Norway"),
        ("Germany", "Austria"),
        ("Greece", "Portugal"),
        ("Ireland", "Czechia"),
        ("Italy", "Spain"),
        ("Norway", "Germany"),
        ("Austria", "France"),
    ]:  # dependent chains in two parallel branches: capital → population
        tasks.append(
            Task(
                f"Whose capital is more populous, {one}'s or {two}'s?",
                (
                    ("capital", {"country": one}),
                    ("capital", {"country": two}),
                    ("population", {"city": "#E1"}),
                    ("population", {"city": "#E2"}),
                ),
                _more_populous(one, two),
            )
        )
    return tasks


TASKS = _tasks()
_TASK_BY_GOAL = {t.goal: t for t in TASKS}
_EVIDENCE = re.compile(r"^#E(\d+) = .*\n  → (.*)$", re.M)


def _fill(args: dict[str, str], results: list[str]) -> dict[str, str]:
    return {
        k: re.sub(r"#E(\d+)", lambda m: results[int(m.group(1)) - 1], v) for k, v in args.items()
    }


def _goal(request: ModelRequest) -> str:
    return next(m.content for m in request.messages if m.role == "user")


def react_model(request: ModelRequest) -> Any:
    """ReAct's model: the next reference step, given the observations so far."""
    task = _TASK_BY_GOAL[_goal(request)]
    results = [m.content for m in request.messages if m.role == "tool"]
    if len(results) < len(task.steps):
        name, args = task.steps[len(results)]
        return ToolCall(id="", name=name, arguments=_fill(args, results))
    return task.answer(results)


def parallel_react_model(request: ModelRequest) -> Any:
    """ReAct with parallel function calling: every step whose inputs are known, at once."""
    task = _TASK_BY_GOAL[_goal(request)]
    results = [m.content for m in request.messages if m.role == "tool"]
    if len(results) == len(task.steps):
        return task.answer(results)
    ready = [
        ToolCall(id="", name=name, arguments=_fill(args, results))
        for name, args in task.steps[len(results) :]
        if all(int(n) <= len(results) for n in re.findall(r"#E(\d+)", json.dumps(args)))
    ]
    return ready


def plan_model(request: ModelRequest) -> str:
    """The planners' model: the reference plan, then the answer from the evidence."""
    task = _TASK_BY_GOAL[_goal(request)]
    if request.purpose == "plan":
        return "\n".join(
            f"#E{i} = {name}[{json.dumps(args)}]" for i, (name, args) in enumerate(task.steps, 1)
        )
    found = dict(_EVIDENCE.findall(request.messages[-1].content))
    results = [found.get(str(i), "") for i in range(1, len(task.steps) + 1)]
    try:
        answer = task.answer(results)
    except (ValueError, IndexError):
        answer = "cannot tell"
    return f"Answer: {answer}" if request.purpose == "join" else answer


class WavesDAG(DAGPlanner):
    """The DAG planner without eager scheduling: each batch of ready nodes ends before the
    next starts (how it ran before ``more_calls``), for reference."""

    more_calls = None


async def _bench(
    strategy: Strategy,
    model: Model,
    tasks: list[Task],
    *,
    solved_by: Callable[[str, str], bool] = str.__eq__,
    instructions: str = "You are a helpful assistant. Use the tools when they help.",
) -> dict[str, Any]:
    agent = Agent(
        name=strategy.name,
        instructions=instructions,
        model=model,
        tools=TOOLS,
        strategy=strategy,
        max_steps=25,
    )
    solved = calls = tokens = 0
    wall = 0.0
    utility: list[float] = []
    answers: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        async with Runtime(f"sqlite:///{Path(tmp) / 'bench.db'}") as rt:
            for task in tasks:
                started = time.perf_counter()
                result = await (await rt.start(agent, task.goal)).wait(check=False)
                wall += time.perf_counter() - started
                kpis = run_kpis([s.event for s in await read_events(rt.store, result.run_id)])
                answer = result.answer or f"({result.status}: {result.error})"
                solved += solved_by(answer, _expected(task))
                answers.append(answer[:120])
                calls += result.model_calls
                tokens += result.usage.total_tokens
                utility.append(kpis.tool_utility or 0.0)
    report = {
        "success": solved,
        "tasks": len(tasks),
        "model_calls": calls,
        "tokens": tokens,
        "wall_s": round(wall, 3),
        "tool_utility": round(sum(utility) / len(utility), 3),
    }
    if solved_by is not str.__eq__:
        report["answers"] = answers
    return report


def _expected(task: Task) -> str:
    return task.answer([_truth(n, _fill(a, _reference(task))) for n, a in task.steps])


def _truth(name: str, args: dict[str, str]) -> str:
    value = next(iter(args.values())).lower()
    if name == "population":
        return str(CITIES[value][0])
    if name == "elevation":
        return str(CITIES[value][2])
    if name == "capital":
        return CAPITALS[value]
    return str(PEOPLE[value])


def _reference(task: Task) -> list[str]:
    results: list[str] = []
    for name, args in task.steps:
        results.append(_truth(name, _fill(args, results)))
    return results


def _scripted(answer: Callable[[ModelRequest], Any], latency: float) -> Model:
    async def slow(request: ModelRequest) -> Any:
        await asyncio.sleep(latency)
        return answer(request)

    return FunctionModel(slow)


async def main(latency: float) -> dict[str, Any]:
    report: dict[str, Any] = {
        "tasks": len(TASKS),
        "model_latency_s": latency,
        "tool_latency_s": TOOL_LATENCY,
    }
    report["react"] = await _bench(ReAct(), _scripted(react_model, latency), TASKS)
    report["react_parallel"] = await _bench(
        ReAct(), _scripted(parallel_react_model, latency), TASKS
    )
    report["rewoo"] = await _bench(ReWOO(), _scripted(plan_model, latency), TASKS)
    report["dag"] = await _bench(DAGPlanner(), _scripted(plan_model, latency), TASKS)
    report["dag_waves"] = await _bench(WavesDAG(), _scripted(plan_model, latency), TASKS)
    react, rewoo, dag = report["react"], report["rewoo"], report["dag"]
    report["rewoo_calls_ratio"] = round(rewoo["model_calls"] / react["model_calls"], 3)
    report["dag_wall_ratio"] = round(dag["wall_s"] / react["wall_s"], 3)
    report["dag_wall_ratio_vs_parallel_react"] = round(
        dag["wall_s"] / report["react_parallel"]["wall_s"], 3
    )
    report["dag_wall_ratio_vs_waves"] = round(dag["wall_s"] / report["dag_waves"]["wall_s"], 3)
    report["targets"] = {
        "rewoo_calls_ratio_at_most": 0.5,
        "dag_wall_ratio_at_most": 0.5,
        "equal_success": react["success"] == rewoo["success"] == dag["success"],
        "met": report["rewoo_calls_ratio"] <= 0.5
        and report["dag_wall_ratio"] <= 0.5
        and react["success"] == rewoo["success"] == dag["success"] == len(TASKS),
    }
    return report


def _spread(n: int) -> list[Task]:
    """``n`` tasks, one of each kind in turn (look-ups, heights, births, capital chains)."""
    kinds = [TASKS[0:8], TASKS[8:14], TASKS[14:22], TASKS[22:30]]
    return [kinds[i % len(kinds)][i // len(kinds)] for i in range(n)]


def _mentions(answer: str, expected: str) -> bool:
    return expected.lower() in answer.lower()


async def embedded(n: int) -> dict[str, Any]:
    """Each strategy on ``n`` tasks with the embedded model (one instance, loaded once)."""
    from autonomic.models.local import LocalModel

    model = LocalModel("brain")
    load_s = await model.load()
    tasks = _spread(n)
    hint = "Use the tools; then answer with the city, person or number only."
    report: dict[str, Any] = {
        "model": model.name,
        "load_s": round(load_s, 1),
        "tasks": len(tasks),
        "goals": [t.goal for t in tasks],
        "expected": [_expected(t) for t in tasks],
    }
    for strategy in (ReAct(), ReWOO(), DAGPlanner()):
        report[strategy.name] = await _bench(
            strategy, model, tasks, solved_by=_mentions, instructions=hint
        )
    react, rewoo, dag = report["react"], report["rewoo"], report["dag"]
    report["rewoo_calls_ratio"] = round(rewoo["model_calls"] / max(react["model_calls"], 1), 3)
    report["dag_wall_ratio"] = round(dag["wall_s"] / react["wall_s"], 3)
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-latency", type=float, default=0.2)
    parser.add_argument("--tool-latency", type=float, default=0.1)
    parser.add_argument(
        "--embedded",
        action="store_true",
        help='use the embedded model (local:brain, pip install "autonomic[brain]")',
    )
    parser.add_argument("--tasks", type=int, default=3, help="tasks per strategy (--embedded)")
    options = parser.parse_args()
    if not 1 <= options.tasks <= len(TASKS):
        parser.error(f"--tasks must be between 1 and {len(TASKS)}, not {options.tasks}")
    TOOL_LATENCY = options.tool_latency
    run = embedded(options.tasks) if options.embedded else main(options.model_latency)
    print(json.dumps(asyncio.run(run), indent=2))
