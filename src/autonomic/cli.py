"""The ``autonomic`` command: run agents; inspect, approve, signal, resume, fork and cancel
their runs.

Errors are one readable line and a non-zero exit code; ``--debug`` shows tracebacks.
Exit codes: 0 done, 1 the run failed (or was cancelled, or died), 2 a usage error,
3 the run is waiting (for an approval, a signal, its children or a timer), 130
interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec

from autonomic._options import connection_options
from autonomic._text import clean_text
from autonomic.agent import Agent, load_agent
from autonomic.bus import DEFAULT_BUS_URL, open_bus
from autonomic.errors import AutonomicError, ConfigError, RunNotFound
from autonomic.events import event_to_dict
from autonomic.kpis import kpi_lines, run_kpis
from autonomic.runtime import RunHandle, RunResult, Runtime
from autonomic.server.commands import add_server_parsers
from autonomic.store import DEFAULT_STORE_URL, open_store
from autonomic.telemetry.cli import add_runs_parsers as add_telemetry_parsers
from autonomic.views import cost_text, render_summary, render_trace, short, status_text
from autonomic.worker import add_worker_parser

__all__ = ["build_parser", "main"]

Command = Callable[[argparse.Namespace, Runtime], Awaitable[int]]

EXIT_WAITING = 3
_MAX_INT = 2**62


def _count(minimum: int) -> Callable[[str], int]:
    """An argparse type for a whole number from ``minimum`` up to a sane maximum."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not minimum <= value <= _MAX_INT:
            raise argparse.ArgumentTypeError(f"{value} is out of range ({minimum} to 2**62)")
        return value

    return parse


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
    if args.agent is not None:
        agent = load_agent(args.agent)
    else:
        from autonomic.assistant import assistant

        agent = assistant
    return agent.with_model(args.model) if args.model else agent


_SETTLED = frozenset({"completed", "failed", "cancelled", "dead", "waiting"})
FOREGROUND_TIMER_S = 600.0
"""A run waiting for a timer due within this long is waited for in the foreground."""


async def _finish(handle: RunHandle, as_json: bool) -> int:
    """Follow a run until it ends, or waits for something this process cannot bring
    (a person, a signal, a distant timer); print the outcome."""
    runtime, run_id = handle.runtime, handle.run_id
    while True:
        result = await runtime._follow_until(run_id, _SETTLED)
        if result.status != "waiting" or not await _wake_here(runtime, run_id):
            break
    _print_result(result, as_json)
    if result.status == "completed":
        return 0
    return EXIT_WAITING if result.status == "waiting" else 1


async def _wake_here(runtime: Runtime, run_id: str) -> bool:
    """Wait while what the run waits for is on its way here (its children run in this
    process, or its timer is due soon), and drive it on when it is ready. False when
    nothing here will wake it."""
    while True:
        info = await runtime.get_run(run_id)
        if info.status != "waiting":
            return True
        now = time.time()
        if info.lease_owner is None and info.wake_at is not None and info.wake_at <= now:
            with contextlib.suppress(AutonomicError):
                await runtime.resume(run_id)
            return True
        timer_soon = info.wake_at is not None and info.wake_at - now <= FOREGROUND_TIMER_S
        if not runtime.supervisor.tasks and not timer_soon:
            return False
        await asyncio.sleep(0.05)


def _print_result(result: RunResult, as_json: bool) -> None:
    if as_json:
        _print_json(msgspec.to_builtins(result))
        return
    if result.status == "completed":
        print(result.answer)
    elif result.status == "waiting":
        print(
            f"run {result.run_id} is waiting for {result.waiting_for}\n"
            f"  decide with: autonomic approve {result.run_id}   "
            f"(or: autonomic runs show {result.run_id})",
            file=sys.stderr,
        )
    else:
        print(f"run {result.status}: {result.error}", file=sys.stderr)
    print(
        f"run {result.run_id} · {result.status} · {result.model_calls} model call(s) · "
        f"{result.usage.total_tokens} tokens",
        file=sys.stderr,
    )


async def cmd_run(args: argparse.Namespace, runtime: Runtime) -> int:
    agent = _agent_from_args(args)
    if args.detach:
        handle = await runtime.submit(agent, args.goal, priority=args.priority)
        print(handle.run_id)
        print(
            f"run {handle.run_id} submitted: a process serving agent {agent.name!r} will drive "
            "it (autonomic runs show to follow it)",
            file=sys.stderr,
        )
        return 0
    handle = await runtime.start(agent, args.goal, priority=args.priority)
    print(f"run {handle.run_id} started", file=sys.stderr)
    return await _finish(handle, args.json)


async def cmd_list(args: argparse.Namespace, runtime: Runtime) -> int:
    runs = await runtime.list_runs(status=args.status, waiting=args.waiting, limit=args.limit)
    if args.json:
        _print_json([msgspec.to_builtins(r) for r in runs])
        return 0
    if not runs:
        print(
            "no waiting runs"
            if args.waiting
            else 'no runs yet: start one with  autonomic run "goal"'
        )
        return 0
    now = time.time()
    if args.waiting:
        print(f"{'RUN':16}  {'AGENT':14}  WAITING FOR")
        for r in runs:
            reason = r.wait.reason if r.wait else "?"
            print(f"{r.run_id:16}  {short(r.agent, 14):14}  {short(reason, 80)}")
        return 0
    print(f"{'RUN':16}  {'STATUS':10}  {'AGENT':14}  {'EVENTS':>6}  GOAL")
    for r in runs:
        status = status_text(r, now)
        flag = " (orphaned)" if status.startswith("running (orphaned") else ""
        label = "waiting" if r.status == "waiting" else r.status + flag
        agent, goal = short(r.agent, 14), short(r.goal, 50)
        print(f"{r.run_id:16}  {label:10}  {agent:14}  {r.last_seq:>6}  {goal}")
    return 0


async def cmd_show(args: argparse.Namespace, runtime: Runtime) -> int:
    run_id = await _resolve_run_id(runtime, args.run_id)
    info = await runtime.get_run(run_id)
    state = await runtime.state(run_id)
    kpis = run_kpis([e.event async for e in runtime.events(run_id, follow=False)])
    if args.reveal and state.answer is not None:
        from autonomic.guards.pii import reveal

        state.answer = await reveal(runtime.store, run_id, state.answer)
    if args.json:
        _print_json(
            {
                **msgspec.to_builtins(info),
                "status_text": status_text(info, time.time()),
                "answer": state.answer,
                "error": state.error,
                "model_calls": state.model_calls,
                "actions": state.actions_requested,
                "usage": msgspec.to_builtins(state.usage),
                "cost": state.cost,
                "unpriced_calls": state.unpriced_calls,
                "pending_approvals": [msgspec.to_builtins(a) for a in state.approvals.values()],
                "children": msgspec.to_builtins(state.children),
                "kpis": msgspec.to_builtins(kpis),
            }
        )
    else:
        print("\n".join([render_summary(info, state), *kpi_lines(kpis)]))
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
    print("\n".join(kpi_lines(run_kpis([e.event for e in events]))))
    state = await runtime.state(run_id)
    print(
        f"total: {state.model_calls} model call(s), {state.usage.input_tokens} in / "
        f"{state.usage.output_tokens} out tokens, {cost_text(state)}, "
        f"{state.active_seconds(state.last_ts):.3f}s"
    )
    return 0


async def cmd_resume(args: argparse.Namespace, runtime: Runtime) -> int:
    run_id = await _resolve_run_id(runtime, args.run_id)
    agent = load_agent(args.agent) if args.agent is not None else None
    handle = await runtime.resume(run_id, agent=agent, model=args.model)
    print(f"run {run_id} resumed", file=sys.stderr)
    return await _finish(handle, args.json)


async def cmd_fork(args: argparse.Namespace, runtime: Runtime) -> int:
    run_id = await _resolve_run_id(runtime, args.run_id)
    agent = load_agent(args.agent) if args.agent is not None else None
    handle = await runtime.fork(run_id, args.at, agent=agent, model=args.model)
    print(f"run {handle.run_id} forked from {run_id} at event {args.at}", file=sys.stderr)
    return await _finish(handle, args.json)


async def cmd_cancel(args: argparse.Namespace, runtime: Runtime) -> int:
    run_id = await _resolve_run_id(runtime, args.run_id)
    result = await runtime.cancel(run_id, by=args.by)
    if result is None:
        print(f"run {run_id}: cancellation requested; the process driving it records it next")
    else:
        print(f"run {run_id} {result.status}")
    return 0


async def cmd_replay(args: argparse.Namespace, runtime: Runtime) -> int:
    run_id = await _resolve_run_id(runtime, args.run_id)
    agent = load_agent(args.agent) if args.agent is not None else None
    state = await runtime.replay(run_id, agent=agent)
    print(
        f"replayed {state.seq} events of run {run_id}: every step matched the log "
        f"(status {state.status}; no model or tool was called)"
    )
    return 0


async def cmd_signal(args: argparse.Namespace, runtime: Runtime) -> int:
    run_id = await _resolve_run_id(runtime, args.run_id)
    try:
        data = json.loads(args.data) if args.data is not None else None
    except json.JSONDecodeError as e:
        raise ConfigError(f"--data is not valid JSON: {e}") from None
    await runtime.signal(run_id, args.name, data)
    print(f"signal {args.name!r} sent to run {run_id}")
    if args.no_wait:
        return 0
    return await _finish(runtime.handle(run_id), args.json)


async def cmd_topup(args: argparse.Namespace, runtime: Runtime) -> int:
    run_id = await _resolve_run_id(runtime, args.run_id)
    await runtime.topup(
        run_id,
        cost_usd=args.cost,
        tokens=args.tokens,
        wall_s=args.wall_s,
        model_calls=args.model_calls,
        tool_calls=args.tool_calls,
    )
    print(f"budget of run {run_id} raised")
    if args.no_wait:
        return 0
    return await _finish(runtime.handle(run_id), args.json)


async def cmd_approve(args: argparse.Namespace, runtime: Runtime) -> int:
    run_id = await _resolve_run_id(runtime, args.run_id)
    pending = await runtime.pending_approvals(run_id)
    ref = args.action
    if ref is None:
        if len(pending) != 1:
            listing = "; ".join(f"{p.action_id} {p.tool} ({p.digest[:12]})" for p in pending)
            raise ConfigError(
                f"run {run_id} has {len(pending)} pending approvals"
                + (f": name one ({listing})" if pending else "")
            )
        ref = pending[0].digest
    by = args.by or os.environ.get("USER") or "cli"
    if args.deny:
        decided = await runtime.deny(run_id, ref, approver=by, reason=args.reason or "")
        print(f"denied {decided.tool}({short(json.dumps(decided.args), 80)}) of run {run_id}")
    else:
        edited = None
        if args.args is not None:
            try:
                edited = json.loads(args.args)
            except json.JSONDecodeError as e:
                raise ConfigError(f"--args is not valid JSON: {e}") from None
        decided = await runtime.approve(run_id, ref, approver=by, args=edited)
        shown = short(json.dumps(decided.args if edited is None else edited), 80)
        print(f"approved {decided.tool}({shown}) of run {run_id}")
    if args.no_wait:
        return 0
    return await _finish(runtime.handle(run_id), args.json)


_TOP_OPTIONS = "--store --bus --debug --version --help"


def _completion_script(shell: str, parser: argparse.ArgumentParser) -> str:
    """A completion script listing the commands, subcommands and options."""
    commands = _subcommands(parser)
    words = " ".join(sorted(commands))
    if shell == "bash":
        cases = "\n".join(
            f'        {name}) COMPREPLY=($(compgen -W "{" ".join(sorted(subs))}" -- "$cur"));;'
            for name, subs in sorted(commands.items())
            if subs
        )
        return (
            "_autonomic() {\n"
            '    local cur="${COMP_WORDS[COMP_CWORD]}"\n'
            "    if [ $COMP_CWORD -eq 1 ]; then\n"
            f'        COMPREPLY=($(compgen -W "{words} {_TOP_OPTIONS}" -- "$cur"))\n'
            "        return\n"
            "    fi\n"
            '    case "${COMP_WORDS[1]}" in\n'
            f"{cases}\n"
            "    esac\n"
            "}\n"
            "complete -o default -F _autonomic autonomic\n"
        )
    lines = ["#compdef autonomic", "_autonomic() {", "  local -a commands", f"  commands=({words})"]
    lines += [
        "  if (( CURRENT == 2 )); then _describe 'command' commands; return; fi",
        "  case $words[2] in",
    ]
    lines += [
        f"    {name}) _values 'subcommand' {' '.join(sorted(subs))};;"
        for name, subs in sorted(commands.items())
        if subs
    ]
    lines += ["  esac", "}", "compdef _autonomic autonomic"]
    return "\n".join(lines) + "\n"


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = [
                    n
                    for a in sub._actions
                    if isinstance(a, argparse._SubParsersAction)
                    for n in a.choices
                ]
                options = [o for a in sub._actions for o in a.option_strings if o.startswith("--")]
                found[name] = nested or options
    return found


async def cmd_completion(args: argparse.Namespace, runtime: Runtime) -> int:
    print(_completion_script(args.shell, build_parser()), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from autonomic import __version__

    parser = argparse.ArgumentParser(
        prog="autonomic",
        description="Durable runs for autonomous LLM agents.",
        epilog="exit codes: 0 done, 1 run failed/cancelled/dead, 2 usage error, "
        "3 run waiting, 130 interrupted",
    )
    parser.add_argument("--version", action="version", version=f"autonomic {__version__}")
    parser.add_argument(
        "--store",
        default=os.environ.get("AUTONOMIC_STORE", DEFAULT_STORE_URL),
        help="store URL (default: $AUTONOMIC_STORE or %(default)s)",
    )
    parser.add_argument(
        "--bus",
        default=os.environ.get("AUTONOMIC_BUS"),
        help="bus URL: local://, redis://HOST:6379, nats://HOST:4222 (default: "
        f"$AUTONOMIC_BUS, else the store's own bus (PostgreSQL's), else {DEFAULT_BUS_URL})",
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
    run.add_argument(
        "--detach",
        action="store_true",
        help="only submit the run; a process serving the agent drives it",
    )
    run.add_argument(
        "--priority",
        type=int,
        default=0,
        metavar="N",
        help="workers claim ready runs of a higher priority first (default 0; may be negative)",
    )
    connection_options(run)
    run.set_defaults(handler=cmd_run)

    approve = connection_options(
        commands.add_parser("approve", help="approve (or deny) a tool call a run waits on")
    )
    approve.add_argument("run_id", help="run id (or an unambiguous prefix)")
    approve.add_argument(
        "action", nargs="?", help="action id, call id or digest (prefix); optional if only one"
    )
    approve.add_argument("--deny", action="store_true", help="deny the call instead")
    approve.add_argument("--reason", help="why (shown to the model when denied)")
    approve.add_argument("--by", help="who decides (default: $USER)")
    approve.add_argument("--args", help="approve with these arguments instead (JSON object)")
    approve.add_argument("--no-wait", action="store_true", help="do not drive the run on here")
    approve.add_argument("--json", action="store_true")
    approve.set_defaults(handler=cmd_approve)

    completion = commands.add_parser("completion", help="print a shell completion script")
    completion.add_argument("shell", choices=("bash", "zsh"))
    completion.set_defaults(handler=cmd_completion, offline=True)

    runs = commands.add_parser("runs", help="inspect and control runs")
    sub = runs.add_subparsers(dest="runs_command", required=True, metavar="COMMAND")

    listing = connection_options(sub.add_parser("list", help="list recent runs"))
    listing.add_argument("--status", help="only runs with this status")
    listing.add_argument("--waiting", action="store_true", help="only waiting runs, and why")
    listing.add_argument("--limit", type=_count(1), default=20)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_list)

    def with_run(name: str, help_text: str, handler: Command) -> argparse.ArgumentParser:
        p = connection_options(sub.add_parser(name, help=help_text))
        p.add_argument("run_id", help="run id (or an unambiguous prefix)")
        p.set_defaults(handler=handler)
        return p

    show = with_run("show", "status, usage, approvals and answer of a run", cmd_show)
    show.add_argument("--json", action="store_true")
    show.add_argument(
        "--reveal",
        action="store_true",
        help="restore the PII placeholders of the answer (needs $AUTONOMIC_VAULT_KEY)",
    )
    events = with_run("events", "the event log of a run", cmd_events)
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    events.add_argument("--after", type=_count(0), default=0, help="only events after this seq")
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    with_run("trace", "rationale → action → observation tree with timings", cmd_trace)
    replay = with_run("replay", "re-decide every step from the log, calling nothing", cmd_replay)
    replay.add_argument("--agent", help="module:attr of the agent, if not importable by its path")
    resume = with_run(
        "resume", "continue an unfinished run (after a crash, or a dead run)", cmd_resume
    )
    fork = with_run("fork", "start a new run from event SEQ of this one", cmd_fork)
    fork.add_argument(
        "--at", type=_count(1), required=True, metavar="SEQ", help="last shared event"
    )
    for p in (resume, fork):
        p.add_argument("--agent", help="module:attr of the agent, if not importable by its path")
        p.add_argument("--model", help="go on with this model instead of the agent's own")
        p.add_argument("--json", action="store_true")
    cancel = with_run("cancel", "cancel a run (and its child runs)", cmd_cancel)
    cancel.add_argument("--by", default="cli", help="who cancels (recorded in the log)")
    signal = with_run("signal", "send a named signal with JSON data to a run", cmd_signal)
    signal.add_argument("name", help="the signal's name")
    signal.add_argument("--data", help="JSON data (default: null)")
    signal.add_argument("--no-wait", action="store_true", help="do not drive the run on here")
    signal.add_argument("--json", action="store_true")
    topup = with_run("topup", "raise a run's budget; a run waiting for budget goes on", cmd_topup)
    topup.add_argument("--cost", type=float, metavar="USD", help="add this much to its cost limit")
    topup.add_argument("--tokens", type=_count(1), help="add this many tokens")
    topup.add_argument("--wall-s", type=float, metavar="S", help="add this much wall time")
    topup.add_argument("--model-calls", type=_count(1), help="add this many model calls")
    topup.add_argument("--tool-calls", type=_count(1), help="add this many tool calls")
    topup.add_argument("--no-wait", action="store_true", help="do not drive the run on here")
    topup.add_argument("--json", action="store_true")
    add_telemetry_parsers(sub)
    add_worker_parser(commands)
    add_server_parsers(commands)
    return parser


_CREATES = {"run"}


async def _main(args: argparse.Namespace) -> int:
    if getattr(args, "offline", False):
        return await args.handler(args, None)  # type: ignore[no-any-return]
    store = open_store(args.store, create=args.command in _CREATES)
    bus = open_bus(args.bus) if args.bus else None
    async with Runtime(store, wake=False, bus=bus) as runtime:
        code: int = await args.handler(args, runtime)
        return code


def _utf8_safe_streams() -> None:
    """Never die printing: a terminal that cannot show a character gets an escape."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]


def main(argv: Sequence[str] | None = None) -> int:
    _utf8_safe_streams()
    parser = build_parser()
    args = parser.parse_args(argv)
    goal = getattr(args, "goal", None)
    if goal is not None:
        if not goal.strip():
            parser.error("the goal is empty: say what the agent should do")
        if clean_text(goal) != goal:
            parser.error("the goal is not valid UTF-8 text: check the terminal's encoding")
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
