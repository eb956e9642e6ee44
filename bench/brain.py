"""How well the embedded models do tool goals, end to end through the durable runtime.

26 goals with deterministic tools: single calls, exact argument extraction, direct answers
(no tool needed) and multi-step goals whose second call depends on the first result. Each
goal is one run (``Runtime.start`` with an Agent, as users run them; default instructions,
max_steps 6), scored for valid output, the right first tool, usable arguments, the exact
arguments where the goal spells them out, and a correct final answer. A goal is *solved*
when the run completes with a correct answer.

Prints one JSON object per model: ``solved`` and ``goals``, load time, tokens per second,
seconds per decision (median, p90, and the first call, which reads the whole system prompt),
and every goal's trajectory.

    PYTHONPATH=src python bench/brain.py [--models local:brain local:tiny] [--only G01,G10]
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import json
import operator
import platform
import re
import statistics
import sys
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from autonomic import Agent, Runtime, tool
from autonomic.events import ActionRequested, ModelResponded
from autonomic.loader import read_events
from autonomic.models.local import LocalModel

# -- the tools (deterministic) ---------------------------------------------------------


def _plain(text: str) -> str:
    """Lowercase, without accents, for lenient matching."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c)).strip()


NOTES = {
    "Q1 budget meeting": "Note 'Q1 budget meeting' (2024-03-02): approved 45,000 EUR for cloud "
    "costs; next review on 15 April.",
    "Project Nightingale kickoff": "Note 'Project Nightingale kickoff': scheduled for 2024-06-18 "
    "in room B2.",
    "Dentist": "Note 'Dentist': Dr. Alvarez, Calle Mayor 12, Madrid. Next appointment 2024-05-10.",
    "Acme contract": "Note 'Acme contract': price per seat is 129 USD per month, billed annually.",
    "Wifi": "Note 'Home wifi': network 'Lighthouse', password tulip-4471.",
    "Kettle": "Note 'Broken kettle': returned it to the shop, order B-2231-KT.",
    "Offsite": "Note 'Berlin offsite': budget 3,200 EUR for the team dinner.",
    "Sister": "Note 'Family': my sister Ana lives in Lisbon since 2021.",
    "Rent": "Note 'Flat': the monthly rent is 1,450 EUR, due on the 1st.",
}
NOTE_WORDS = {
    "Q1 budget meeting": {"budget", "meeting", "quarterly", "q1", "approved"},
    "Project Nightingale kickoff": {"nightingale", "kickoff", "project"},
    "Dentist": {"dentist", "alvarez"},
    "Acme contract": {"acme", "contract", "seat", "price"},
    "Wifi": {"wifi", "wi-fi", "password", "network"},
    "Kettle": {"kettle", "order", "broken"},
    "Offsite": {"offsite", "berlin", "dinner"},
    "Sister": {"sister", "family", "ana", "lives"},
    "Rent": {"rent", "flat", "monthly", "apartment"},
}
WEATHER = {
    "reykjavik": "Reykjavik: 3°C, light rain, wind 25 km/h.",
    "sao paulo": "São Paulo: 28°C, humid, scattered showers.",
    "madrid": "Madrid: 31°C, sunny.",
    "oslo": "Oslo: -4°C, light snow.",
    "tokyo": "Tokyo: 18°C, cloudy.",
    "saint-etienne": "Saint-Étienne: 12°C, overcast.",
    "lisbon": "Lisbon: 22°C, clear sky.",
}
ORDERS = {"A-1093-ZX": "shipped on 2024-04-02, arriving Friday", "B-2231-KT": "refund issued"}
RATES_TO_EUR = {"EUR": 1.0, "USD": 0.92, "JPY": 0.00625, "GBP": 1.17}
_OPERATORS: dict[type, Callable[..., float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def _value(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_value(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 64:
            raise ValueError("exponent too large")
        return _OPERATORS[type(node.op)](left, right)
    raise ValueError("not arithmetic")


def evaluate(expression: str) -> float | None:
    """The value of a plain arithmetic expression, or None if it is not one."""
    try:
        return _value(ast.parse(expression.strip(), mode="eval").body)
    except (SyntaxError, ValueError, ArithmeticError):
        return None


def number_text(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:.6g}"


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as "12*(3+4)" and return the number. Use it
    for any arithmetic."""
    value = evaluate(expression)
    if value is None:
        return f"error: {expression!r} is not an arithmetic expression (use + - * / ** % and ())"
    return number_text(value)


@tool
def search_notes(query: str) -> str:
    """Search the user's personal notes and return the matching notes."""
    words = set(re.findall(r"[\w-]+", _plain(query)))
    found = [NOTES[key] for key, keys in NOTE_WORDS.items() if words & keys]
    return "\n".join(found) if found else "No matching notes."


@tool
def get_weather(city: str) -> str:
    """Get the current weather for a city."""
    key = _plain(city).split(",")[0].strip()
    return WEATHER.get(key, f"No weather data for {city}.")


@tool
def order_status(order_id: str) -> str:
    """Get the status of an order by its order id."""
    status = ORDERS.get(order_id.strip())
    return f"Order {order_id}: {status}." if status else f"No order with id {order_id!r}."


@tool
def convert_currency(amount: float, from_currency: str, to_currency: str) -> str:
    """Convert an amount of money between currencies (ISO codes such as EUR, USD, JPY)."""
    source, target = from_currency.strip().upper(), to_currency.strip().upper()
    if source not in RATES_TO_EUR or target not in RATES_TO_EUR:
        return f"error: unknown currency (known: {', '.join(RATES_TO_EUR)})"
    converted = amount * RATES_TO_EUR[source] / RATES_TO_EUR[target]
    return f"{amount:g} {source} = {converted:,.2f} {target}"


TOOLS = [calculator, search_notes, get_weather, order_status, convert_currency]

# -- the goals -------------------------------------------------------------------------

Check = Callable[[dict[str, Any]], bool]


def expr_is(value: float) -> Check:
    def check(args: dict[str, Any]) -> bool:
        got = evaluate(str(args.get("expression", "")))
        return got is not None and abs(got - value) < 1e-6

    return check


def arg_has(name: str, *needles: str) -> Check:
    return lambda args: all(_plain(n) in _plain(str(args.get(name, ""))) for n in needles)


def arg_is(name: str, value: str) -> Check:
    return lambda args: str(args.get(name, "")).strip() == value


def city_is(city: str) -> Check:
    return lambda args: _plain(str(args.get("city", ""))).split(",")[0].strip() == _plain(city)


def currency(amount: float, source: str, target: str) -> Check:
    def check(args: dict[str, Any]) -> bool:
        try:
            same = abs(float(args.get("amount", "nan")) - amount) < 1e-6
        except (TypeError, ValueError):
            return False
        codes = [str(args.get(k, "")).strip().upper() for k in ("from_currency", "to_currency")]
        return same and codes == [source, target]

    return check


def query_finds(note: str) -> Check:
    return lambda args: note in search_notes.fn(str(args.get("query", "")))


@dataclass
class Goal:
    id: str
    kind: str  # single, exact, direct, multi
    text: str
    steps: list[tuple[str, Check]]  # the gold calls: tool and what makes its arguments usable
    answers: list[str]  # the final answer must contain one of these
    exact: list[tuple[str, Check]] = field(default_factory=list)  # spelled-out arguments


GOALS = [
    Goal("G01", "single", "What is 1234 * 5678?", [("calculator", expr_is(7006652))], ["7006652"]),
    Goal("G02", "single", "What is 15% of 2480?", [("calculator", expr_is(372))], ["372"]),
    Goal(
        "G03",
        "single",
        "What's the weather like in Reykjavik right now?",
        [("get_weather", city_is("Reykjavik"))],
        ["3°", "3 °", "rain"],
    ),
    Goal(
        "G04",
        "single",
        "Find my notes about the quarterly budget meeting and tell me how much was approved.",
        [("search_notes", arg_has("query", "budget"))],
        ["45,000", "45000", "45 000"],
    ),
    Goal(
        "G05",
        "single",
        "What is 2 to the power of 16?",
        [("calculator", expr_is(65536))],
        ["65536", "65,536"],
    ),
    Goal(
        "G06",
        "single",
        "How is the weather in Tokyo today?",
        [("get_weather", city_is("Tokyo"))],
        ["18°", "18 °", "cloud"],
    ),
    Goal(
        "G07",
        "single",
        "What is my home wifi password? It is in my notes.",
        [("search_notes", query_finds("tulip-4471"))],
        ["tulip-4471"],
    ),
    Goal("G08", "single", "Divide 9876 by 12.", [("calculator", expr_is(823))], ["823"]),
    Goal(
        "X01",
        "exact",
        "Search my notes for the exact phrase 'Project Nightingale kickoff' and tell me the date.",
        [("search_notes", arg_has("query", "nightingale"))],
        ["2024-06-18", "June 18", "18 June"],
        [("search_notes", arg_has("query", "Project Nightingale kickoff"))],
    ),
    Goal(
        "X02",
        "exact",
        "Check the weather in São Paulo for me.",
        [("get_weather", city_is("São Paulo"))],
        ["28°", "28 °", "shower", "humid"],
        [("get_weather", lambda a: str(a.get("city", "")).split(",")[0].strip() == "São Paulo")],
    ),
    Goal(
        "X03",
        "exact",
        "How much is 250 euros in Japanese yen?",
        [("convert_currency", currency(250, "EUR", "JPY"))],
        ["40,000", "40000", "40 000"],
        [("convert_currency", currency(250, "EUR", "JPY"))],
    ),
    Goal(
        "X04",
        "exact",
        "What is the status of order A-1093-ZX?",
        [("order_status", arg_is("order_id", "A-1093-ZX"))],
        ["shipped"],
        [("order_status", arg_is("order_id", "A-1093-ZX"))],
    ),
    Goal(
        "X05",
        "exact",
        "What's the weather in Saint-Étienne?",
        [("get_weather", city_is("Saint-Étienne"))],
        ["12°", "12 °", "overcast"],
        [
            (
                "get_weather",
                lambda a: str(a.get("city", "")).split(",")[0].strip() == "Saint-Étienne",
            )
        ],
    ),
    Goal(
        "X06",
        "exact",
        "Calculate (17.5 - 3.25) * 4.",
        [("calculator", expr_is(57))],
        ["57"],
        [
            (
                "calculator",
                lambda a: str(a.get("expression", "")).replace(" ", "") == "(17.5-3.25)*4",
            )
        ],
    ),
    Goal("D01", "direct", "Say hello to the user in one short sentence.", [], ["hello", "hi"]),
    Goal(
        "D02",
        "direct",
        "What is the capital of France? Answer directly, no tool is needed.",
        [],
        ["paris"],
    ),
    Goal("D03", "direct", "Translate 'thank you' into Spanish.", [], ["gracias"]),
    Goal("D04", "direct", "Which colour do you get by mixing blue and yellow?", [], ["green"]),
    Goal("D05", "direct", "How many days are there in a week?", [], ["7", "seven"]),
    Goal(
        "M01",
        "multi",
        "My notes say which city my dentist is in. What is the weather in that city?",
        [("search_notes", arg_has("query", "dentist")), ("get_weather", city_is("Madrid"))],
        ["31°", "31 °", "sunny"],
    ),
    Goal(
        "M02",
        "multi",
        "Look up the price per seat in my notes about the Acme contract, then calculate the "
        "monthly cost for 37 seats.",
        [("search_notes", arg_has("query", "acme")), ("calculator", expr_is(4773))],
        ["4773", "4,773"],
    ),
    Goal(
        "M03",
        "multi",
        "Get the current temperature in Oslo and convert it from Celsius to Fahrenheit.",
        [("get_weather", city_is("Oslo")), ("calculator", expr_is(24.8))],
        ["24.8"],
    ),
    Goal(
        "M04",
        "multi",
        "Find the order number in my notes about the broken kettle and check its status.",
        [
            ("search_notes", arg_has("query", "kettle")),
            ("order_status", arg_is("order_id", "B-2231-KT")),
        ],
        ["refund"],
    ),
    Goal(
        "M05",
        "multi",
        "My notes have the budget for the Berlin offsite in euros. Convert it to US dollars.",
        [
            ("search_notes", arg_has("query", "berlin")),
            ("convert_currency", currency(3200, "EUR", "USD")),
        ],
        ["3,478", "3478"],
    ),
    Goal(
        "M06",
        "multi",
        "What's the weather in the city where my sister lives? My notes say where.",
        [("search_notes", arg_has("query", "sister")), ("get_weather", city_is("Lisbon"))],
        ["22°", "22 °", "clear"],
    ),
    Goal(
        "M07",
        "multi",
        "My notes say how much my monthly rent is. How much is three months of rent?",
        [("search_notes", arg_has("query", "rent")), ("calculator", expr_is(4350))],
        ["4350", "4,350"],
    ),
]

# -- running and scoring ---------------------------------------------------------------


def _contains_answer(answer: str, expected: Sequence[str]) -> bool:
    plain = _plain(answer)
    return any(_plain(e) in plain for e in expected)


def score(
    goal: Goal, status: str, answer: str, calls: list[tuple[str, dict[str, Any]]], malformed: int
) -> dict[str, Any]:
    tools_used = [name for name, _ in calls]
    gold_tools = [name for name, _ in goal.steps]
    first = tools_used[0] if tools_used else "final_answer"
    usable = all(
        any(name == gold and check(args) for name, args in calls) for gold, check in goal.steps
    )
    exact = all(
        any(name == gold and check(args) for name, args in calls) for gold, check in goal.exact
    )
    correct = status == "completed" and _contains_answer(answer, goal.answers)
    return {
        "id": goal.id,
        "kind": goal.kind,
        "status": status,
        "valid_output": malformed == 0,
        "right_first_tool": first == (gold_tools[0] if gold_tools else "final_answer"),
        "args_usable": usable,
        "args_exact": exact if goal.exact else None,
        "correct_answer": correct,
        "solved": correct,
        "solved_with_expected_tools": correct and tools_used == gold_tools,
        "calls": [[name, args] for name, args in calls],
        "answer": answer[:200],
    }


async def run_goal(
    runtime: Runtime, agent: Agent, goal: Goal
) -> tuple[dict[str, Any], list[ModelResponded]]:
    run = await runtime.start(agent, goal.text)
    result = await run.wait(check=False)
    events = [s.event for s in await read_events(runtime.store, run.run_id)]
    responses = [e for e in events if isinstance(e, ModelResponded)]
    calls = [(e.tool, dict(e.args)) for e in events if isinstance(e, ActionRequested)]
    malformed = sum(1 for r in responses for c in r.tool_calls if c.error)
    answer = result.answer or result.error or ""
    return score(goal, result.status, answer, calls, malformed), responses


def _rate(tokens: int, ms: float) -> float | None:
    return round(tokens / (ms / 1000), 1) if ms else None


async def bench_model(spec: str, goals: Sequence[Goal]) -> dict[str, Any]:
    model = LocalModel(spec.removeprefix("local:") or None)
    load_s = await model.load()
    agent = Agent(name="brain-bench", model=model, tools=TOOLS, max_steps=6)
    results: list[dict[str, Any]] = []
    latencies: list[float] = []
    generated = prompt_new = 0
    generation_ms = prompt_ms = 0.0
    async with Runtime("memory://") as runtime:
        for goal in goals:
            scored, responses = await run_goal(runtime, agent, goal)
            results.append(scored)
            for response in responses:
                latencies.append(response.latency_ms / 1000)
                timings = response.meta.get("timings", {})
                generated += response.usage.output_tokens
                generation_ms += timings.get("generation_ms", 0.0)
                prompt_new += timings.get("prompt_n", 0)
                prompt_ms += timings.get("prompt_ms", 0.0)
            print(
                json.dumps({"model": spec, **scored}, ensure_ascii=False),
                file=sys.stderr,
                flush=True,
            )
    later = latencies[1:] or latencies
    by_kind: dict[str, dict[str, int]] = {}
    for r in results:
        kind = by_kind.setdefault(r["kind"], {"solved": 0, "goals": 0})
        kind["solved"] += r["solved"]
        kind["goals"] += 1
    return {
        "model": spec,
        "file": model.path.name,
        "solved": sum(r["solved"] for r in results),
        "goals": len(results),
        "solved_with_expected_tools": sum(r["solved_with_expected_tools"] for r in results),
        "valid_output": sum(r["valid_output"] for r in results),
        "right_first_tool": sum(r["right_first_tool"] for r in results),
        "args_usable": sum(r["args_usable"] for r in results if r["kind"] != "direct"),
        "args_exact": sum(bool(r["args_exact"]) for r in results if r["args_exact"] is not None),
        "by_kind": by_kind,
        "load_s": round(load_s, 2),
        "decisions": len(latencies),
        "decision_s": {
            "first": round(latencies[0], 2) if latencies else None,
            "median": round(statistics.median(later), 2) if later else None,
            "p90": round(statistics.quantiles(later, n=10)[-1], 2) if len(later) > 1 else None,
            "max": round(max(later), 2) if later else None,
        },
        "generation_tok_s": _rate(generated, generation_ms),
        "prompt_tok_s": _rate(prompt_new, prompt_ms),
        "results": results,
    }


async def main(models: Sequence[str], only: set[str] | None) -> None:
    goals = [g for g in GOALS if only is None or g.id in only]
    for spec in models:
        started = time.perf_counter()
        report = await bench_model(spec, goals)
        report["wall_s"] = round(time.perf_counter() - started, 1)
        report["machine"] = f"{platform.machine()} {platform.processor() or ''}".strip()
        print(json.dumps(report, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["local:brain", "local:tiny"])
    parser.add_argument("--only", help="comma-separated goal ids")
    args = parser.parse_args()
    asyncio.run(main(args.models, set(args.only.split(",")) if args.only else None))
