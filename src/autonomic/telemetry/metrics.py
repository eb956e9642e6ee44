"""Prometheus metrics of the runs a process sees committed, derived from their events.

Fed by the commit tap (``instrument(runtime)``), never by the driver: counting is off
the runs' path. Names follow Prometheus' rules and the OpenTelemetry GenAI metric names
as Prometheus spells them (``gen_ai_client_token_usage``,
``gen_ai_client_operation_duration_seconds``). Labels are bounded: agent, model, tool
and guard names come from code, never run or key ids, and each label keeps at most
``MAX_LABEL_VALUES`` distinct values (the rest read ``other``). Needs
``autonomic[metrics]`` (prometheus_client).

The agent KPIs (``autonomic.kpis``: tool utility, thought-to-action, plan fidelity,
tokens per task) are observed once per ended run, as histograms by agent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from autonomic.errors import ConfigError
from autonomic.events import (
    ActionCompleted,
    ActionFailed,
    ActionRequested,
    GuardTripped,
    ModelResponded,
    RunCancelled,
    RunCompleted,
    RunDead,
    RunFailed,
    RunForked,
    RunStarted,
)
from autonomic.kpis import run_kpis
from autonomic.loader import StoredEvent, read_events
from autonomic.store.base import Store

__all__ = ["CONTENT_TYPE", "MAX_LABEL_VALUES", "RunMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_LABEL_VALUES = 100
TOKEN_BUCKETS = tuple(4.0**i for i in range(14))  # 1, 4, 16 ... 67,108,864 (the semconv's)
DURATION_BUCKETS = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
RUN_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400, 604800)
_RUN_CACHE = 100_000
RATIO = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
PER_CALL = (0.5, 1, 1.5, 2, 3, 5, 10, 20)
CURRENT_CAP = 10_000
CURRENT_STATUSES = ("pending", "running", "waiting", "dead")


def _require_prometheus() -> None:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise ConfigError(
            'metrics need prometheus_client: pip install "autonomic[metrics]"'
        ) from None


class _Bounded:
    """The values a label may take: the first ``limit`` seen, then ``other``."""

    def __init__(self, limit: int = MAX_LABEL_VALUES) -> None:
        self.limit = limit
        self.known: set[str] = set()

    def __call__(self, value: str) -> str:
        value = value or "unknown"
        if value in self.known:
            return value
        if len(self.known) >= self.limit:
            return "other"
        self.known.add(value)
        return value


class RunMetrics:
    """The counters and histograms, and the observer that updates them."""

    def __init__(self, store: Store, *, extra: Callable[[], Iterator[Any]] | None = None) -> None:
        _require_prometheus()
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.store = store
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._agent, self._model, self._tool, self._guard = (
            _Bounded(),
            _Bounded(),
            _Bounded(),
            _Bounded(),
        )
        self._runs: dict[str, tuple[str, float]] = {}
        self._actions: dict[tuple[str, str], str] = {}
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.runs_started = Counter(
            "autonomic_runs_started", "Runs started (or forked).", ["agent"], registry=r
        )
        self.runs_ended = Counter(
            "autonomic_runs", "Runs ended, by final status.", ["agent", "status"], registry=r
        )
        self.run_duration = Histogram(
            "autonomic_run_duration_seconds",
            "Wall time from a run's start to its end.",
            ["agent", "status"],
            buckets=RUN_BUCKETS,
            registry=r,
        )
        self.steps = Counter(
            "autonomic_steps", "Model calls and tool calls.", ["agent", "kind"], registry=r
        )
        self.op_duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "Duration of model calls (GenAI semantic conventions).",
            ["gen_ai_operation_name", "gen_ai_request_model"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.token_usage = Histogram(
            "gen_ai_client_token_usage",
            "Tokens per model call (GenAI semantic conventions).",
            ["gen_ai_operation_name", "gen_ai_request_model", "gen_ai_token_type"],
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "autonomic_tokens", "Tokens by model and type.", ["model", "type"], registry=r
        )
        self.cost = Counter(
            "autonomic_cost_usd", "Cost of model calls in US dollars.", ["model"], registry=r
        )
        self.unpriced = Counter(
            "autonomic_unpriced_calls", "Model calls whose cost is unknown.", ["model"], registry=r
        )
        self.tool_calls = Counter(
            "autonomic_tool_calls", "Tool calls by outcome.", ["tool", "outcome"], registry=r
        )
        self.tool_duration = Histogram(
            "autonomic_tool_duration_seconds",
            "Duration of tool calls.",
            ["tool"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.guard_trips = Counter(
            "autonomic_guard_trips", "Guards that tripped.", ["guard"], registry=r
        )
        self.approvals_pending = Gauge(
            "autonomic_approvals_pending",
            "Tool calls waiting for a person, in the store's waiting runs (read at scrape).",
            registry=r,
        )
        self.kpi = {
            name: Histogram(
                f"autonomic_run_{name}",
                f"Per ended run: {text} (autonomic.kpis).",
                ["agent"],
                buckets=buckets,
                registry=r,
            )
            for name, text, buckets in (
                ("tool_utility", "tool calls whose result was used, over tool calls", RATIO),
                ("thought_to_action", "model calls per tool call", PER_CALL),
                ("plan_fidelity", "planned steps run, over planned steps", RATIO),
                ("tokens", "tokens of the run and its child runs", TOKEN_BUCKETS),
            )
        }
        self.runs_current = Gauge(
            "autonomic_runs_current",
            f"Runs in the store by status (counted up to {CURRENT_CAP:,}).",
            ["status"],
            registry=r,
        )
        self.runs_driven = Gauge(
            "autonomic_runs_driven", "Runs this process drives right now.", registry=r
        )
        if extra is not None:
            r.register(_Collector(extra))

    async def refresh(self, driven: int) -> None:
        """Read what only the store knows (runs by status) before a scrape."""
        self.runs_driven.set(driven)
        for status in CURRENT_STATUSES:
            runs = await self.store.list_runs(status=status, limit=CURRENT_CAP)
            self._of(self.runs_current, status).set(len(runs))
            if status == "waiting":
                self.approvals_pending.set(
                    sum(
                        len({k for g in r.wait.groups for k in g if k.startswith("approval:")})
                        for r in runs
                        if r.wait is not None
                    )
                )

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    async def observe(self, run_id: str, events: Sequence[StoredEvent]) -> None:
        """Count newly committed events of ``run_id`` (the tap's observer)."""
        for stored in events:
            e = stored.event
            match e:
                case RunStarted():
                    self._remember(run_id, e.agent, stored.ts)
                    self._of(self.runs_started, self._agent(e.agent)).inc()
                case RunForked():
                    agent, _ = await self._run(run_id)
                    self._remember(run_id, agent, stored.ts)
                    self._of(self.runs_started, self._agent(agent)).inc()
                case ModelResponded():
                    await self._model_call(run_id, e)
                case ActionRequested():
                    agent, _ = await self._run(run_id)
                    if len(self._actions) >= _RUN_CACHE:
                        del self._actions[next(iter(self._actions))]
                    self._actions[(run_id, e.action_id)] = e.tool
                    self._of(self.steps, self._agent(agent), "tool").inc()
                case ActionCompleted() | ActionFailed():
                    await self._tool_done(run_id, e)
                case GuardTripped():
                    self._of(self.guard_trips, self._guard(e.guard)).inc()
                case RunCompleted() | RunFailed() | RunCancelled() | RunDead():
                    await self._ended(run_id, e, stored.ts)

    def _of(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, cached: prometheus_client's lookup is the slow part."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _remember(self, run_id: str, agent: str, started: float) -> None:
        if len(self._runs) >= _RUN_CACHE:
            del self._runs[next(iter(self._runs))]
        self._runs[run_id] = (agent, started)

    async def _run(self, run_id: str) -> tuple[str, float]:
        known = self._runs.get(run_id)
        if known is None:  # started before this process watched, or forgotten
            info = await self.store.get_run(run_id)
            self._remember(run_id, info.agent, info.created_at)
            known = self._runs[run_id]
        return known

    async def _model_call(self, run_id: str, e: ModelResponded) -> None:
        agent, _ = await self._run(run_id)
        model = self._model(e.model)
        self._of(self.steps, self._agent(agent), "model").inc()
        self._of(self.op_duration, "chat", model).observe(e.latency_ms / 1000)
        self._of(self.token_usage, "chat", model, "input").observe(e.usage.input_tokens)
        self._of(self.token_usage, "chat", model, "output").observe(e.usage.output_tokens)
        self._of(self.tokens, model, "input").inc(e.usage.input_tokens)
        self._of(self.tokens, model, "output").inc(e.usage.output_tokens)
        if e.cost is None:
            self._of(self.unpriced, model).inc()
        else:
            self._of(self.cost, model).inc(e.cost)

    async def _tool_done(self, run_id: str, e: ActionCompleted | ActionFailed) -> None:
        tool = self._actions.pop((run_id, e.action_id), None)
        if tool is None:  # requested before this process watched
            tool = await self._tool_name(run_id, e.action_id)
        tool = self._tool(tool)
        outcome = "ok" if isinstance(e, ActionCompleted) else "error"
        self._of(self.tool_calls, tool, outcome).inc()
        self._of(self.tool_duration, tool).observe(e.duration_ms / 1000)

    async def _tool_name(self, run_id: str, action_id: str) -> str:
        info = await self.store.get_run(run_id)
        for stored in reversed(await read_events(self.store, run_id, max(0, info.last_seq - 200))):
            if isinstance(stored.event, ActionRequested) and stored.event.action_id == action_id:
                return stored.event.tool
        return "unknown"

    async def _ended(self, run_id: str, e: Any, ts: float) -> None:
        agent, started = await self._run(run_id)
        status = {
            RunCompleted: "completed",
            RunFailed: "failed",
            RunCancelled: "cancelled",
            RunDead: "dead",
        }[type(e)]
        self._of(self.runs_ended, self._agent(agent), status).inc()
        self._of(self.run_duration, self._agent(agent), status).observe(max(0.0, ts - started))
        self._runs.pop(run_id, None)
        if status != "dead":  # its log is final: the KPIs read all of it
            kpis = run_kpis([s.event for s in await read_events(self.store, run_id)])
            for name in self.kpi:
                value = getattr(kpis, name)
                if value is not None:
                    self._of(self.kpi[name], self._agent(agent)).observe(value)


class _Collector:
    """Adds metric families computed at scrape time (the tap's queue, say)."""

    def __init__(self, collect: Callable[[], Iterator[Any]]) -> None:
        self._collect = collect

    def collect(self) -> Iterator[Any]:
        return self._collect()

    def describe(self) -> list[Any]:
        return []
