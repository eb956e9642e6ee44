"""The A2A endpoint served by a real uvicorn on loopback, driven by the official
``a2a-sdk`` client (v1.0 and its v0.3 compatibility transport) as the peer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from a2a.client import ClientConfig, create_client
from a2a.client.card_resolver import parse_agent_card
from a2a.client.errors import A2AClientError
from a2a.helpers.proto_helpers import get_artifact_text, new_text_message
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    Role,
    SendMessageRequest,
    StreamResponse,
    TaskState,
)
from a2a.utils.errors import TaskNotCancelableError, TaskNotFoundError
from fastapi import FastAPI

from autonomic import Agent, Runtime, ScriptedModel, tool, tool_call
from autonomic.a2a.client import a2a_tool
from autonomic.a2a.server import a2a_router
from autonomic.state import RunState
from autonomic.steps import Await, Finish, Signal, Step


@tool
def add(a: int, b: int) -> int:
    "Add two integers."
    return a + b


@tool
async def nap(seconds: float) -> str:
    "Sleep."
    await asyncio.sleep(seconds)
    return "rested"


class AsksForInput:
    """Waits for an "input" signal, then answers with what it got."""

    name = "asks-for-input"

    def next_step(self, state: RunState, agent: object) -> Step:
        got = state.signals.get("input")
        if got:
            return Finish(f"thanks for {got[-1]['text']}")
        return Await(Signal("input"), reason="the user's choice")


AGENTS = [
    Agent(
        name="calc",
        instructions="Adds numbers.\nMore detail.",
        model=ScriptedModel([tool_call("add", a=2, b=3), "The answer is 5"]),
        tools=[add],
    ),
    Agent(name="sleepy", model=ScriptedModel([tool_call("nap", seconds=60), "x"]), tools=[nap]),
    Agent(name="asker", model=ScriptedModel([]), strategy=AsksForInput()),
]


@dataclass
class Served:
    url: str
    runtime: Runtime


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    async with Runtime(f"sqlite:///{tmp_path / 'runs.db'}", agents=AGENTS) as runtime:
        app = FastAPI()
        app.include_router(a2a_router(runtime, default_agent="calc"))
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        for _ in range(1000):
            if server.started:
                break
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield Served(f"http://127.0.0.1:{port}", runtime)
        finally:
            server.should_exit = True
            await task


async def only(responses: AsyncIterator[StreamResponse]) -> StreamResponse:
    items = [r async for r in responses]
    assert len(items) == 1
    return items[0]


def message(text: str, task_id: str = "") -> SendMessageRequest:
    msg = new_text_message(text, role=Role.ROLE_USER)
    if task_id:
        msg.task_id = task_id
    return SendMessageRequest(message=msg)


async def test_blocking_send_returns_the_finished_task(served: Served) -> None:
    client = await create_client(served.url + "/a2a/calc", ClientConfig(streaming=False))
    try:
        responses = [r async for r in client.send_message(message("What is 2+3?"))]
        assert len(responses) == 1
        task = responses[0].task
        assert task.status.state == TaskState.TASK_STATE_COMPLETED
        assert get_artifact_text(task.artifacts[0]) == "The answer is 5"
        assert task.history[0].parts[0].text == "What is 2+3?"
        again = await client.get_task(GetTaskRequest(id=task.id))
        assert again.status.state == TaskState.TASK_STATE_COMPLETED and again.id == task.id
        state = await served.runtime.state(task.id)
        assert state.agent == "calc" and state.answer == "The answer is 5"
        with pytest.raises(TaskNotFoundError):
            await client.get_task(GetTaskRequest(id="no-such-task"))
        with pytest.raises(TaskNotCancelableError):
            await client.cancel_task(CancelTaskRequest(id=task.id))
    finally:
        await client.close()


async def test_streaming_send_gives_the_task_updates_and_the_answer(served: Served) -> None:
    client = await create_client(served.url + "/a2a/calc")
    try:
        updates = [r async for r in client.send_message(message("What is 2+3?"))]
    finally:
        await client.close()
    kinds = [u.WhichOneof("payload") for u in updates]
    assert kinds[0] == "task" and kinds[-2:] == ["artifact_update", "status_update"]
    states = [u.status_update.status.state for u in updates if u.HasField("status_update")]
    assert states == [TaskState.TASK_STATE_WORKING, TaskState.TASK_STATE_COMPLETED]
    assert get_artifact_text(updates[-2].artifact_update.artifact) == "The answer is 5"
    assert updates[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED


async def test_the_v03_dialect_through_the_sdk_compat_transport(served: Served) -> None:
    async with httpx.AsyncClient() as http:
        card_json = (await http.get(served.url + "/.well-known/agent-card.json")).json()
    assert card_json["name"] == "calc" and card_json["description"] == "Adds numbers."
    # a card naming only the v0.3 interface makes the SDK speak message/send, tasks/get...
    card_json["supportedInterfaces"] = [
        i for i in card_json["supportedInterfaces"] if i["protocolVersion"] == "0.3"
    ]
    card = parse_agent_card(card_json)
    for streaming in (False, True):
        client = await create_client(card, ClientConfig(streaming=streaming))
        try:
            updates = [r async for r in client.send_message(message("What is 2+3?"))]
            last = updates[-1]
            if streaming:
                assert last.status_update.status.state == TaskState.TASK_STATE_COMPLETED
                task_id = last.status_update.task_id
            else:
                assert last.task.status.state == TaskState.TASK_STATE_COMPLETED
                task_id = last.task.id
            task = await client.get_task(GetTaskRequest(id=task_id))
            assert get_artifact_text(task.artifacts[0]) == "The answer is 5"
        finally:
            await client.close()


async def test_input_required_is_a_waiting_run_and_a_reply_wakes_it(served: Served) -> None:
    client = await create_client(served.url + "/a2a/asker", ClientConfig(streaming=False))
    try:
        first = (await only(client.send_message(message("pick a colour")))).task
        assert first.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
        assert "the user's choice" in first.status.message.parts[0].text
        reply = await only(client.send_message(message("blue", task_id=first.id)))
        assert reply.task.id == first.id
        assert reply.task.status.state == TaskState.TASK_STATE_COMPLETED
        assert get_artifact_text(reply.task.artifacts[0]) == "thanks for blue"
    finally:
        await client.close()


async def test_cancel_a_working_task(served: Served) -> None:
    client = await create_client(served.url + "/a2a/sleepy", ClientConfig(streaming=False))
    try:
        request = message("nap")
        request.configuration.return_immediately = True
        task = (await only(client.send_message(request))).task
        assert task.status.state in (TaskState.TASK_STATE_SUBMITTED, TaskState.TASK_STATE_WORKING)
        for _ in range(500):  # until the tool runs
            if (await served.runtime.state(task.id)).actions_requested:
                break
            await asyncio.sleep(0.02)
        cancelled = await client.cancel_task(CancelTaskRequest(id=task.id))
        assert cancelled.status.state == TaskState.TASK_STATE_CANCELED
    finally:
        await client.close()


async def test_same_message_id_is_the_same_task_and_bad_input_is_refused(served: Served) -> None:
    body: dict[str, Any] = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "SendMessage",
        "params": {
            "message": {"messageId": "m-1", "role": "ROLE_USER", "parts": [{"text": "2+3?"}]}
        },
    }
    async with httpx.AsyncClient(base_url=served.url) as http:
        one = (await http.post("/a2a/calc", json=body)).json()["result"]["task"]
        two = (await http.post("/a2a/calc", json=body)).json()["result"]["task"]
        assert one["id"] == two["id"] and two["status"]["state"] == "TASK_STATE_COMPLETED"
        runs = await served.runtime.list_runs()
        assert len(runs) == 1
        errors = {}
        for name, payload in {
            "parse": b"{nope",
            "method": {"jsonrpc": "2.0", "id": 2, "method": "Nope", "params": {}},
            "empty": {**body, "params": {"message": {"messageId": "m-2", "parts": []}}},
            "config": {**body, "params": {**body["params"], "configuration": 5}},
        }.items():
            if isinstance(payload, bytes):
                reply = await http.post("/a2a/calc", content=payload)
            else:
                reply = await http.post("/a2a/calc", json=payload)
            assert reply.status_code == 200
            errors[name] = reply.json()["error"]
        assert errors["parse"]["code"] == -32700
        assert errors["method"]["code"] == -32601 and "Nope" in errors["method"]["message"]
        assert errors["empty"]["code"] == -32602 and "no parts" in errors["empty"]["message"]
        assert errors["config"]["code"] == -32602 and "configuration" in errors["config"]["message"]
        assert (await http.post("/a2a/nobody", json=body)).status_code == 404


async def test_resubscribe_resumes_after_last_event_id_with_nothing_doubled(served: Served) -> None:
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        send = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "message/stream",
            "params": {
                "message": {
                    "kind": "message",
                    "messageId": "m-s",
                    "role": "user",
                    "parts": [{"kind": "text", "text": "2+3?"}],
                }
            },
        }
        full = await sse(http, send)
        task_id = full[0][1]["result"]["id"]
        assert full[-1][1]["result"]["final"] is True
        ids = [seq for seq, _ in full]
        assert ids == sorted(ids)
        middle = ids[1]
        sub = {"jsonrpc": "2.0", "id": 2, "method": "tasks/resubscribe", "params": {"id": task_id}}
        rest = await sse(http, sub, headers={"Last-Event-ID": str(middle)})
        assert [e for e in full if e[0] > middle] == [
            (seq, {**data, "id": 1}) for seq, data in rest
        ]


async def sse(
    http: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str] | None = None
) -> list[tuple[int, dict[str, Any]]]:
    import json

    events: list[tuple[int, dict[str, Any]]] = []
    async with http.stream("POST", "/a2a/calc", json=body, headers=headers) as response:
        seq = 0
        async for line in response.aiter_lines():
            if line.startswith("id: "):
                seq = int(line[4:])
            elif line.startswith("data: "):
                events.append((seq, json.loads(line[6:])))
    return events


async def test_a_remote_a2a_agent_as_a_tool(served: Served, tmp_path: Path) -> None:
    ask = a2a_tool(served.url + "/a2a/calc", name="ask_calc", description="Ask the calculator.")
    caller = Agent(
        name="caller",
        model=ScriptedModel([tool_call("ask_calc", message="What is 2+3?"), "calc says 5"]),
        tools=[ask],
    )
    async with Runtime(f"sqlite:///{tmp_path / 'caller.db'}") as rt:
        run = await rt.start(caller, "ask the calculator")
        result = await run.wait()
        state = await run.state()
    assert result.answer == "calc says 5"
    observations = [m.content for m in state.messages if m.role == "tool"]
    assert observations == ["The answer is 5"]
    with pytest.raises(A2AClientError):
        bad = await create_client(served.url + "/a2a/nobody")
        await bad.close()


async def test_list_tasks_a_page_at_a_time(served: Served) -> None:
    client = await create_client(served.url + "/a2a/calc", ClientConfig(streaming=False))
    try:
        sent = [(await only(client.send_message(message(f"{i}+1?")))).task.id for i in range(3)]
        first = await client.list_tasks(ListTasksRequest(page_size=2))
        assert len(first.tasks) == 2 and first.next_page_token
        rest = await client.list_tasks(
            ListTasksRequest(page_size=2, page_token=first.next_page_token)
        )
        assert not rest.next_page_token
        listed = [t.id for t in [*first.tasks, *rest.tasks]]
        assert sorted(listed) == sorted(sent) and len(set(listed)) == 3
        done = await client.list_tasks(
            ListTasksRequest(status=TaskState.TASK_STATE_COMPLETED, include_artifacts=True)
        )
        assert len(done.tasks) == 3 and get_artifact_text(done.tasks[0].artifacts[0])
        none = await client.list_tasks(ListTasksRequest(status=TaskState.TASK_STATE_FAILED))
        assert not none.tasks
    finally:
        await client.close()
