"""Workers: processes that drive whatever runs are ready in a shared store.

``autonomic worker --store postgresql://... --agents myapp.agents --concurrency 200``
claims ready runs of the agents it serves (new ones submitted with ``run --detach``, runs
whose wait ended, runs orphaned by a worker that died), up to its concurrency, and drives
them; its leases are renewed by the runtime's heartbeat. On SIGTERM (or SIGINT) it drains:
it claims nothing more, lets the runs it holds go on for up to ``drain_s`` seconds, then
stops them, each left resumable (its lease released) for another worker. A run whose
worker died is claimed by another once its lease expires; a run that has killed more
than ``max_recoveries`` workers is buried (``dead``). Every run transition is one log
line; ``--health-port`` serves ``GET /health`` as JSON (503 while draining).
``--agent-limit NAME=N`` and ``--tenant-limit N`` cap the runs of an agent, and of any one
tenant, that live leases hold at once across every worker on the store: the claim counts
them in the same transaction (runs over a cap wait, and other tenants' runs go first);
give every worker the same limits. Ready runs of a higher priority (``run --priority``)
are claimed first, then the oldest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import itertools
import json
import logging
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from autonomic._options import connection_options
from autonomic.agent import Agent, _import_file, load_agent
from autonomic.bus import open_bus
from autonomic.bus.base import BrokerUnreachable
from autonomic.errors import AgentNotFound, ConfigError, StoreCorrupt, StoreError
from autonomic.runtime import Runtime
from autonomic.store import open_store
from autonomic.store.base import ClaimFilter

__all__ = ["Worker", "add_worker_parser", "load_agents"]

log = logging.getLogger("autonomic.worker")


def load_agents(specs: Sequence[str]) -> list[Agent]:
    """The agents named by ``specs``: ``module:attr`` (or ``file.py:attr``) is one agent;
    a bare module (or ``file.py``) is every Agent defined at its top level."""
    agents: list[Agent] = []
    for spec in specs:
        if ":" in spec:
            agents.append(load_agent(spec))
            continue
        try:
            module = _import_file(spec) if spec.endswith(".py") else importlib.import_module(spec)
        except Exception as e:
            raise AgentNotFound(f"cannot import {spec!r} for its agents: {e}") from e
        found = [(name, v) for name, v in vars(module).items() if isinstance(v, Agent)]
        if not found:
            raise AgentNotFound(f"{spec!r} defines no autonomic.Agent at its top level")
        where = module.__file__ if spec.endswith(".py") else module.__name__
        for name, agent in found:
            if agent.path is None:
                agent.path = f"{where}:{name}"
            agents.append(agent)
    return agents


class Worker:
    """Serves ``agents`` from the store at ``store``; ``run`` returns when stopped."""

    def __init__(
        self,
        store: str,
        agents: Sequence[Agent],
        *,
        concurrency: int = 100,
        lease_s: float = 30.0,
        drain_s: float = 30.0,
        max_recoveries: int = 5,
        poll_s: float = 1.0,
        health_port: int | None = None,
        exit_after: int | None = None,
        bus: str | None = None,
        connect_s: float = 60.0,
        agent_limits: Mapping[str, int] | None = None,
        tenant_limit: int | None = None,
    ) -> None:
        if concurrency < 1 or drain_s < 0:
            raise ConfigError("concurrency must be 1 or more, and drain_s 0 or more")
        if not agents:
            raise ConfigError("a worker needs agents to serve: pass --agents module")
        self.runtime = Runtime(
            open_store(store),
            agents=agents,
            wake=True,
            resume_incomplete=True,
            lease_s=lease_s,
            max_recoveries=max_recoveries,
            poll_s=poll_s,
            max_concurrent_runs=concurrency,
            bus=open_bus(bus) if bus else None,
        )
        self.concurrency, self.drain_s = concurrency, drain_s
        self.health_port, self.exit_after = health_port, exit_after
        self.connect_s = connect_s
        self.limits = ClaimFilter(agent_limits=agent_limits, tenant_limit=tenant_limit)
        self.counts: Counter[str] = Counter()
        self.draining = False
        self.started = time.time()
        self._stop = asyncio.Event()

    def stop(self) -> None:
        """Begin draining (what SIGTERM does)."""
        self.draining = True
        self._stop.set()

    def _transition(self, run_id: str, what: str) -> None:
        self.counts[what] += 1
        log.info("run %s %s", run_id, what)
        ended = sum(self.counts[s] for s in ("completed", "failed", "cancelled", "dead"))
        if self.exit_after is not None and ended >= self.exit_after:
            self._stop.set()

    def health(self) -> dict[str, Any]:
        supervisor = self.runtime.supervisor
        return {
            "owner": self.runtime.owner,
            "status": "draining" if self.draining else "serving",
            "running": len(supervisor.tasks),
            "concurrency": self.concurrency,
            "agents": sorted(self.runtime.registry.names()),
            "uptime_s": round(time.time() - self.started, 1),
            "transitions": dict(self.counts),
        }

    async def _enter(self, stack: contextlib.AsyncExitStack) -> Runtime:
        """Open the runtime, waiting up to ``connect_s`` for a store or bus broker that
        cannot be reached yet (a server starting or restarting); a wrong URL fails at once."""
        deadline = time.monotonic() + self.connect_s
        for attempt in itertools.count():
            try:
                return await stack.enter_async_context(self.runtime)
            except (StoreError, ConfigError) as e:
                unreachable = isinstance(e, BrokerUnreachable) or (
                    isinstance(e, StoreError) and not isinstance(e, StoreCorrupt)
                )
                if not unreachable or time.monotonic() >= deadline or self._stop.is_set():
                    raise
                what = "bus" if isinstance(e, BrokerUnreachable) else "store"
                log.warning("cannot reach the %s yet (%s); trying again", what, e)
                await asyncio.sleep(min(2.0, 0.1 * 2**attempt))
        raise AssertionError("unreachable")

    async def run(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            runtime = await self._enter(stack)
            supervisor = runtime.supervisor
            supervisor.only_registered = True
            supervisor.limits = self.limits
            supervisor.observer = self._transition
            server = await self._serve_health() if self.health_port is not None else None
            log.info(
                "worker %s serving %s on %s (concurrency %d)",
                runtime.owner,
                ", ".join(sorted(runtime.registry.names())),
                getattr(runtime.store, "url", "?"),
                self.concurrency,
            )
            try:
                await self._stop.wait()
                self.draining = True  # (--exit-after sets only the event)
                supervisor.stop_claiming()
                deadline = time.monotonic() + self.drain_s
                while supervisor.starting and time.monotonic() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)  # a run claimed just now is held too
                held = list(supervisor.tasks.values())
                log.info("draining: %d run(s) held, up to %gs", len(held), self.drain_s)
                if held and self.drain_s > 0:
                    await asyncio.wait(held, timeout=max(0.0, deadline - time.monotonic()))
                left = len(supervisor.tasks)
                log.info("drained: %d run(s) left resumable for other workers", left)
            finally:
                if server is not None:
                    server.close()
                    await server.wait_closed()

    async def _serve_health(self) -> asyncio.Server:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, TimeoutError, asyncio.IncompleteReadError):
                async with asyncio.timeout(5):
                    request = await reader.readuntil(b"\r\n\r\n")
                path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b""
                if path.split(b"?")[0] == b"/health":
                    code, body = (503 if self.draining else 200), json.dumps(self.health())
                else:
                    code, body = 404, json.dumps({"error": "try GET /health"})
                reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[code]
                data = body.encode()
                writer.write(
                    f"HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
                    + data
                )
                await writer.drain()
            writer.close()

        try:
            return await asyncio.start_server(answer, "127.0.0.1", self.health_port)
        except OSError as e:
            raise ConfigError(f"cannot serve health on port {self.health_port}: {e}") from e


async def _serve(args: argparse.Namespace) -> int:
    worker = Worker(
        args.store,
        load_agents([spec for value in args.agents for spec in value.split(",") if spec]),
        concurrency=args.concurrency,
        lease_s=args.lease_s,
        drain_s=args.drain_s,
        max_recoveries=args.max_recoveries,
        poll_s=args.poll_s,
        health_port=args.health_port,
        exit_after=args.exit_after,
        bus=args.bus,
        agent_limits=dict(args.agent_limit or ()),
        tenant_limit=args.tenant_limit,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    await worker.run()
    return 0


async def cmd_worker(args: argparse.Namespace, runtime: object) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO,
            stream=sys.stderr,
            format=f"%(asctime)s worker[{os.getpid()}] %(levelname)s %(message)s",
        )
    return await _serve(args)


def add_worker_parser(commands: Any) -> None:
    """``autonomic worker``: its subcommand, added to the CLI's subparsers."""
    p = commands.add_parser(
        "worker",
        help="drive ready runs from a shared store (for run --detach, crashes, wake-ups)",
        description="Claim and drive ready runs of these agents from the store until "
        "SIGTERM, then drain. Start several, on one or many machines, on one PostgreSQL "
        "store (--store postgresql://...).",
    )
    p.add_argument(
        "--agents",
        action="append",
        required=True,
        metavar="MODULE",
        help="module (every Agent in it), module:attr or file.py[:attr]; repeat or "
        "separate with commas",
    )
    connection_options(p)
    p.add_argument("--concurrency", type=_positive_int, default=100, help="runs at once")
    p.add_argument("--lease-s", type=_positive_float, default=30.0, help="lease length")
    p.add_argument(
        "--drain-s",
        type=float,
        default=30.0,
        help="on SIGTERM, how long held runs may go on before they are released",
    )
    p.add_argument(
        "--max-recoveries",
        type=_positive_int,
        default=5,
        help="a run that killed more workers than this is buried as dead",
    )
    p.add_argument(
        "--poll-s",
        type=_positive_float,
        default=1.0,
        help="look for ready runs at least this often, without a bus hint",
    )
    p.add_argument(
        "--agent-limit",
        action="append",
        type=_agent_limit,
        metavar="NAME=N",
        help="at most N runs of agent NAME at once across all workers of the store "
        "(repeat for several agents; give every worker the same limits)",
    )
    p.add_argument(
        "--tenant-limit",
        type=_positive_int,
        metavar="N",
        help="at most N runs of any one tenant at once across all workers of the store, "
        "so that one tenant's backlog cannot starve the others",
    )
    p.add_argument("--health-port", type=int, help="serve GET /health on 127.0.0.1:PORT")
    p.add_argument(
        "--exit-after",
        type=_positive_int,
        metavar="N",
        help="drain and exit once N runs ended here (for batch jobs and tests)",
    )
    p.set_defaults(handler=cmd_worker, offline=True)


def _agent_limit(text: str) -> tuple[str, int]:
    name, sep, count = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=N (e.g. researcher=5)")
    return name, _positive_int(count)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be 1 or more")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} must be more than 0")
    return value
