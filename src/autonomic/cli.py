"""The ``autonomic`` command: run agents and inspect, resume, fork and cancel their runs.

Errors are one readable line and a non-zero exit code; ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from autonomic.agent import Agent, load_agent
from autonomic.assistant import assistant
from autonomic.errors import AutonomicError, ConfigError, RunNotFound
from autonomic.events import event_to_dict
from autonomic.runtime import RunHandle, RunResult, Runtime
from autonomic.store import DEFAULT_STORE_URL, open_store
from autonomic.trace import cost_text, render_summary, render_trace, short

__all__ = ["main"]

Command = Callable[[argparse.Namespace, Runtime], Awaitable[int]]


def _print_json(value: Any) -> None:
    print(json.dumps(value, default=str))


async def _resolve_run_id(runtime: Runtime, run_id: str) -> str:
    """Accept a full run id or an unambiguous prefix of one."""
    try:
        await runtime.store.get_run(run_id)
        return run_id
    except RunNotFound:
        matches = await runtime.store.find_runs(run_id, limit=2) if len(run_id) >= 4 else []
        if len(matches) == 1:
            return matches[0].run_id
        if len(matches) > 1:
            raise ConfigError(
                f"run id prefix {run_id!r} is ambiguous: give more characters"
            ) from None
        raise


def _agent_from_args(args: argparse.Namespace) -> Agent:
    agent = load_agent(args.agent) if args.agent else assistant
    return dataclasses.replace(agent, model=args.model) if args.model else agent


async def _finish(handle: RunHandle, as_json: bool) -> int:
    result = await handle.wait(check=False)
    _print_result(result, as_json)
    return 0 if result.status == "completed" else 1


def _print_result(result: RunResult, as_json: bool) -> None:
    import msgspec

    if as_json:
        _print_json(msgspec.to_builtins(result))
        return
    if result.status == "completed":
        print(result.answer)
    else:
        print(f"run {result.status}: {result.error}", file=sys.stderr)
    print(
        f"run {result.run_id} · {result.status} · {result.model_calls} model call(s) · "
        f"{result.usage.total_tokens} tokens",
        file=sys.stderr,
    )


async def cmd_run(args: argparse.Namespace, runtime: Runtime) -> int:
    agent = _agent_from_args(args)
    handle = await runtime.start(agent, args.goal)
    print(f"run {handle.run_id} started", file=sys.stderr)
    return await _finish(handle, args.json)


async def cmd_list(args: argparse.Namespace, runtime: Runtime) -> int:
    runs = await runtime.list_runs(status=args.status, limit=args.limit)
    if args.json:
        import msgspec

        _print_json([msgspec.to_builtins(r) for r in runs])
        return 0
    if not runs:
        print('no runs yet: start one with  autonomic run --agent module:attr "goal"')
        return 0
    print(f"{'RUN':16}  {'STATUS':10}  {'AGENT':14}  {'EVENTS':>6}  GOAL")
    for r in runs:
        agent, goal = short(r.agent, 14), short(r.goal, 50)
        print(f"{r.run_id:16}  {r.status:10}  {agent:14}  {r.last_seq:>6}  {goal}")
    return 0


async def cmd_show(args: argparse.Namespace, runtime: Runtime) -> int:
    run_id = await _resolve_run_id(runtime, args.run_id)
    info = await runtime.get_run(run_id)
    state = await runtime.state(run_id)
    if args.json:
        import msgspec

        _print_json(
            {
                **msgspec.to_builtins(info),
                "answer": state.answer,
                "error": state.error,
                "model_calls": state.model_calls,
                "actions": state.actions_requested,
                "usage": msgspec.to_builtins(state.usage),
                "cost": state.cost,
                "unpriced_calls": state.unpriced_calls,
            }
        )
    else:
        print(render_summary(info, state))
    return 0


async def cmd_events(args: argparse.Namespace, runtime: Runtime) -> int:
    run_id = await _resolve_run_id(runtime, args.run_id)
    async for stored in runtime.events(run_id, args.after, follow=args.follow):
        if args.json:
            _print_json({"seq": stored.seq, "ts": stored.ts, **event_to_dict(stored.event)})
        else:
            body = event_to_dict(stored.event)
            kind = body.pop("type")
            print(f"{stored.seq:>5}  {kind:16} {short(json.dumps(body, default=str), 120)}")
    return 0


async def cmd_trace(args: argparse.Namespace, runtime: Runtime) -> int:
    run_id = await _resolve_run_id(runtime, args.run_id)
    events = [e async for e in runtime.events(run_id, follow=False)]
    print(render_trace(events))
    state = await runtime.state(run_id)
    print(
        f"total: {state.model_calls} model call(s), {state.usage.input_tokens} in / "
        f"{state.usage.output_tokens} out tokens, {cost_text(state)}, "
        f"{state.active_seconds(state.last_ts):.3f}s"
    )
    return 0


async def cmd_resume(args: argparse.Namespace, runtime: Runtime) -> int:
    run_id = await _resolve_run_id(runtime, args.run_id)
    agent = load_agent(args.agent) if args.agent else None
    handle = await runtime.resume(run_id, agent=agent, model=args.model)
    print(f"run {run_id} resumed", file=sys.stderr)
    return await _finish(handle, args.json)


async def cmd_fork(args: argparse.Namespace, runtime: Runtime) -> int:
    run_id = await _resolve_run_id(runtime, args.run_id)
    agent = load_agent(args.agent) if args.agent else None
    handle = await runtime.fork(run_id, args.at, agent=agent, model=args.model)
    print(f"run {handle.run_id} forked from {run_id} at event {args.at}", file=sys.stderr)
    return await _finish(handle, args.json)


async def cmd_cancel(args: argparse.Namespace, runtime: Runtime) -> int:
    run_id = await _resolve_run_id(runtime, args.run_id)
    await runtime.cancel(run_id, by=args.by)
    print(f"run {run_id} cancelled")
    return 0


async def cmd_replay(args: argparse.Namespace, runtime: Runtime) -> int:
    run_id = await _resolve_run_id(runtime, args.run_id)
    agent = load_agent(args.agent) if args.agent else None
    state = await runtime.replay(run_id, agent=agent)
    print(
        f"replayed {state.seq} events of run {run_id}: every step matched the log "
        f"(status {state.status}; no model or tool was called)"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autonomic",
        description="Durable runs for autonomous LLM agents.",
    )
    parser.add_argument(
        "--store",
        default=os.environ.get("AUTONOMIC_STORE", DEFAULT_STORE_URL),
        help="store URL (default: $AUTONOMIC_STORE or %(default)s)",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run an agent towards a goal and print its answer")
    run.add_argument("goal", help="what the agent should do")
    run.add_argument("--agent", help="the agent to run, as module:attr or file.py:attr")
    run.add_argument(
        "--model",
        default=os.environ.get("AUTONOMIC_MODEL"),
        help="model string, e.g. openai:gpt-4o-mini (default: $AUTONOMIC_MODEL)",
    )
    run.add_argument("--json", action="store_true", help="print the result as JSON")
    run.set_defaults(handler=cmd_run)

    runs = commands.add_parser("runs", help="inspect and control runs")
    sub = runs.add_subparsers(dest="runs_command", required=True, metavar="COMMAND")

    listing = sub.add_parser("list", help="list recent runs")
    listing.add_argument("--status", help="only runs with this status")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_list)

    def with_run(name: str, help_text: str, handler: Command) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("run_id", help="run id (or an unambiguous prefix)")
        p.set_defaults(handler=handler)
        return p

    with_run("show", "status, usage and answer of a run", cmd_show).add_argument(
        "--json", action="store_true"
    )
    events = with_run("events", "the event log of a run", cmd_events)
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    events.add_argument("--after", type=int, default=0, help="only events after this seq")
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    with_run("trace", "rationale → action → observation tree with timings", cmd_trace)
    replay = with_run("replay", "re-decide every step from the log, calling nothing", cmd_replay)
    replay.add_argument("--agent", help="module:attr of the agent, if not importable by its path")
    resume = with_run("resume", "continue an unfinished run (e.g. after a crash)", cmd_resume)
    fork = with_run("fork", "start a new run from event SEQ of this one", cmd_fork)
    fork.add_argument("--at", type=int, required=True, metavar="SEQ", help="last shared event")
    for p in (resume, fork):
        p.add_argument("--agent", help="module:attr of the agent, if not importable by its path")
        p.add_argument("--model", help="go on with this model instead of the agent's own")
        p.add_argument("--json", action="store_true")
    cancel = with_run("cancel", "cancel a run", cmd_cancel)
    cancel.add_argument("--by", default="cli", help="who cancels (recorded in the log)")
    return parser


async def _main(args: argparse.Namespace) -> int:
    store = open_store(args.store, create=args.command == "run")
    async with Runtime(store) as runtime:
        code: int = await args.handler(args, runtime)
        return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "goal", None) is not None and not args.goal.strip():
        parser.error("the goal is empty: say what the agent should do")
    try:
        return asyncio.run(_main(args))
    except AutonomicError as e:
        if args.debug:
            raise
        print(f"autonomic: error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 1
    except BrokenPipeError:
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(
            "autonomic: interrupted; unfinished runs can be resumed with "
            "'autonomic runs resume RUN_ID'",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
