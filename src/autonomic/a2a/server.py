"""The A2A endpoint: each served agent as an A2A agent, its tasks being runs.

``a2a_router(runtime)`` is a FastAPI router with, per agent the runtime serves, the card
at ``/a2a/{agent}/.well-known/agent-card.json`` and JSON-RPC at ``POST /a2a/{agent}``
(and, for the default agent, the card at ``/.well-known/agent-card.json``). Methods, in
both dialects: ``SendMessage``/``message/send`` (blocking until the run ends or waits
for input, or not, as the client asks), ``SendStreamingMessage``/``message/stream`` and
``SubscribeToTask``/``tasks/resubscribe`` (SSE, each event's id its seq in the run's log,
so ``Last-Event-ID`` resumes with nothing lost or doubled), ``GetTask``/``tasks/get``,
``CancelTask``/``tasks/cancel``. A message to a task that waits for input is delivered
to its run as a signal. Needs ``autonomic[server]`` (FastAPI).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from autonomic.a2a import protocol as p
from autonomic.a2a.protocol import RpcError
from autonomic.agent import Agent
from autonomic.errors import AutonomicError, ConfigError, RunNotFound
from autonomic.loader import load_state, read_events
from autonomic.state import TERMINAL, RunState

try:
    from fastapi import APIRouter, HTTPException, Request
    from fastapi.responses import JSONResponse, Response, StreamingResponse
except ImportError:
    raise ConfigError('the A2A endpoint needs FastAPI: pip install "autonomic[server]"') from None

if TYPE_CHECKING:
    from autonomic.runtime import Runtime

__all__ = ["Access", "a2a_router"]

Access = Callable[[Request, str], Awaitable[str | None]]
"""Checks a request may use ``scope`` (raising an HTTPException if not) and returns the
caller's tenant (None: no tenant). The default lets everyone in, with no tenant."""

INTERNAL_ERROR = -32603
MAX_BODY = 1_000_000
MAX_TEXT = 100_000
_V1 = {
    "SendMessage": "send",
    "SendStreamingMessage": "stream",
    "GetTask": "get",
    "CancelTask": "cancel",
    "SubscribeToTask": "subscribe",
    "ListTasks": "list_tasks",
}
_V03 = {
    "message/send": "send",
    "message/stream": "stream",
    "tasks/get": "get",
    "tasks/cancel": "cancel",
    "tasks/resubscribe": "subscribe",
}
_SCOPES = {"send": "runs:write", "stream": "runs:write", "cancel": "runs:write"}


async def _open_access(request: Request, scope: str) -> str | None:
    return None


def a2a_router(
    runtime: Runtime,
    *,
    access: Access | None = None,
    default_agent: str | None = None,
    blocking_timeout_s: float = 60.0,
    bearer: bool = False,
) -> APIRouter:
    """The A2A routes for every agent ``runtime`` serves (looked up at each request, so
    agents registered later are served too). ``access`` guards the JSON-RPC calls (the
    cards stay public, as discovery needs); ``bearer`` says so in the cards."""
    check = access or _open_access
    router = APIRouter(tags=["a2a"])

    def agent_named(name: str) -> Agent:
        agent = runtime.registry.get(name)
        if agent is None:
            raise HTTPException(404, f"no agent named {name!r} is served here")
        return agent

    def card(request: Request, agent: Agent) -> dict[str, Any]:
        url = str(request.base_url).rstrip("/") + f"/a2a/{agent.name}"
        return p.agent_card(agent, url, bearer=bearer)

    @router.get("/.well-known/agent-card.json", summary="A2A agent card of the default agent")
    async def default_card(request: Request) -> dict[str, Any]:
        names = sorted(runtime.registry.names())
        name = default_agent or (names[0] if names else None)
        if name is None:
            raise HTTPException(404, "no agent is served here")
        return card(request, agent_named(name))

    @router.get("/a2a/{agent}/.well-known/agent-card.json", summary="A2A agent card")
    async def agent_card(agent: str, request: Request) -> dict[str, Any]:
        return card(request, agent_named(agent))

    @router.post(
        "/a2a/{agent}", summary="A2A JSON-RPC (v1.0 and v0.3 methods)", response_model=None
    )
    async def rpc(agent: str, request: Request) -> Response:
        served = agent_named(agent)
        rpc_id: Any = None
        try:
            raw = await request.body()
            if len(raw) > MAX_BODY:
                raise RpcError(p.INVALID_REQUEST, f"the request is over {MAX_BODY} bytes")
            try:
                body = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                raise RpcError(p.PARSE_ERROR, "the request body is not JSON") from None
            if not isinstance(body, dict) or body.get("jsonrpc") != "2.0":
                raise RpcError(p.INVALID_REQUEST, "send a JSON-RPC 2.0 request object")
            rpc_id = body.get("id")
            method = body.get("method")
            params = body.get("params", {})
            if not isinstance(method, str):
                raise RpcError(p.INVALID_REQUEST, "the request has no method")
            version = p.V1 if method in _V1 else p.V03
            op = _V1.get(method) or _V03.get(method)
            if op is None:
                raise RpcError(p.METHOD_NOT_FOUND, f"method {method!r} is not served here")
            if not isinstance(params, dict):
                raise RpcError(p.INVALID_PARAMS, "params must be an object")
            tenant = await check(request, _SCOPES.get(op, "runs:read"))
            handler = _Handler(runtime, served, tenant, version, blocking_timeout_s)
            if op in ("stream", "subscribe"):
                after = _last_event_id(request)
                updates = (
                    await handler.stream(params)
                    if op == "stream"
                    else await handler.subscribe(params, after)
                )
                return StreamingResponse(
                    _sse(rpc_id, updates),
                    media_type="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                )
            result = await getattr(handler, op)(params)
            return JSONResponse({"jsonrpc": "2.0", "id": rpc_id, "result": result})
        except (RpcError, AutonomicError) as e:
            error = _error(e)
            return JSONResponse({"jsonrpc": "2.0", "id": rpc_id, "error": error})

    return router


_RUN_STATUS = {
    "TASK_STATE_SUBMITTED": "pending",
    "TASK_STATE_WORKING": "running",
    "TASK_STATE_INPUT_REQUIRED": "waiting",
    "TASK_STATE_COMPLETED": "completed",
    "TASK_STATE_FAILED": "failed",
    "TASK_STATE_CANCELED": "cancelled",
}


def _cursor(token: Any) -> tuple[float, str] | None:
    if not token:
        return None
    created, _, run_id = str(token).partition("/")
    try:
        return float(created), run_id
    except ValueError:
        raise RpcError(p.INVALID_PARAMS, "pageToken is not one this server gave") from None


def _last_event_id(request: Request) -> int:
    text = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
    try:
        value = int(text)
    except ValueError:
        raise RpcError(p.INVALID_REQUEST, f"Last-Event-ID {text!r} is not an event seq") from None
    if value < 0:
        raise RpcError(p.INVALID_REQUEST, "Last-Event-ID must not be negative")
    return value


async def _sse(
    rpc_id: Any, updates: AsyncIterator[tuple[int, dict[str, Any]]]
) -> AsyncIterator[bytes]:
    try:
        async for seq, result in updates:
            data = json.dumps({"jsonrpc": "2.0", "id": rpc_id, "result": result})
            yield f"id: {seq}\ndata: {data}\n\n".encode()
    except (RpcError, AutonomicError) as e:
        data = json.dumps({"jsonrpc": "2.0", "id": rpc_id, "error": _error(e)})
        yield f"event: error\ndata: {data}\n\n".encode()


def _error(e: Exception) -> dict[str, Any]:
    """A JSON-RPC error object: ours as raised; the runtime's refusals (a run that ended
    meanwhile, say) as invalid params, anything else it raised as an internal error."""
    if isinstance(e, RpcError):
        return {"code": e.code, "message": e.message}
    code = p.INVALID_PARAMS if isinstance(e, ConfigError) else INTERNAL_ERROR
    return {"code": code, "message": str(e)}


class _Handler:
    """One request's work, for one agent, tenant and dialect."""

    def __init__(
        self, runtime: Runtime, agent: Agent, tenant: str | None, version: str, timeout_s: float
    ) -> None:
        self.runtime, self.agent, self.tenant = runtime, agent, tenant
        self.version, self.timeout_s = version, timeout_s

    async def _state(self, run_id: Any) -> RunState:
        if not isinstance(run_id, str) or not run_id:
            raise RpcError(p.INVALID_PARAMS, "params.id must be the task id")
        try:
            info = await self.runtime.store.get_run(run_id)
        except RunNotFound:
            raise RpcError(p.TASK_NOT_FOUND, f"task {run_id} was not found") from None
        if info.agent != self.agent.name or info.tenant != self.tenant:
            raise RpcError(p.TASK_NOT_FOUND, f"task {run_id} was not found")
        return await self.runtime.state(run_id)

    async def _start(self, params: dict[str, Any]) -> tuple[RunState, bool]:
        """The run the message starts, or the waiting run it answers; True if it answered
        one (that run still reads as waiting until it wakes, which must not end a wait)."""
        message = params.get("message")
        text = p.message_text(message, limit=MAX_TEXT)
        assert isinstance(message, dict)
        task_id = message.get("taskId")
        if task_id:
            state = await self._state(task_id)
            if state.status in TERMINAL:
                raise RpcError(
                    p.UNSUPPORTED, f"task {task_id} is {state.status}: start a new task instead"
                )
            await self._answer(state, text)
            return await self.runtime.state(state.run_id), True
        message_id = message.get("messageId")
        if not isinstance(message_id, str) or not message_id:
            raise RpcError(p.INVALID_PARAMS, "the message needs a messageId")
        run_id = p.run_id_for(message_id, self.agent.name, self.tenant)
        try:
            await self.runtime.submit(self.agent, text, run_id=run_id, tenant=self.tenant)
        except ConfigError as e:
            try:  # a retry of the same message: that run already exists
                return await self._state(run_id), False
            except RpcError:
                raise RpcError(p.INVALID_PARAMS, str(e)) from None
        return await self._state(run_id), False

    async def _answer(self, state: RunState, text: str) -> None:
        waits = state.waiting.waiting_on if state.waiting else ()
        signals = [k.removeprefix("signal:") for k in waits if k.startswith("signal:")]
        if not signals:
            why = state.waiting.reason if state.waiting else state.status
            raise RpcError(
                p.UNSUPPORTED,
                f"task {state.run_id} does not wait for a message (it is {why}); "
                "an approval is given with 'autonomic approve' or the approvals API",
            )
        await self.runtime.signal(state.run_id, signals[0], {"text": text})

    async def send(self, params: dict[str, Any]) -> dict[str, Any]:
        state, answered = await self._start(params)
        config = params.get("configuration") or {}
        if not isinstance(config, dict):
            raise RpcError(p.INVALID_PARAMS, "params.configuration must be an object")
        blocking = not config.get("returnImmediately", False) and config.get("blocking", True)
        if blocking:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.timeout_s):
                    await self._settled(state.run_id, answered)
            state = await self.runtime.state(state.run_id)
        body = p.task(state, self.version)
        return p.wrap("task", body, self.version)

    async def _settled(self, run_id: str, answered: bool) -> None:
        """Until the run ends or waits for input (not for a timer or its children)."""
        state = await load_state(self.runtime.store, run_id)
        if _done(state) and not answered:
            return
        async for stored in self.runtime.events(run_id, state.seq):
            state.apply(stored.event, stored.seq, stored.ts)
            if _done(state):
                return

    async def list_tasks(self, params: dict[str, Any]) -> dict[str, Any]:
        """The agent's tasks of the caller's tenant, newest first, a page at a time."""
        size = params.get("pageSize") or 50
        if not isinstance(size, int) or not 1 <= size <= 100:
            raise RpcError(p.INVALID_PARAMS, "pageSize must be 1 to 100")
        status = params.get("status")
        if status is not None and status not in _RUN_STATUS:
            raise RpcError(p.INVALID_PARAMS, f"status must be one of {', '.join(_RUN_STATUS)}")
        if params.get("contextId"):  # a context is one run
            try:
                found = [await self._state(params["contextId"])]
            except RpcError:
                found = []
            return {"tasks": [p.task(s, self.version) for s in found], "pageSize": size}
        runs = await self.runtime.store.list_runs(
            status=_RUN_STATUS.get(status) if status else None,
            tenant=self.tenant,
            agent=self.agent.name,
            before=_cursor(params.get("pageToken")),
            limit=size + 1,
        )
        if self.tenant is None:  # no tenant: only runs without one
            runs = [r for r in runs if r.tenant is None]
        page = runs[:size]
        tasks = []
        for info in page:
            task = p.task(await load_state(self.runtime.store, info.run_id), self.version)
            if not params.get("includeArtifacts"):
                task.pop("artifacts", None)
            tasks.append(task)
        result: dict[str, Any] = {"tasks": tasks, "pageSize": size}
        if len(runs) > size:
            last = page[-1]
            result["nextPageToken"] = f"{last.created_at!r}/{last.run_id}"
        return result

    async def get(self, params: dict[str, Any]) -> dict[str, Any]:
        state = await self._state(params.get("id"))
        body = p.task(state, self.version)
        length = params.get("historyLength")
        if isinstance(length, int) and length >= 0:
            body["history"] = body["history"][:length]
        return body

    async def cancel(self, params: dict[str, Any]) -> dict[str, Any]:
        state = await self._state(params.get("id"))
        if state.status in TERMINAL:
            raise RpcError(p.TASK_NOT_CANCELABLE, f"task {state.run_id} is already {state.status}")
        await self.runtime.cancel(state.run_id, by="a2a", wait_s=self.timeout_s)
        return p.task(await self.runtime.state(state.run_id), self.version)

    async def stream(self, params: dict[str, Any]) -> AsyncIterator[tuple[int, dict[str, Any]]]:
        state, answered = await self._start(params)
        return self._updates(state.run_id, 0, first=True, answered=answered)

    async def subscribe(
        self, params: dict[str, Any], after: int
    ) -> AsyncIterator[tuple[int, dict[str, Any]]]:
        state = await self._state(params.get("id"))
        if state.status in TERMINAL and after == 0:
            raise RpcError(p.UNSUPPORTED, f"task {state.run_id} is {state.status}: get it instead")
        return self._updates(state.run_id, after, first=not after)

    async def _updates(
        self, run_id: str, after: int, *, first: bool, answered: bool = False
    ) -> AsyncIterator[tuple[int, dict[str, Any]]]:
        """The task as it is now (when the client has nothing yet), or the state after
        event ``after`` (when it resumes), then an update per event that changes what a
        peer sees, until the run ends or waits for input."""
        if first:
            state = await load_state(self.runtime.store, run_id)
            yield state.seq, p.wrap("task", p.task(state, self.version), self.version)
            if _done(state) and not answered:
                return
        else:  # runtime.events ends at once if the run ended at ``after``
            state = await self._state_at(run_id, after)
        async for stored in self.runtime.events(run_id, state.seq):
            state.apply(stored.event, stored.seq, stored.ts)
            for update in p.update_of(stored, state, self.version):
                yield stored.seq, update
            if _done(state):
                return

    async def _state_at(self, run_id: str, seq: int) -> RunState:
        state = RunState(run_id=run_id)
        for stored in await read_events(self.runtime.store, run_id, 0, seq):
            state.apply(stored.event, stored.seq, stored.ts)
        return state


def _done(state: RunState) -> bool:
    """Where a stream (or a blocking send) stops: the run ended, or waits for input."""
    return state.status in TERMINAL or p.task_state(state) == "input-required"
