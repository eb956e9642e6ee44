"""The loop that drives one run: strategy → guards → effect → events, until it ends.

Every event is folded into the in-memory state as it is recorded and reaches the store
in the next commit. Commits happen before any tool runs (the intent is journaled) and
after (the outcome is journaled), so a crash at any point leaves a log that says exactly
which effects may have happened.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from autonomic.agent import Agent
from autonomic.digest import RequestDigester
from autonomic.errors import AutonomicError
from autonomic.events import (
    ActionFailed,
    ActionRequested,
    CircuitChanged,
    Event,
    GuardTripped,
    ModelCalled,
    ModelResponded,
    NewEvent,
    Resumed,
    RunCancelled,
    RunCompleted,
    RunFailed,
    encode_event,
)
from autonomic.guards.base import Deny, Rewrite
from autonomic.models.base import Model
from autonomic.snapshot import SnapshotWriter
from autonomic.state import RunState
from autonomic.steps import Fail, Finish, ModelCall, Step, ToolCalls
from autonomic.store.base import Store
from autonomic.tools.executor import Outcome, execute_action, refusal
from autonomic.tools.secrets import SecretsProvider

__all__ = ["Driver"]

log = logging.getLogger("autonomic.runtime")


def unknown_outcome(tool: str, available: bool) -> str:
    why = "the tool is not idempotent" if available else "this agent no longer has that tool"
    return (
        f"outcome unknown: the process running {tool!r} stopped before it reported back, "
        f"and {why}, so it was not run again; check whether it took effect before retrying"
    )


class Driver:
    """Drives one run in this process while it holds the run's lease."""

    def __init__(
        self,
        *,
        store: Store,
        agent: Agent,
        model: Model,
        state: RunState,
        owner: str,
        snapshot_every: int,
        on_commit: Callable[[str], None],
        secrets: SecretsProvider,
    ) -> None:
        self.store, self.agent, self.model, self.state = store, agent, model, state
        self.owner = owner
        self.snapshot_every = snapshot_every
        self.on_commit = on_commit
        self.secrets = secrets
        self.view = agent.view()
        self.tools = agent.tool_map
        self.committed_seq = state.seq
        self.snapshot_seq = state.seq
        self.cancel_requested: str | None = None
        self._batch: list[NewEvent] = []
        self._snapshots = SnapshotWriter()
        self._digester = RequestDigester()

    # -- recording ----------------------------------------------------------------------

    def record(self, event: Event, *, observe: bool = True) -> None:
        """Fold ``event`` into the state and queue it for the next commit."""
        ts = time.time()
        state = self.state
        state.apply(event, state.seq + 1, ts)
        self._batch.append(encode_event(event, ts))
        if observe:
            for guard in self.agent.guards:
                for extra in guard.observe(state, event):
                    self.record(extra, observe=False)

    async def commit(self) -> None:
        if not self._batch:
            return
        batch, self._batch = self._batch, []
        self.committed_seq = await self.store.append(
            self.state.run_id, self.committed_seq, batch, status=self.state.status, owner=self.owner
        )
        self.on_commit(self.state.run_id)
        if self.state.seq - self.snapshot_seq >= self.snapshot_every:
            body, blobs = self._snapshots.encode(self.state)
            await self.store.put_snapshot(self.state.run_id, self.state.seq, body, blobs)
            self.snapshot_seq = self.state.seq

    # -- the loop -----------------------------------------------------------------------

    async def run(self, resumed_by: str | None = None) -> None:
        try:
            if resumed_by is not None:
                self.record(Resumed(by=self.owner, reason=resumed_by))
            await self._drive()
        except asyncio.CancelledError:
            if self.cancel_requested is None:
                raise
            await asyncio.shield(self._record_cancel(self.cancel_requested))

    async def _record_cancel(self, by: str) -> None:
        for action_id in list(self.state.pending):
            self.record(ActionFailed(action_id, "cancelled before it finished"))
        self.record(RunCancelled(by=by))
        await self.commit()

    async def _drive(self) -> None:
        state = self.state
        limit = f"wall-time limit of {self.agent.max_wall_s:g}s reached"
        remaining = self.agent.max_wall_s - state.active_seconds(time.time())
        timeout = asyncio.timeout(max(remaining, 0))
        try:
            async with timeout:
                if state.pending:
                    await self._recover_pending()
                while state.status == "running":
                    step = self._checked(self.agent.strategy.next_step(state, self.view))
                    if step is not None:
                        await self._perform(step)
        except TimeoutError:
            if not timeout.expired():
                raise
            self._fail_for_limit(limit)
        await self.commit()

    def _fail_for_limit(self, reason: str) -> None:
        for action_id in list(self.state.pending):
            self.record(ActionFailed(action_id, f"interrupted: {reason}"))
        self.record(RunFailed(reason))

    def _checked(self, step: Step) -> Step | None:
        """Pass the step through the limits and the guards; None when it was refused."""
        if isinstance(step, ModelCall) and self.state.model_calls >= self.agent.max_steps:
            self.record(
                RunFailed(
                    f"step limit reached: {self.agent.max_steps} model calls without a final answer"
                )
            )
            return None
        for guard in self.agent.guards:
            verdict = guard.check(self.state, step)
            if isinstance(verdict, Rewrite):
                step = verdict.step
            elif isinstance(verdict, Deny):
                self.record(GuardTripped(guard.name, verdict.reason))
                if isinstance(step, ToolCalls):
                    for call in step.calls:
                        request = self._request(call.id, call.name, call.arguments, step.rationale)
                        self.record(ActionFailed(request.action_id, f"denied: {verdict.reason}"))
                else:
                    self.record(RunFailed(f"{guard.name}: {verdict.reason}"))
                return None
        return step

    async def _perform(self, step: Step) -> None:
        if isinstance(step, ModelCall):
            await self._model_call(step)
        elif isinstance(step, ToolCalls):
            await self._tool_calls(step)
        elif isinstance(step, Finish):
            self.record(RunCompleted(step.answer))
        elif isinstance(step, Fail):
            self.record(RunFailed(step.reason))

    async def _model_call(self, step: ModelCall) -> None:
        await self.commit()
        request = step.request
        started = time.perf_counter()
        try:
            response = await self.model.complete(request)
        except AutonomicError as e:
            self.record(RunFailed(f"model {self.model.name!r} failed: {e}"))
            return
        except Exception as e:
            self.record(RunFailed(f"model {self.model.name!r} failed: {type(e).__name__}: {e}"))
            return
        latency = round((time.perf_counter() - started) * 1000, 3)
        meta = dict(response.meta)
        for change in meta.pop("breaker", ()):
            self.record(
                CircuitChanged(
                    target=f"model {change.get('endpoint', self.model.name)}",
                    from_state=str(change.get("from", "")),
                    to_state=str(change.get("to", "")),
                    reason=str(change.get("reason", "")),
                )
            )
        self.record(ModelCalled(request.purpose, self._digester.digest(request), self.model.name))
        self.record(
            ModelResponded(
                text=response.text,
                tool_calls=response.tool_calls,
                usage=response.usage,
                model=response.model or self.model.name,
                cost=response.cost,
                latency_ms=latency,
                meta=meta,
            )
        )

    def _request(
        self, call_id: str, name: str, args: dict[str, object], rationale: str
    ) -> ActionRequested:
        tool = self.tools.get(name)
        request = ActionRequested(
            action_id=f"{self.state.run_id}-{self.state.actions_requested + 1}",
            call_id=call_id,
            tool=name,
            args=dict(args),
            rationale=rationale,
            idempotent=bool(tool and tool.idempotent),
        )
        self.record(request)
        return request

    async def _tool_calls(self, step: ToolCalls) -> None:
        requests = [
            self._request(call.id, call.name, call.arguments, step.rationale) for call in step.calls
        ]
        refusals = {
            r.action_id: refusal(r, self.tools, call.error)
            for r, call in zip(requests, step.calls, strict=True)
        }
        runnable = [r for r in requests if refusals[r.action_id] is None]
        if runnable:
            await self.commit()
        outcomes = await self._execute(runnable, attempt=1)
        for request in requests:
            reason = refusals[request.action_id]
            self.record(
                outcomes[request.action_id]
                if reason is None
                else ActionFailed(request.action_id, reason)
            )
        await self.commit()

    async def _execute(self, requests: list[ActionRequested], attempt: int) -> dict[str, Outcome]:
        if len(requests) == 1:
            only = requests[0]
            return {only.action_id: await self._run_tool(only, attempt)}
        outcomes = await asyncio.gather(*(self._run_tool(r, attempt) for r in requests))
        return {r.action_id: o for r, o in zip(requests, outcomes, strict=True)}

    def _run_tool(self, request: ActionRequested, attempt: int) -> Awaitable[Outcome]:
        return execute_action(
            self.tools[request.tool],
            request,
            self.state.run_id,
            first_attempt=attempt,
            secrets=self.secrets,
            record=self.record,
        )

    async def _recover_pending(self) -> None:
        """Settle actions whose outcome the log does not know (their process died)."""
        rerun: list[ActionRequested] = []
        for request in list(self.state.pending.values()):
            tool = self.tools.get(request.tool)
            if tool is not None and (tool.idempotent or self.agent.on_unknown_outcome == "rerun"):
                rerun.append(request)
            else:
                reason = unknown_outcome(request.tool, tool is not None)
                log.warning("run %s: %s", self.state.run_id, reason)
                self.record(ActionFailed(request.action_id, reason))
        await self.commit()
        if rerun:
            for outcome in (await self._execute(rerun, attempt=2)).values():
                self.record(outcome)
            await self.commit()
