"""``/v1/runs``: goals as asynchronous jobs, and everything a person or a program does
with a run: read it, follow its events, decide its approvals, signal, cancel, resume,
fork, replay and wait for it.

Every run belongs to the tenant of the key that created it; a key of another tenant is
told the run does not exist (404), for reads and writes alike.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse

from autonomic.errors import ConfigError, ReplayDivergence, RunNotFound
from autonomic.loader import read_events
from autonomic.runtime import Runtime
from autonomic.server.auth import Principal, require_scope
from autonomic.server.problems import PROBLEM_RESPONSES, Problem
from autonomic.server.schemas import (
    MAX_GOAL_CHARS,
    RUN_ID,
    ApprovalDecision,
    ApprovalDenial,
    ApprovalView,
    BudgetTopUp,
    ContextMessage,
    ContextView,
    EventsPage,
    ForkRequest,
    ReplayView,
    RevealedView,
    RunCreate,
    RunList,
    RunView,
    SignalRequest,
    TenantBudgetView,
    TenantTopUp,
)
from autonomic.server.sse import event_json, sse_stream
from autonomic.state import TERMINAL, RunState
from autonomic.store.base import RunInfo, TenantBudget

__all__ = ["get_runtime", "owned_run", "router"]

router = APIRouter(prefix="/v1", tags=["runs"], responses=PROBLEM_RESPONSES)

Reader = Annotated[Principal, Depends(require_scope("runs:read"))]
Writer = Annotated[Principal, Depends(require_scope("runs:write"))]
Approver = Annotated[Principal, Depends(require_scope("approvals:write"))]
Revealer = Annotated[Principal, Depends(require_scope("pii:reveal"))]
RunPath = Annotated[str, Path(pattern=RUN_ID, description="the run's id")]
Ref = Annotated[str, Path(pattern=RUN_ID, description="digest, action id or call id")]
_SETTLED = frozenset({"completed", "failed", "cancelled", "dead", "waiting"})


async def get_runtime(request: Request) -> Runtime:
    """The app's runtime (async: a plain function would cost a thread hop a request)."""
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def owned_run(runtime: Runtime, key: Principal, run_id: str) -> RunInfo:
    """The run's row, if it belongs to the key's tenant; 404 otherwise (even if it exists)."""
    try:
        info = await runtime.get_run(run_id)
    except RunNotFound:
        info = None
    if info is None or info.tenant != key.tenant:
        raise Problem(404, "Not Found", f"no run {run_id!r} (for tenant {key.tenant!r})")
    return info


def _view(info: RunInfo, state: RunState | None = None) -> RunView:
    fields: dict[str, Any] = {
        "run_id": info.run_id,
        "agent": info.agent,
        "goal": info.goal,
        "status": info.status,
        "tenant": info.tenant,
        "created_at": info.created_at,
        "updated_at": info.updated_at,
        "events": info.last_seq,
        "parent_run_id": info.parent_run_id,
        "forked_from": info.forked_from,
        "forked_at": info.forked_at,
        "waiting_for": info.wait.reason if info.wait and info.status == "waiting" else None,
    }
    if state is not None:
        fields |= {
            "goal": state.goal or info.goal,
            "answer": state.answer,
            "error": state.error,
            "usage": {
                "input_tokens": state.usage.input_tokens,
                "output_tokens": state.usage.output_tokens,
                "total_tokens": state.usage.total_tokens,
            },
            "cost": state.cost,
            "model_calls": state.model_calls,
            "pending_approvals": 0 if state.terminal else len(state.approvals),
        }
    return RunView(**fields)


async def _full_view(runtime: Runtime, run_id: str) -> RunView:
    info = await runtime.get_run(run_id)
    return _view(info, await runtime.state(run_id))


def _location(response: Response, run_id: str) -> None:
    response.headers["Location"] = f"/v1/runs/{run_id}"


# -- creating and listing -------------------------------------------------------------------


@router.post(
    "/runs",
    status_code=202,
    summary="Start a run of an agent towards a goal",
    responses={200: {"model": RunView, "description": "the run of this Idempotency-Key"}},
)
async def create_run(
    body: RunCreate,
    response: Response,
    runtime: RuntimeDep,
    key: Writer,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> RunView:
    """Accepted at once (202, with ``Location``); the run goes on in the background.
    The same ``Idempotency-Key`` (per tenant) gives the same run, created once."""
    if len(body.goal) > MAX_GOAL_CHARS:
        raise Problem(
            413,
            "Content Too Large",
            f"the goal is {len(body.goal)} characters; the limit is {MAX_GOAL_CHARS}",
        )
    if not body.goal.strip():
        raise Problem(400, "Bad Request", "the goal is empty: say what the agent should do")
    agent = runtime.registry.get(body.agent)
    if agent is None:
        served = ", ".join(sorted(runtime.registry.names())) or "none"
        raise Problem(
            400, "Bad Request", f"this server serves no agent {body.agent!r} (it serves: {served})"
        )
    run_id = body.run_id
    if idempotency_key is not None:
        if run_id is not None:
            raise Problem(400, "Bad Request", "give either run_id or Idempotency-Key, not both")
        digest = hashlib.sha256(f"{key.tenant}\0{idempotency_key}".encode()).hexdigest()
        run_id = f"idem-{digest[:32]}"
        existing = await _existing(runtime, key, run_id, body)
        if existing is not None:
            response.status_code = 200
            _location(response, run_id)
            return existing
    try:
        handle = await runtime.submit(agent, body.goal, run_id=run_id, tenant=key.tenant)
    except ConfigError as e:
        if run_id is None or "already exists" not in str(e):
            raise
        existing = await _existing(runtime, key, run_id, body) if idempotency_key else None
        if existing is None:
            raise Problem(409, "Conflict", f"a run with id {run_id!r} already exists") from None
        response.status_code = 200
        _location(response, run_id)
        return existing
    _location(response, handle.run_id)
    return _view(await runtime.get_run(handle.run_id))


async def _existing(
    runtime: Runtime, key: Principal, run_id: str, body: RunCreate
) -> RunView | None:
    try:
        info = await runtime.get_run(run_id)
    except RunNotFound:
        return None
    if info.agent != body.agent or info.goal != body.goal[:500]:
        raise Problem(
            409, "Conflict", "this Idempotency-Key was used for another request (agent or goal)"
        )
    return _view(info)


def _cursor(info: RunInfo) -> str:
    raw = json.dumps([info.created_at, info.run_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, run_id = json.loads(raw)
        if isinstance(created_at, int | float) and isinstance(run_id, str):
            return float(created_at), run_id
    except (binascii.Error, ValueError, TypeError):
        pass
    raise Problem(400, "Bad Request", "the cursor is not one this API gave; start without it")


@router.get("/runs", summary="List the tenant's runs, newest first")
async def list_runs(
    runtime: RuntimeDep,
    key: Reader,
    status: Annotated[str | None, Query(pattern=r"^[a-z]{1,20}$")] = None,
    agent: Annotated[str | None, Query(max_length=128)] = None,
    waiting: bool = False,
    since: Annotated[float | None, Query(ge=0, le=1e11, description="unix time")] = None,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    detail: Annotated[bool, Query(description="include usage, cost and answers")] = True,
) -> RunList:
    rows = await runtime.store.list_runs(
        status="waiting" if waiting else status,
        tenant=key.tenant,
        agent=agent,
        since=since,
        before=_decode_cursor(cursor) if cursor else None,
        limit=limit + 1,
    )
    page = rows[:limit]
    states: list[RunState | None] = [None] * len(page)
    if detail:
        states = list(await asyncio.gather(*(runtime.state(r.run_id) for r in page)))
    return RunList(
        runs=[_view(info, state) for info, state in zip(page, states, strict=True)],
        next_cursor=_cursor(page[-1]) if len(rows) > limit else None,
    )


@router.get("/runs/{run_id}", summary="A run: status, usage, cost, answer")
async def get_run(run_id: RunPath, runtime: RuntimeDep, key: Reader) -> RunView:
    await owned_run(runtime, key, run_id)
    return await _full_view(runtime, run_id)


@router.get(
    "/runs/{run_id}/revealed",
    summary="A run's goal and answer with its PII restored (for a key with pii:reveal)",
)
async def get_revealed(run_id: RunPath, runtime: RuntimeDep, key: Revealer) -> RevealedView:
    from autonomic.guards.pii import reveal  # the pii extra (cryptography)

    await owned_run(runtime, key, run_id)
    state = await runtime.state(run_id)
    goal, answer = await reveal(runtime.store, run_id, [state.goal, state.answer])
    return RevealedView(run_id=run_id, goal=goal, answer=answer)


# -- events -------------------------------------------------------------------------------------


@router.get(
    "/runs/{run_id}/events",
    summary="Follow a run's events (Server-Sent Events, resumable)",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "the events, as SSE"},
        204: {"description": "the run has ended and the client has every event"},
    },
)
async def stream_events(
    run_id: RunPath,
    request: Request,
    runtime: RuntimeDep,
    key: Reader,
    after: Annotated[int | None, Query(ge=0, le=2**62)] = None,
    follow: bool = True,
    last_event_id: Annotated[str | None, Header(max_length=30)] = None,
) -> Response:
    """Each SSE ``id`` is the event's seq. Resume with ``Last-Event-ID`` or ``?after=``:
    the stream starts right after it. It ends after the run's terminal event."""
    info = await owned_run(runtime, key, run_id)
    start = after or 0
    if last_event_id is not None and after is None:
        if not last_event_id.strip().isdigit():
            raise Problem(400, "Bad Request", "Last-Event-ID must be an event seq (a number)")
        start = int(last_event_id)
    if info.status in TERMINAL and start >= info.last_seq:
        return Response(status_code=204)  # an EventSource stops reconnecting on 204
    app = request.app
    return StreamingResponse(
        sse_stream(
            runtime,
            run_id,
            start,
            follow=follow,
            heartbeat_s=app.state.heartbeat_s,
            draining=app.state.draining,
        ),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/runs/{run_id}/log", summary="A page of a run's events, as JSON")
async def event_page(
    run_id: RunPath,
    runtime: RuntimeDep,
    key: Reader,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> EventsPage:
    """For lazy loading: events ``after+1`` .. ``after+limit``."""
    info = await owned_run(runtime, key, run_id)
    events = await read_events(runtime.store, run_id, after, limit=limit)
    return EventsPage(
        events=[event_json(e) for e in events],  # type: ignore[misc]
        last_seq=max(info.last_seq, events[-1].seq if events else 0),
    )


@router.get("/runs/{run_id}/context", summary="What the model was sent at a model call")
async def model_context(
    run_id: RunPath,
    runtime: RuntimeDep,
    key: Reader,
    at: Annotated[int, Query(ge=1, le=2**62, description="the seq of a ModelCalled event")],
) -> ContextView:
    """The agent's instructions and the conversation as it stood when event ``at`` (a
    model call) was recorded, folded from the log, with estimated token counts."""
    info = await owned_run(runtime, key, run_id)
    events = await read_events(runtime.store, run_id, 0, limit=at)
    if len(events) < at or type(events[-1].event).__name__ != "ModelCalled":
        raise Problem(400, "Bad Request", f"event {at} of run {run_id} is not a model call")
    state = RunState(run_id=run_id)
    for stored in events[:-1]:
        state.apply(stored.event, stored.seq, stored.ts)
    agent = runtime.registry.get(info.agent)
    shown: list[dict[str, Any]] = (
        [{"role": "system", "content": agent.instructions}] if agent else []
    )
    shown += [msgspec.to_builtins(m) for m in state.messages]
    messages = [
        ContextMessage(**m, estimated_tokens=_estimate_tokens(m.get("content", ""))) for m in shown
    ]
    return ContextView(
        at=at, messages=messages, estimated_tokens=sum(m.estimated_tokens for m in messages)
    )


def _estimate_tokens(text: str) -> int:
    return (len(text) + 3) // 4


# -- controlling ------------------------------------------------------------------------------


@router.post("/runs/{run_id}/cancel", summary="Cancel a run (and its children)")
async def cancel_run(run_id: RunPath, runtime: RuntimeDep, key: Writer) -> RunView:
    info = await owned_run(runtime, key, run_id)
    if info.status in TERMINAL:
        raise Problem(409, "Conflict", f"run {run_id} is already {info.status}")
    await runtime.cancel(run_id, by=key.identity, wait_s=5.0)
    return await _full_view(runtime, run_id)


@router.post("/runs/{run_id}/resume", status_code=202, summary="Drive an unfinished run on")
async def resume_run(run_id: RunPath, runtime: RuntimeDep, key: Writer) -> RunView:
    info = await owned_run(runtime, key, run_id)
    if info.status in TERMINAL:
        raise Problem(409, "Conflict", f"run {run_id} is {info.status}; fork it to go on")
    await runtime.resume(run_id)
    return await _full_view(runtime, run_id)


@router.post("/runs/{run_id}/fork", status_code=202, summary="Start a new run from an event")
async def fork_run(
    run_id: RunPath, body: ForkRequest, response: Response, runtime: RuntimeDep, key: Writer
) -> RunView:
    await owned_run(runtime, key, run_id)
    handle = await runtime.fork(run_id, body.at_seq, fork_id=body.run_id)
    _location(response, handle.run_id)
    return _view(await runtime.get_run(handle.run_id))


@router.post("/runs/{run_id}/replay", summary="Re-decide every step from the log, calling nothing")
async def replay_run(run_id: RunPath, runtime: RuntimeDep, key: Reader) -> ReplayView:
    await owned_run(runtime, key, run_id)
    try:
        state = await runtime.replay(run_id)
    except ReplayDivergence as e:
        return ReplayView(run_id=run_id, ok=False, detail=str(e))
    return ReplayView(run_id=run_id, ok=True, detail=f"{state.seq} events re-decided the same way")


@router.post("/runs/{run_id}/signals", status_code=202, summary="Send a named signal")
async def signal_run(
    run_id: RunPath, body: SignalRequest, runtime: RuntimeDep, key: Writer
) -> RunView:
    await owned_run(runtime, key, run_id)
    await runtime.signal(run_id, body.name, body.data)
    return _view(await runtime.get_run(run_id))


@router.post("/runs/{run_id}/budget", status_code=202, summary="Top up a run's budget")
async def top_up(
    run_id: RunPath,
    body: BudgetTopUp,
    runtime: RuntimeDep,
    key: Annotated[Principal, Depends(require_scope("budgets:write"))],
) -> RunView:
    """Raise the run's budget by these amounts; a run waiting for budget goes on."""
    info = await owned_run(runtime, key, run_id)
    if info.status in TERMINAL:
        raise Problem(409, "Conflict", f"run {run_id} is already {info.status}")
    await runtime.topup(run_id, **body.model_dump(exclude_none=True))
    return _view(await runtime.get_run(run_id))


def _tenant_view(tenant: str, budget: TenantBudget | None) -> TenantBudgetView:
    if budget is None:
        return TenantBudgetView(tenant=tenant, limits={}, spent={}, held={}, remaining={})
    held: dict[str, float] = {}
    for hold in budget.held.values():
        for name, amount in hold.items():
            held[name] = held.get(name, 0.0) + amount
    return TenantBudgetView(
        tenant=tenant,
        limits=budget.limits,
        spent=budget.spent,
        held=held,
        remaining=budget.remaining(),
    )


@router.get("/budget", summary="The budget of the key's tenant")
async def tenant_budget(runtime: RuntimeDep, key: Reader) -> TenantBudgetView:
    return _tenant_view(key.tenant, await runtime.tenant_budget(key.tenant))


@router.post("/budget", summary="Top up the budget of the key's tenant")
async def top_up_tenant(
    body: TenantTopUp,
    runtime: RuntimeDep,
    key: Annotated[Principal, Depends(require_scope("budgets:write"))],
) -> TenantBudgetView:
    """Raise the tenant's limits by these amounts; its new runs get shares of them."""
    if await runtime.tenant_budget(key.tenant) is None:
        raise Problem(
            409,
            "Conflict",
            f"tenant {key.tenant!r} has no budget to top up (an operator sets one with "
            "Runtime.set_tenant_budget)",
        )
    budget = await runtime.topup_tenant(key.tenant, cost_usd=body.cost_usd, tokens=body.tokens)
    return _tenant_view(key.tenant, budget)


@router.get(
    "/runs/{run_id}/wait",
    summary="Wait until the run ends or waits",
    responses={202: {"model": RunView, "description": "timed out: the run goes on"}},
)
async def wait_run(
    run_id: RunPath,
    response: Response,
    runtime: RuntimeDep,
    key: Reader,
    timeout_s: Annotated[float, Query(gt=0, le=300)] = 30.0,
) -> RunView:
    """200 once the run has ended or waits (for a person, a signal, a timer); 202 with
    its current view when ``timeout_s`` passed first."""
    await owned_run(runtime, key, run_id)
    try:
        async with asyncio.timeout(timeout_s):
            await runtime.handle(run_id).wait_until_waiting()
    except TimeoutError:
        response.status_code = 202
    return await _full_view(runtime, run_id)


# -- approvals ------------------------------------------------------------------------------


def _approval(pending: Any) -> ApprovalView:
    return ApprovalView(**msgspec.to_builtins(pending))


@router.get("/runs/{run_id}/approvals", summary="The run's tool calls waiting for a person")
async def list_approvals(run_id: RunPath, runtime: RuntimeDep, key: Reader) -> list[ApprovalView]:
    await owned_run(runtime, key, run_id)
    return [_approval(p) for p in await runtime.pending_approvals(run_id)]


@router.get("/approvals", summary="Every pending approval of the tenant's waiting runs")
async def approvals_inbox(
    runtime: RuntimeDep,
    key: Reader,
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
) -> list[ApprovalView]:
    waiting = await runtime.store.list_runs(status="waiting", tenant=key.tenant, limit=limit)
    pending = await asyncio.gather(*(runtime.pending_approvals(r.run_id) for r in waiting))
    return [_approval(p) for run in pending for p in run]


@router.post(
    "/runs/{run_id}/approvals/{ref}/approve",
    summary="Approve a pending call (by digest, action id or call id)",
)
async def approve_call(
    run_id: RunPath,
    ref: Ref,
    runtime: RuntimeDep,
    key: Approver,
    body: ApprovalDecision | None = None,
) -> ApprovalView:
    """Signed with this key's identity as the approver; bound to the call's digest."""
    await owned_run(runtime, key, run_id)
    args = body.args if body is not None else None
    return _approval(await runtime.approve(run_id, ref, approver=key.identity, args=args))


@router.post("/runs/{run_id}/approvals/{ref}/deny", summary="Deny a pending call")
async def deny_call(
    run_id: RunPath,
    ref: Ref,
    runtime: RuntimeDep,
    key: Approver,
    body: ApprovalDenial | None = None,
) -> ApprovalView:
    await owned_run(runtime, key, run_id)
    reason = body.reason if body is not None else ""
    return _approval(await runtime.deny(run_id, ref, approver=key.identity, reason=reason))
