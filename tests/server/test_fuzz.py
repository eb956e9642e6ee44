"""Schemathesis fuzzes every operation of the published OpenAPI document against a real
server, with a key that has every scope: no server error, and every response (status,
content type, body) is one the document promises. Bounded: a few examples an operation."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import positive_data_acceptance

from service_harness import start_service

EXAMPLES = 12


@contextmanager
def served(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """A service on a loop of its own in a thread, for the synchronous fuzzer."""
    ready: list[tuple[str, str, str]] = []
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def main() -> None:
        service, task = await start_service(tmp_path)
        token = service.key(rate_per_s=10_000, burst=10_000)
        async with service.client(token) as c:  # one run that exists, to reach past 404s
            await c.post("/v1/runs", json={"agent": "payer", "goal": "pay"})
            run_id = (await c.get("/v1/runs")).json()["runs"][0]["run_id"]
        ready.append((service.url, token, run_id))
        await stop.wait()
        service.server.should_exit = True
        await task

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),))
    thread.start()
    try:
        while not ready:
            assert thread.is_alive(), "the service did not start"
            threading.Event().wait(0.02)
        yield ready[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


@pytest.mark.slow
def test_fuzzing_the_openapi_document_finds_no_server_error(tmp_path: Path) -> None:
    with served(tmp_path) as (url, token, run_id):
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        headers = {"Authorization": f"Bearer {token}"}
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 18
        for operation in operations:

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
                phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
            )
            @given(case=operation.as_strategy(), real=st.booleans())
            def fuzz(case: schemathesis.Case, real: bool) -> None:
                if real and case.path_parameters and "run_id" in case.path_parameters:
                    case.path_parameters = {**case.path_parameters, "run_id": run_id}
                if case.path.endswith("/wait"):
                    case.query = {**(case.query or {}), "timeout_s": 0.01}
                if case.path.endswith("/events"):  # a followed stream of a waiting run
                    case.query = {**(case.query or {}), "follow": "false"}  # never ends
                # a goal for an agent this server does not serve is valid JSON, yet refused:
                # what is checked is that the answer is a documented one, never a crash
                case.call_and_validate(
                    base_url=url,
                    headers=headers,
                    timeout=10,
                    excluded_checks=[positive_data_acceptance],
                )

            fuzz()
