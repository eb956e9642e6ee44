"""``autonomic serve`` and ``autonomic keys``: the service's command-line side.

Nothing here imports the web framework until a command runs, so the CLI works (and says
which extra to install) without ``autonomic[server]``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sys
import time
from typing import Any

from autonomic._options import connection_options
from autonomic.agent import Agent, load_agent
from autonomic.errors import AgentNotFound, ConfigError, MissingExtra

__all__ = ["add_server_parsers", "load_agents"]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> float:
    match = _DURATION.match(text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 3600, 90m, 12h or 30d")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 1e6:
        raise argparse.ArgumentTypeError(f"{value:g} is out of range (0 to 1e6)")
    return value


def load_agents(specs: list[str]) -> list[Agent]:
    """Agents from ``module:attr`` (one) or ``module`` (every Agent defined in it)."""
    agents: list[Agent] = []
    for spec in specs:
        if ":" in spec:
            agents.append(load_agent(spec))
            continue
        if not all(part.isidentifier() for part in spec.split(".")):
            raise AgentNotFound(f"--agents {spec!r} must be a module (myapp.agents) or module:attr")
        try:
            module = importlib.import_module(spec)
        except ModuleNotFoundError as e:
            raise AgentNotFound(f"cannot import {spec!r}: {e}") from e
        found = [name for name, value in vars(module).items() if isinstance(value, Agent)]
        if not found:
            raise AgentNotFound(f"module {spec!r} defines no autonomic.Agent")
        agents.extend(load_agent(f"{spec}:{name}") for name in found)
    names = [a.name for a in agents]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"two served agents are named {twice[0]!r}: agent names must differ")
    return agents


def _keys(args: argparse.Namespace) -> Any:
    from autonomic.server.keys import KeyStore

    return KeyStore(args.keys)


async def cmd_serve(args: argparse.Namespace, _: object) -> int:
    try:
        from autonomic.server.app import create_app
        from autonomic.server.serving import serve
    except ImportError as e:
        if isinstance(e, MissingExtra):
            raise
        raise MissingExtra("server", "autonomic serve") from e
    from autonomic.runtime import Runtime
    from autonomic.server.observability import observability_routers
    from autonomic.store import open_store

    if not args.agents:
        raise ConfigError("say which agents to serve: --agents myapp.agents (or module:attr)")
    agents = load_agents(args.agents)
    runtime = Runtime(
        open_store(args.store, create=True),
        agents=agents,
        resume_incomplete=True,
        lease_s=args.lease_s,
        bus=getattr(args, "bus", None),  # SSE streams follow runs driven by other processes
    )
    exporter = None
    if args.otlp_endpoint:
        from autonomic.telemetry.otel import otlp_exporter

        exporter = otlp_exporter(args.otlp_endpoint)
    routers = observability_routers(runtime, exporter=exporter)
    app = create_app(runtime, keys=_keys(args), routers=routers)
    names = ", ".join(a.name for a in agents)
    print(
        f"autonomic: serving {names} on http://{args.host}:{args.port}/ (store {args.store})",
        file=sys.stderr,
    )
    await serve(app, host=args.host, port=args.port)
    return 0


async def cmd_keys_create(args: argparse.Namespace, _: object) -> int:
    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    record, token = _keys(args).create(
        args.name,
        tenant=args.tenant,
        scopes=scopes,
        expires_in_s=args.expires_in,
        rate_per_s=args.rate,
        burst=args.burst,
    )
    if args.json:
        print(json.dumps({"key": token, **record.public()}))
    else:
        print(token)
        print(
            f"key {record.id} ({record.name}, tenant {record.tenant}, scopes "
            f"{','.join(record.scopes)}): shown once; keep it secret",
            file=sys.stderr,
        )
    return 0


async def cmd_keys_list(args: argparse.Namespace, _: object) -> int:
    records = _keys(args).list()
    if args.json:
        print(json.dumps([r.public() for r in records]))
        return 0
    now = time.time()
    for r in records:
        state = r.refusal(now) or "active"
        print(f"{r.id}  {r.name:<16} {r.tenant:<12} {','.join(r.scopes):<40} {state}")
    if not records:
        print("(no keys; create one with 'autonomic keys create')", file=sys.stderr)
    return 0


async def cmd_keys_revoke(args: argparse.Namespace, _: object) -> int:
    record = _keys(args).revoke(args.key_id)
    print(f"key {record.id} ({record.name}) revoked", file=sys.stderr)
    return 0


def add_server_parsers(commands: Any) -> None:
    """Add ``serve`` and ``keys`` to the ``autonomic`` command's subcommands."""
    keys_help = "the API key file (default: $AUTONOMIC_KEYS or keys.json in the config dir)"
    serve = commands.add_parser(
        "serve", help="serve agents over HTTP: API, event streams, dashboard"
    )
    serve.add_argument(
        "--agents",
        action="append",
        metavar="MODULE",
        help="the agents to serve: a module (every Agent in it) or module:attr; repeatable",
    )
    connection_options(serve)
    serve.add_argument("--host", default=os.environ.get("AUTONOMIC_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("AUTONOMIC_PORT", "8000")))
    serve.add_argument("--keys", help=keys_help)
    serve.add_argument(
        "--otlp-endpoint",
        default=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"),
        help="export each run's spans when it ends to this OTLP/HTTP collector "
        "(default: $OTEL_EXPORTER_OTLP_ENDPOINT; needs autonomic[otel])",
    )
    serve.add_argument(
        "--lease-s",
        type=_positive,
        default=30.0,
        help="how long a run stays with this process after it stops answering (default 30)",
    )
    serve.set_defaults(handler=cmd_serve, offline=True)

    keys = commands.add_parser("keys", help="create, list and revoke API keys")
    sub = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    create = sub.add_parser("create", help="create a key (printed once)")
    create.add_argument("--name", required=True, help="what the key is for (e.g. ci)")
    create.add_argument("--tenant", default="default", help="whose runs it sees (default: default)")
    create.add_argument(
        "--scopes",
        required=True,
        help="comma-separated: runs:read, runs:write, approvals:write, budgets:write, metrics:read",
    )
    create.add_argument("--expires-in", type=_duration, help="lifetime, e.g. 30d or 12h")
    create.add_argument("--rate", type=_positive, default=20.0, help="requests/s (default 20)")
    create.add_argument("--burst", type=int, default=60, help="requests at once (default 60)")
    create.add_argument("--json", action="store_true")
    create.set_defaults(handler=cmd_keys_create)
    listing = sub.add_parser("list", help="list keys (never the keys themselves)")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_keys_list)
    revoke = sub.add_parser("revoke", help="revoke a key, effective at its next request")
    revoke.add_argument("key_id")
    revoke.set_defaults(handler=cmd_keys_revoke)
    for p in (create, listing, revoke):
        p.add_argument("--keys", help=keys_help)
        p.set_defaults(offline=True)
