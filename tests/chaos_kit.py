"""The chaos drill, shared by ``tests/test_chaos.py`` and ``bench/chaos.py``.

Worker processes (``autonomic worker``) drive runs of ``ledger_agent`` from a PostgreSQL
store; each run makes ``CHARGES`` non-idempotent tool calls, each appending one row to a
ledger table in the same database. Meanwhile the drill SIGKILLs workers (and starts new
ones), SIGSTOPs a lease holder past its lease then SIGCONTs it, and restarts PostgreSQL
(a cluster of its own, started here) or the workers' bus broker (a Redis or NATS server
of its own). Then it checks what must hold whatever happened: every run ended, none
lost, no ledger row twice for one action, no run left running without a live owner
after the lease time, every log numbered 1..n, and no traceback in the workers' log.

Wake-ups are probed under load, after each restart and at the end: a run of
``probe_agent`` is submitted for a worker of its own that polls only once a minute, so
that only a bus hint can get it driven within the probe's deadline; each probe's
latency is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autonomic import Agent, Runtime, ScriptedModel, ToolContext, tool, tool_call
from autonomic.errors import StoreError, ToolError
from autonomic.runtime import ENDED
from autonomic.store import open_store
from bus_kinds import Broker

HERE = Path(__file__).parent
Popen = subprocess.Popen[bytes]
CHARGES = 5
LEDGER_DSN = "AUTONOMIC_CHAOS_LEDGER"
"""The ledger's database (a postgresql:// URL with ``?schema=``), for the workers' tool."""

_ledger: Any = None
_ledger_lock: asyncio.Lock | None = None


async def _ledger_conn() -> Any:
    global _ledger
    if _ledger is None or _ledger.closed:
        import psycopg

        from autonomic.store.postgres import PostgresStore

        store = PostgresStore(os.environ[LEDGER_DSN])
        _ledger = await psycopg.AsyncConnection.connect(
            store.conninfo, **store.connect_kwargs(), connect_timeout=5
        )
    return _ledger


@tool
async def charge(amount: int, context: ToolContext) -> str:
    "Charge an amount: one ledger row per call (not idempotent)."
    global _ledger, _ledger_lock
    _ledger_lock = _ledger_lock or asyncio.Lock()
    async with _ledger_lock:
        try:
            conn = await _ledger_conn()
            await conn.execute(
                "INSERT INTO ledger (run_id, action_id, amount, pid) VALUES (%s, %s, %s, %s)",
                (context.run_id, context.action_id, amount, os.getpid()),
            )
        except Exception as e:
            _ledger = None
            raise ToolError(f"the ledger is unreachable: {e}") from e
    return f"charged {amount}"


ledger_agent = Agent(
    name="ledger",
    model=ScriptedModel(
        [tool_call("charge", amount=i) for i in range(CHARGES)] + ["all charged"],
        latency=0.02,
    ),
    tools=[charge],
    max_steps=CHARGES + 3,
)

probe_agent = Agent(name="probe", model=ScriptedModel(["awake"]))
PROBE_POLL_S = 60.0
"""The probe worker's poll: far longer than a probe waits, so only the bus wakes it."""
PROBE_DEADLINE_S = 20.0


# -- the PostgreSQL cluster the drill may restart ----------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Cluster:
    """A PostgreSQL cluster of our own in a temporary folder (run as ``postgres`` when
    we are root: the server refuses to run as root)."""

    def __init__(self) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        found = shutil.which("initdb")
        initdb = Path(found) if found else (bins[-1] if bins else None)
        if initdb is None:
            raise RuntimeError("initdb not found: install PostgreSQL (apt install postgresql)")
        self.bin = initdb.parent
        self.root = Path(tempfile.mkdtemp(prefix="autonomic-chaos-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            self.as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run(
            [*self.as_user, *args], check=True, capture_output=True, timeout=60, cwd=self.root
        )

    def start(self) -> None:
        if not (self.data / "PG_VERSION").exists():
            self._run(
                str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                "--no-sync", "-E", "UTF8",
            )  # fmt: skip
        self._pg_ctl("start")

    def _pg_ctl(self, action: str) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.root} -c fsync=off -c max_connections=200"
        )
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60", "-m", "fast",
            "-l", str(self.root / "log"), "-o", options, action,
        )  # fmt: skip

    def restart(self) -> None:
        self._pg_ctl("restart")

    def stop(self) -> None:
        try:
            self._pg_ctl("stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


# -- workers -------------------------------------------------------------------------------


def start_worker(
    url: str,
    log: Path,
    *,
    lease_s: float,
    concurrency: int,
    bus: str | None = None,
    agent: str = "ledger_agent",
    poll_s: float | None = None,
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        LEDGER_DSN: url,
        "PYTHONPATH": os.pathsep.join([str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    command = [
        sys.executable, "-m", "autonomic", "worker", "--store", url,
        "--agents", f"chaos_kit:{agent}", "--lease-s", str(lease_s),
        "--poll-s", str(poll_s or min(1.0, lease_s / 2)), "--concurrency", str(concurrency),
        "--max-recoveries", "1000", "--drain-s", "1", *(["--bus", bus] if bus else []),
    ]  # fmt: skip
    with open(log, "ab") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=out)


@dataclass
class Drill:
    """What the drill does, and what it saw.

    Chaos follows progress, not the clock (so that a fast machine cannot finish before
    it): a worker is SIGKILLed (and a new one started) as each fraction in ``kill_at``
    of the runs has ended, and also every ``kill_every_s`` seconds if set; a worker is
    SIGSTOPped for 2.5 leases at ``stop_at``; the server restarts at ``restart_at``
    (``cluster``), and the bus broker at ``broker_restart_at`` (``broker``, whose URL
    the workers' ``bus`` names; without one, they use the store's own bus): killed, and
    every second time started without its data, as a broker without persistence is.
    """

    url: str
    runs: int = 60
    workers: int = 3
    lease_s: float = 1.0
    concurrency: int = 4
    kill_at: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7)
    kill_every_s: float | None = None
    stop_at: float | None = 0.4
    restart_at: tuple[float, ...] = ()
    deadline_s: float = 90.0
    cluster: Cluster | None = None
    bus: str | None = None
    broker: Broker | None = None
    broker_restart_at: tuple[float, ...] = ()
    log: Path = field(default_factory=lambda: Path(tempfile.mkdtemp()) / "workers.log")
    seen: Counter[str] = field(default_factory=Counter)
    wake_ms: dict[str, list[float | None]] = field(default_factory=dict)
    """Probe latencies from submitted to ended (None: not driven by its deadline), by
    when: ``under_load`` (before any restart), ``after_restart``, ``quiet`` (the end)."""


async def prepare(url: str, runs: int, bus: str | None = None) -> list[str]:
    """Create the ledger and submit ``runs`` runs for any worker."""
    async with Runtime(url, wake=False, bus=bus) as runtime:
        store: Any = runtime.store
        async with store._pool.connection() as conn:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS ledger (run_id TEXT NOT NULL, action_id TEXT NOT "
                "NULL, amount INT NOT NULL, pid INT NOT NULL)"
            )
        ids = []
        for i in range(runs):
            handle = await runtime.submit(ledger_agent, f"charge batch {i}")
            ids.append(handle.run_id)
        return ids


async def _ended(store: Any) -> int | None:
    """How many runs have ended (None while the server cannot say: it is restarting)."""
    try:
        async with store._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT count(*) FROM runs WHERE agent = 'ledger' "
                "AND status IN ('completed', 'failed', 'dead')"
            )
            row = await cursor.fetchone()
            return int(row[0]) if row else 0
    except Exception:
        return None


async def probe(client: Runtime, d: Drill, when: str) -> None:
    """Submit a run of ``probe_agent`` and time it until it ended (read from the store,
    so that the probe does not lean on the bus it checks)."""
    latencies = d.wake_ms.setdefault(when, [])
    deadline = time.monotonic() + PROBE_DEADLINE_S
    while True:  # the store may be restarting too
        try:
            handle = await client.submit(probe_agent, "are you awake?")
            break
        except StoreError:
            if time.monotonic() >= deadline:
                latencies.append(None)
                return
            await asyncio.sleep(0.1)
    submitted = time.monotonic()
    while time.monotonic() < submitted + PROBE_DEADLINE_S:
        with contextlib.suppress(StoreError):
            if (await client.store.get_run(handle.run_id)).status in ENDED:
                latencies.append(round((time.monotonic() - submitted) * 1000, 1))
                return
        await asyncio.sleep(0.01)
    latencies.append(None)


async def run_drill(d: Drill) -> dict[str, Any]:
    """Run the drill; returns its report (see ``check``)."""
    ids = await prepare(d.url, d.runs, d.bus)
    rnd = random.Random(secrets.randbits(32))

    def worker(agent: str = "ledger_agent", poll_s: float | None = None) -> Popen:
        return start_worker(
            d.url, d.log, lease_s=d.lease_s, concurrency=d.concurrency, bus=d.bus,
            agent=agent, poll_s=poll_s,
        )  # fmt: skip

    def prober() -> Popen:
        return worker("probe_agent", PROBE_POLL_S)

    procs = [worker() for _ in range(d.workers)]
    probe_worker = prober()
    probes: list[asyncio.Task[None]] = []
    started = time.monotonic()
    kills, restarts = sorted(d.kill_at), sorted(d.restart_at)
    broker_restarts = sorted(d.broker_restart_at)
    next_kill = started + d.kill_every_s if d.kill_every_s else float("inf")
    stop_at = d.stop_at
    stopped: subprocess.Popen[bytes] | None = None
    cont_at = settle_until = 0.0
    under_load = False
    monitor: Any = open_store(d.url)
    await monitor.open()
    client = Runtime(d.url, wake=False, bus=d.bus)
    await client.__aenter__()
    try:
        while time.monotonic() - started < d.deadline_s:
            await asyncio.sleep(0.05)
            ended = await _ended(monitor)
            if ended is None:
                continue
            done, now = ended / len(ids), time.monotonic()
            if ended >= len(ids) and stopped is None and now >= settle_until:
                break  # (a worker stopped and let go again has had a lease to try its luck)
            for i, proc in enumerate(procs):  # as systemd would: a worker that exits is restarted
                if proc.poll() is not None:
                    d.seen["worker_exits"] += 1
                    procs[i] = worker()
            if probe_worker.poll() is not None:
                d.seen["worker_exits"] += 1
                probe_worker = prober()
            if (kills and done >= kills[0]) or now >= next_kill:
                kills = kills[1:] if kills and done >= kills[0] else kills
                victim = rnd.randrange(len(procs))
                procs[victim].send_signal(signal.SIGKILL)
                procs[victim].wait()
                d.seen["killed"] += 1
                procs[victim] = worker()
                next_kill = now + d.kill_every_s if d.kill_every_s else next_kill
            if restarts and d.cluster is not None and done >= restarts[0]:
                restarts.pop(0)
                await asyncio.to_thread(d.cluster.restart)
                d.seen["pg_restarts"] += 1
                probes.append(asyncio.create_task(probe(client, d, "after_restart")))
            if broker_restarts and d.broker is not None and done >= broker_restarts[0]:
                broker_restarts.pop(0)
                empty = d.seen["broker_restarts"] % 2 == 1
                await asyncio.to_thread(d.broker.restart, wipe=empty)
                d.seen["broker_restarts"] += 1
                d.seen["broker_restarts_empty"] += empty
                probes.append(asyncio.create_task(probe(client, d, "after_restart")))
            if not under_load and done > 0:  # the workers are up and busy (this probe
                under_load = True  # comes after the first restart when runs ended faster)
                probes.append(asyncio.create_task(probe(client, d, "under_load")))
            if stop_at is not None and done >= stop_at:
                stop_at = None
                stopped = procs[rnd.randrange(len(procs))]
                stopped.send_signal(signal.SIGSTOP)
                cont_at = now + d.lease_s * 2.5
            if stopped is not None and now >= cont_at:
                stopped.send_signal(signal.SIGCONT)
                stopped = None
                settle_until = now + d.lease_s
                d.seen["stopped_past_lease"] += 1
        probes.append(asyncio.create_task(probe(client, d, "quiet")))  # only its own hint
        await asyncio.gather(*probes)
    finally:
        for task in probes:
            task.cancel()
        await asyncio.gather(*probes, return_exceptions=True)
        await client.__aexit__(None, None, None)
        await monitor.close()
        procs.append(probe_worker)
        for proc in procs:
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    report = await check(d.url, ids, d.lease_s)
    report.update(d.seen)
    latencies = [ms for when in d.wake_ms.values() for ms in when]
    report["probes"], report["wake_ms"] = len(latencies), d.wake_ms
    report["probes_woken"] = sum(ms is not None for ms in latencies)
    report["probe_poll_s"] = PROBE_POLL_S
    # an exception nothing handled (in a worker's task, a client library's callback)
    report["worker_tracebacks"] = d.log.read_text(errors="replace").count("Traceback")
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


async def check(url: str, ids: list[str], lease_s: float) -> dict[str, Any]:
    """The invariants, counted: each must be 0 (``ended`` must be every run)."""
    async with Runtime(url, wake=False) as runtime:
        store: Any = runtime.store
        statuses: Counter[str] = Counter()
        gaps = stranded = 0
        now = time.time()
        for run_id in ids:
            info = await store.get_run(run_id)
            statuses[info.status] += 1
            seqs = [r.seq for r in await store.read(run_id)]
            gaps += seqs != list(range(1, info.last_seq + 1))
            stranded += (
                info.status == "running"
                and info.lease_owner is not None
                and (info.lease_expires_at or 0) < now - lease_s
            )
        async with store._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT count(*) FROM (SELECT action_id FROM ledger GROUP BY action_id "
                "HAVING count(*) > 1) AS twice"
            )
            row = await cursor.fetchone()
            duplicated = row[0] if row else -1
            cursor = await conn.execute("SELECT count(*) FROM ledger")
            row = await cursor.fetchone()
            ledger_rows = row[0] if row else -1
        known = {info.run_id for info in await store.list_runs(limit=len(ids) + 100)}
    return {
        "runs": len(ids),
        "ended": statuses["completed"] + statuses["failed"] + statuses["dead"],
        "statuses": dict(statuses),
        "lost": len(set(ids) - known),
        "duplicated_ledger_rows": duplicated,
        "ledger_rows": ledger_rows,
        "stranded": stranded,
        "logs_with_gaps": gaps,
    }
