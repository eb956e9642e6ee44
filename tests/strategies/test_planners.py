"""ReWOO and the DAG planner: plans parsed and recorded, steps run when their inputs are
ready, placeholders filled, malformed plans repaired then refused, re-planning bounded."""

from __future__ import annotations

import asyncio

import pytest
from msgspec.structs import replace

from autonomic import (
    Agent,
    FunctionModel,
    ModelRequest,
    ReplayDivergence,
    RunResult,
    Runtime,
    ScriptedModel,
    tool,
)
from autonomic.events import ActionCompleted, ActionFailed, ActionRequested, ModelCalled
from autonomic.loader import StoredEvent, read_events
from autonomic.replay import replay_events
from autonomic.store.base import Store
from autonomic.strategies import DAGPlanner, PlanRecorded, ReWOO
from autonomic.strategies.plans import PlanError, parse_plan, substitute
from autonomic.views import render_trace

POPULATION = {"paris": 2100, "rome": 2800, "oslo": 700}


@tool(idempotent=True)
async def population(city: str) -> str:
    "Population of a city, in thousands."
    await asyncio.sleep(0.01)
    return str(POPULATION[city.lower()])


@tool(idempotent=True)
def larger(a: str, b: str) -> str:
    "The larger of two numbers."
    return str(max(int(a), int(b)))


TOOLS = [population, larger]
SPECS = tuple(t.spec for t in TOOLS)
PLAN = """Plan: look both cities up
#E1 = population[{"city": "Paris"}]
#E2 = population[Rome]
Plan: compare them
#E3 = larger[{"a": "#E1", "b": "#E2"}]"""


def test_a_plan_parses_into_nodes_with_dependencies_from_placeholders() -> None:
    nodes = parse_plan(PLAN, SPECS)
    assert [(n.id, n.tool, n.deps) for n in nodes] == [
        ("E1", "population", ()),
        ("E2", "population", ()),
        ("E3", "larger", ("E1", "E2")),
    ]
    assert nodes[1].args == {"city": "Rome"}  # a bare value fills the only argument
    assert nodes[0].note == "look both cities up" and nodes[2].note == "compare them"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("no steps at all", "no step"),
        ('#E1 = fly[{"to": "x"}]', "'fly', which is not a tool"),
        ('#E1 = larger[{"a": "#E2", "b": "1"}]', "uses #E2, which is not defined before it"),
        ('#E1 = population[{"city": }]', "not valid JSON"),
        ("#E1 = larger[3]", "takes 2 arguments"),
        ('#E1 = population[{"city": "a"}]\n#E1 = population[{"city": "b"}]', "defined twice"),
    ],
)
def test_a_malformed_plan_is_refused_saying_why(text: str, error: str) -> None:
    with pytest.raises(PlanError, match=error.replace("(", r"\(")):
        parse_plan(text, SPECS)


def test_placeholders_are_substituted_in_nested_strings_only() -> None:
    args = {"q": "#E1 and #E12", "n": 3, "l": ["#E2"]}
    assert substitute(args, {"E1": "a", "E12": "b", "E2": "c"}) == {
        "q": "a and b",
        "n": 3,
        "l": ["c"],
    }


async def _run(
    store: Store, agent: Agent, goal: str = "Which is larger?"
) -> tuple[RunResult, list[StoredEvent]]:
    """Run ``agent`` to its end, and check that replaying its log decides the same."""
    async with Runtime(store) as rt:
        run = await rt.start(agent, goal)
        result = await run.wait(check=False)
        events = await read_events(rt.store, run.run_id)
        replayed = await rt.replay(run.run_id, agent=agent)
    assert (replayed.status, replayed.seq) == (result.status, len(events))
    return result, events


async def test_rewoo_plans_once_runs_independent_steps_together_and_solves(
    store: Store,
) -> None:
    model = ScriptedModel([PLAN, "Rome is larger: 2800"])
    agent = Agent(name="w", model=model, tools=TOOLS, strategy=ReWOO())
    result, events = await _run(store, agent)
    assert (result.status, result.answer, result.model_calls) == (
        "completed",
        "Rome is larger: 2800",
        2,
    )
    kinds = [type(e.event).__name__ for e in events]
    plan_at = kinds.index("PlanRecorded")
    requests = [e.event for e in events if isinstance(e.event, ActionRequested)]
    assert [(r.call_id, r.args) for r in requests] == [
        ("p1.E1", {"city": "Paris"}),
        ("p1.E2", {"city": "Rome"}),
        ("p1.E3", {"a": "2100", "b": "2800"}),
    ]
    # E1 and E2 were requested in one batch, before either finished; E3 after both
    first, second = (kinds.index("ActionRequested"), kinds.index("ActionRequested", plan_at + 2))
    assert second == first + 1
    assert kinds.index("ActionCompleted") > second
    purposes = [e.event.purpose for e in events if isinstance(e.event, ModelCalled)]
    assert purposes == ["plan", "solve"]
    trace = render_trace(events)
    assert "◆ plan 1 (rewoo, 3 steps): E1 population; E2 population; E3 larger ← E1,E2" in trace


async def test_rewoo_repairs_a_malformed_plan_once_then_fails_clearly(store: Store) -> None:
    agent = Agent(
        name="w",
        model=ScriptedModel(["I will just guess", PLAN, "2800"]),
        tools=TOOLS,
        strategy=ReWOO(),
    )
    result, _ = await _run(store, agent)
    assert result.answer == "2800" and result.model_calls == 3
    bad = Agent(
        name="w", model=ScriptedModel(["guess", "#E1 = fly[x]"]), tools=TOOLS, strategy=ReWOO()
    )
    result, _ = await _run(store, bad)
    assert result.status == "failed"
    assert "no usable plan in 2 tries: #E1 calls 'fly'" in result.error


async def test_a_failed_step_skips_what_uses_it_and_the_solver_is_told(store: Store) -> None:
    plan = '#E1 = population[{"city": "Atlantis"}]\n#E2 = larger[{"a": "#E1", "b": "1"}]'
    told: list[str] = []

    def model(request: ModelRequest) -> str:
        if request.purpose == "plan":
            return plan
        told.append(request.messages[-1].content)
        return "unknown"

    agent = Agent(name="w", model=FunctionModel(model), tools=TOOLS, strategy=ReWOO())
    result, events = await _run(store, agent)
    assert result.answer == "unknown"
    assert [e.event.tool for e in events if isinstance(e.event, ActionRequested)] == ["population"]
    assert "→ Error: " in told[0] and "→ not run: a step it uses failed" in told[0]


async def test_dag_joins_and_replans_with_everything_seen_so_far(store: Store) -> None:
    replan = '#E1 = population[{"city": "Oslo"}]'
    model = ScriptedModel(
        [PLAN, "Replan: Oslo is missing", replan, "Answer: Rome (2800), Oslo 700"]
    )
    agent = Agent(name="d", model=model, tools=TOOLS, strategy=DAGPlanner())
    result, events = await _run(store, agent)
    assert result.answer == "Rome (2800), Oslo 700"
    plans = [e.event for e in events if isinstance(e.event, PlanRecorded)]
    assert [(p.index, p.reason, len(p.nodes)) for p in plans] == [
        (1, "", 3),
        (2, "Oslo is missing", 1),
    ]
    purposes = [e.event.purpose for e in events if isinstance(e.event, ModelCalled)]
    assert purposes == ["plan", "join", "plan", "join"]


async def test_dag_starts_a_node_as_soon_as_its_inputs_are_ready(store: Store) -> None:
    # A is slow: it ends only once C has started (or after 5 s, in which case the order
    # below fails). C uses only B, so an eager scheduler starts C while A still runs.
    c_started = asyncio.Event()

    @tool(idempotent=True)
    async def slow(x: str) -> str:
        "Waits for the other branch."
        try:
            await asyncio.wait_for(c_started.wait(), 5)
        except TimeoutError:
            return "late"
        return f"slow {x}"

    @tool(idempotent=True)
    def fast(x: str, after: str = "") -> str:
        "Answers at once."
        if x == "c":
            c_started.set()
        return f"fast {x}"

    plan = (
        '#E1 = slow[{"x": "a"}]\n'
        '#E2 = fast[{"x": "b"}]\n'
        '#E3 = fast[{"x": "c", "after": "#E2"}]\n'
        '#E4 = fast[{"x": "#E1 and #E3"}]'
    )
    agent = Agent(
        name="d",
        model=ScriptedModel([plan, "Answer: done"]),
        tools=[slow, fast],
        strategy=DAGPlanner(),
    )
    result, events = await _run(store, agent)
    assert result.answer == "done"
    calls: dict[str, str] = {}
    order: list[tuple[str, str]] = []
    for stored in events:
        e = stored.event
        if isinstance(e, ActionRequested):
            calls[e.action_id] = e.call_id
            order.append(("start", e.call_id))
        elif isinstance(e, ActionCompleted):
            order.append(("end", calls[e.action_id]))
    assert order.index(("start", "p1.E3")) < order.index(("end", "p1.E1"))
    assert order.index(("end", "p1.E2")) < order.index(("start", "p1.E3"))
    # E4 waits for both of its inputs, and sees their results
    assert order.index(("start", "p1.E4")) > order.index(("end", "p1.E1"))
    (last,) = [e.event for e in events if isinstance(e.event, ActionRequested)][-1:]
    assert last.args == {"x": "slow a and fast c"}
    # replay re-decides the eager starts too: a log whose E3 ran with other arguments
    # than the plan gives it diverges there
    [at] = [
        i
        for i, s in enumerate(events)
        if isinstance(s.event, ActionRequested) and s.event.call_id == "p1.E3"
    ]
    forged = events[at].event
    assert isinstance(forged, ActionRequested)
    events[at] = replace(events[at], event=replace(forged, args={"x": "d", "after": "fast b"}))
    with pytest.raises(ReplayDivergence, match=f"event {events[at].seq} .*tool calls"):
        replay_events("forged", events, agent)


async def test_dag_stops_replanning_at_its_limit(store: Store) -> None:
    step = '#E1 = population[{"city": "Oslo"}]'
    model = ScriptedModel([step, "Replan: more", step, "Replan: still more"])
    agent = Agent(name="d", model=model, tools=TOOLS, strategy=DAGPlanner(max_replans=1))
    result, _ = await _run(store, agent)
    assert result.status == "failed"
    assert result.error == "still missing after 2 plans: still more"


async def test_a_dag_node_can_be_a_sub_agent_that_sees_only_its_own_task_and_tools(
    store: Store,
) -> None:
    seen: list[ModelRequest] = []

    def researcher_model(request: ModelRequest) -> str:
        seen.append(request)
        return "Rome has 2800 thousand people"

    researcher = Agent(
        name="researcher",
        instructions="Research.",
        model=FunctionModel(researcher_model),
        tools=[larger],
    )
    plan = (
        '#E1 = population[{"city": "Paris"}]\n'
        '#E2 = researcher[{"goal": "How many people live in Rome?"}]\n'
        '#E3 = larger[{"a": "#E1", "b": "2800"}]'
    )
    agent = Agent(
        name="d",
        model=ScriptedModel([plan, "Answer: Rome"]),
        tools=[*TOOLS, researcher.as_tool()],
        strategy=DAGPlanner(),
    )
    result, events = await _run(store, agent)
    assert result.answer == "Rome"
    # the handoff carries the task only: no parent history, only the receiver's own tools
    (request,) = seen
    assert [(m.role, m.content) for m in request.messages] == [
        ("system", "Research."),
        ("user", "How many people live in Rome?"),
    ]
    assert [t.name for t in request.tools] == ["larger"]
    # every call of the parent has exactly one outcome, and no call id repeats
    requested = [e.event for e in events if isinstance(e.event, ActionRequested)]
    settled = [
        e.event.action_id for e in events if isinstance(e.event, ActionCompleted | ActionFailed)
    ]
    assert sorted(settled) == sorted(r.action_id for r in requested)
    assert len({r.call_id for r in requested}) == len(requested) == 3


def test_a_run_that_plans_nothing_carries_no_plan_state() -> None:
    from autonomic.state import RunState
    from autonomic.strategies.plans import PlanBook
    from autonomic.strategies.team import TeamBook

    state = RunState(run_id="r")
    state.apply(ActionRequested("a-1", "c1", "population"), 1, 0.0)
    state.apply(ActionCompleted("a-1", "2102"), 2, 0.0)
    assert not any(isinstance(v, PlanBook | TeamBook) for v in state.ext.values())
