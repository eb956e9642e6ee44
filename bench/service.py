"""The HTTP service under load: ``autonomic serve`` in its own process, on SQLite, with
scripted models, driven over loopback by an httpx load generator in this one.

(a) POST /v1/runs → first SSE event of that run: p50/p95 (target p95 < 50 ms);
(b) requests per second for create-run and get-run, ``--concurrency`` clients at once;
(c) 1,000 concurrent SSE streams on one process (of a run that waits): the server's RSS
    growth per stream, and the CPU it spends while they wait;
(d) with ``--dashboard``: a 10,000-event run opened in headless Chromium, from navigation
    to its first page of timeline on screen (target < 1 s).

Prints one JSON object per scenario.
Usage: PYTHONPATH=src python bench/service.py [--quick] [--dashboard]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from autonomic import Agent, ScriptedModel, tool, tool_call

HERE = Path(__file__).resolve()


@tool(requires_approval=True)
def pay(amount: int) -> str:
    "Pay an amount (a person approves it)."
    return f"paid {amount}"


@tool
def note(i: int) -> str:
    "Note a number."
    return f"noted {i}"


calc = Agent("calc", model=ScriptedModel(["5"]))
payer = Agent("payer", model=ScriptedModel([tool_call("pay", amount=3), "paid"]), tools=[pay])
chatty = Agent(  # 455 turns of 10 calls: 10,014 events
    "chatty",
    model=ScriptedModel(
        [[tool_call("note", i=10 * t + k) for k in range(10)] for t in range(455)] + ["done"]
    ),
    tools=[note],
    max_steps=500,
    max_wall_s=3600,
)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _ms(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(values) * 1000, 2),
        "p95_ms": round(_pct(values, 0.95) * 1000, 2),
        "max_ms": round(max(values) * 1000, 2),
    }


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Served:
    """``autonomic serve`` of this file's agents, in a process of its own."""

    def __init__(self, home: Path) -> None:
        self.home = home
        env = {**os.environ, "AUTONOMIC_HOME": str(home)}
        keys = str(home / "keys.json")
        self.token = subprocess.run(
            [
                sys.executable,
                "-m",
                "autonomic",
                "keys",
                "create",
                "--keys",
                keys,
                "--name",
                "bench",
                "--scopes",
                "runs:read,runs:write,approvals:write",
                "--rate",
                "1000000",
                "--burst",
                "1000000",
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        agents = [a for name in ("calc", "payer", "chatty") for a in ("--agents", f"{HERE}:{name}")]
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "autonomic",
                "--store",
                f"sqlite:///{home / 'runs.db'}",
                "serve",
                *agents,
                "--port",
                str(self.port),
                "--keys",
                keys,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        while True:
            try:
                httpx.get(self.url + "/openapi.json")
                break
            except httpx.TransportError:
                if self.process.poll() is not None:
                    raise RuntimeError("autonomic serve did not start") from None
                time.sleep(0.05)

    def client(self, connections: int = 100) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        return httpx.AsyncClient(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.token}"},
            limits=limits,
            timeout=60,
        )

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


async def first_event(served: Served, runs: int) -> dict[str, object]:
    took = []
    async with served.client() as c:
        for _ in range(runs):
            start = time.perf_counter()
            created = await c.post("/v1/runs", json={"agent": "calc", "goal": "2+3?"})
            async with c.stream("GET", created.headers["location"] + "/events") as stream:
                async for line in stream.aiter_lines():
                    if line.startswith("id:"):
                        took.append(time.perf_counter() - start)
                        break
    return {"scenario": "post_to_first_sse_event", "runs": runs, **_ms(took), "target_p95_ms": 50}


async def throughput(served: Served, requests: int, concurrency: int) -> dict[str, object]:
    async with served.client(concurrency) as c:
        run_id = (await c.post("/v1/runs", json={"agent": "calc", "goal": "1?"})).json()["run_id"]
        result: dict[str, object] = {"scenario": "requests_per_second", "concurrency": concurrency}
        for name, request in (
            ("create_run", lambda: c.post("/v1/runs", json={"agent": "calc", "goal": "2+3?"})),
            ("get_run", lambda: c.get(f"/v1/runs/{run_id}")),
        ):
            codes: list[int] = []

            async def worker(n: int, request=request, codes=codes) -> None:  # type: ignore[no-untyped-def]
                for _ in range(n):
                    codes.append((await request()).status_code)

            start = time.perf_counter()
            await asyncio.gather(*(worker(requests // concurrency) for _ in range(concurrency)))
            elapsed = time.perf_counter() - start
            result[f"{name}_per_s"] = round(len(codes) / elapsed, 1)
            result[f"{name}_errors"] = sum(1 for code in codes if code >= 400)
        await asyncio.sleep(2)  # let the created runs finish before the next scenario
    return result


async def streams(served: Served, count: int) -> dict[str, object]:
    async with served.client(count + 10) as c:
        run_id = (await c.post("/v1/runs", json={"agent": "payer", "goal": "pay"})).json()["run_id"]
        await c.get(f"/v1/runs/{run_id}/wait")
        await c.get(f"/v1/runs/{run_id}")
        before = _rss_kib(served.process.pid)
        opened = asyncio.Event()
        ready = 0
        release = asyncio.Event()

        async def follow() -> None:
            nonlocal ready
            async with c.stream("GET", f"/v1/runs/{run_id}/events") as stream:
                async for line in stream.aiter_lines():
                    if line.startswith("id:"):
                        ready += 1
                        if ready == count:
                            opened.set()
                        break
                await release.wait()

        tasks = [asyncio.create_task(follow()) for _ in range(count)]
        start = time.perf_counter()
        await asyncio.wait_for(opened.wait(), 120)
        open_s = time.perf_counter() - start
        await asyncio.sleep(1)
        after = _rss_kib(served.process.pid)
        cpu_before, wall_before = _cpu_s(served.process.pid), time.perf_counter()
        await asyncio.sleep(3)
        idle_cpu = (_cpu_s(served.process.pid) - cpu_before) / (time.perf_counter() - wall_before)
        release.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "scenario": "concurrent_sse_streams",
        "streams": count,
        "all_open_s": round(open_s, 2),
        "server_rss_before_mib": round(before / 1024, 1),
        "server_rss_after_mib": round(after / 1024, 1),
        "kib_per_stream": round((after - before) / count, 1),
        "server_cpu_percent_while_idle": round(idle_cpu * 100, 1),
    }


async def dashboard(served: Served) -> dict[str, object]:
    from playwright.async_api import async_playwright

    async with served.client() as c:
        run_id = (await c.post("/v1/runs", json={"agent": "chatty", "goal": "go"})).json()["run_id"]
        events = (await c.get(f"/v1/runs/{run_id}/wait", params={"timeout_s": 300})).json()[
            "events"
        ]
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=os.environ.get("AUTONOMIC_CHROMIUM", "/usr/bin/chromium"),
            args=["--no-sandbox"],
        )
        page = await browser.new_page()
        await page.goto(served.url + "/")
        await page.evaluate("key => sessionStorage.setItem('autonomic-key', key)", served.token)
        await page.reload()  # the page reads its key when it loads
        took = []
        for _ in range(5):
            await page.goto(served.url + "/#/runs")
            await page.wait_for_selector("#runs-body tr")
            start = time.perf_counter()
            await page.goto(f"{served.url}/#/runs/{run_id}")
            await page.wait_for_selector("#timeline li[data-seq='200']")
            await page.wait_for_selector("#run-summary dd")
            took.append(time.perf_counter() - start)
        await browser.close()
    return {"scenario": "dashboard_open_long_run", "events": events, **_ms(took), "target_ms": 1000}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    parser.add_argument("--dashboard", action="store_true", help="also time the dashboard")
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        served = Served(Path(home))
        try:
            print(
                json.dumps(
                    {
                        "machine": platform.machine(),
                        "cpus": os.cpu_count(),
                        "python": platform.python_version(),
                    }
                )
            )
            print(json.dumps(await first_event(served, 30 if args.quick else 200)))
            requests = 300 if args.quick else 2000
            print(json.dumps(await throughput(served, requests, args.concurrency)))
            print(json.dumps(await streams(served, 200 if args.quick else 1000)))
            if args.dashboard:
                print(json.dumps(await dashboard(served)))
        finally:
            served.stop()


if __name__ == "__main__":
    asyncio.run(main())
