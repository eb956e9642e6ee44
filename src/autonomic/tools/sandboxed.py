"""Built-in tools that run model-written code in a sandbox: ``run_python`` and ``run_shell``.

    agent = Agent(..., tools=[run_python(), run_shell()])

Each call runs in a fresh sandbox execution (deny-all: no network, no host files, unless
the tool lists ``allow_hosts``) and comes back as one observation: exit status, output,
the files the code wrote, and in plain words any limit it hit. A failure of the code is
an observation, not an error. Pass an open sandbox as the first argument to share its
warm pool (its owner closes it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from autonomic.errors import ConfigError, SandboxError, ToolError
from autonomic.events import EgressRequested
from autonomic.models.base import ToolSpec
from autonomic.sandbox.backends import open_sandbox
from autonomic.sandbox.base import Sandbox, SandboxLimits, SandboxResult, format_bytes
from autonomic.sandbox.egress import EgressRequest
from autonomic.tools.base import ToolContext
from autonomic.tools.options import DEFAULT_OPTIONS

__all__ = ["SandboxTool", "format_result", "run_python", "run_shell"]

START_MARGIN = 10.0
"""Seconds the runtime allows on top of the sandbox's own timeout, for start and teardown."""
MAX_SECTION = 8_000
"""Characters of each output or file shown to the model; the middle of longer ones is cut."""


def _clip(text: str, limit: int = MAX_SECTION) -> str:
    """The head and tail of a long text: tracebacks end, and headers begin, a text."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters cut ...]\n{text[-half:]}"


def _describe_file(name: str, data: bytes) -> str:
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return f"{name} ({format_bytes(len(data))}, binary)"
    return f"{name} ({format_bytes(len(data))}):\n{_clip(text)}"


def format_result(result: SandboxResult) -> str:
    """An execution as the model reads it; empty sections are left out."""
    status = "ok" if result.exit_code == 0 else f"exit code {result.exit_code}"
    parts = [f"{status} ({result.usage.wall_seconds:.2f}s)"]
    if result.violations:
        parts.append(f"limit hit: {result.violation}")
    for title, text in (("stdout", result.stdout), ("stderr", result.stderr)):
        if text:
            parts.append(f"--- {title} ---\n{_clip(text).rstrip()}")
    if result.files:
        listing = "\n".join(_describe_file(n, d) for n, d in sorted(result.files.items()))
        parts.append(f"--- files written ---\n{listing}")
    return "\n".join(parts)


class SandboxTool:
    """A tool whose one string argument is run in a sandbox, as Python code or a command."""

    def __init__(
        self,
        sandbox: Sandbox,
        *,
        name: str,
        description: str,
        argument: str,
        argument_description: str,
        shell: bool,
        limits: SandboxLimits | None = None,
    ) -> None:
        self._sandbox = sandbox
        self._limits = limits
        self.options = DEFAULT_OPTIONS
        self._argument = argument
        self._shell = shell
        self._spec = ToolSpec(
            name=name,
            description=description,
            parameters={
                "type": "object",
                "properties": {argument: {"type": "string", "description": argument_description}},
                "required": [argument],
                "additionalProperties": False,
            },
        )

    @property
    def spec(self) -> ToolSpec:
        return self._spec

    @property
    def idempotent(self) -> bool:
        """Safe to run again unless the code can reach something outside its sandbox."""
        return not self._sandbox.reaches_network

    @property
    def timeout(self) -> float:
        return (self._limits or self._sandbox.limits).timeout + START_MARGIN

    @property
    def sandbox(self) -> Sandbox:
        return self._sandbox

    async def invoke(self, arguments: dict[str, Any], context: ToolContext) -> str:
        text = arguments.get(self._argument)
        if not isinstance(text, str) or set(arguments) != {self._argument}:
            raise ToolError(f"invalid arguments: expected one string argument {self._argument!r}")
        try:
            if self._shell:
                result = await self._sandbox.run_command(text, limits=self._limits)
            else:
                result = await self._sandbox.run_python(text, limits=self._limits)
        except SandboxError as e:
            raise ToolError(f"the sandbox could not run it: {e}", retryable=True) from e
        for request in result.egress:
            context.record(
                EgressRequested(
                    context.action_id,
                    request.method,
                    request.host,
                    request.port,
                    request.allowed,
                    request.target,
                    request.reason,
                )
            )
        return format_result(result)

    def __repr__(self) -> str:
        return f"<tool {self._spec.name} in {self._sandbox.name} sandbox>"


def _resolve(
    sandbox: Sandbox | str,
    allow_hosts: Sequence[str],
    resolve: Mapping[str, str] | None,
    on_egress: Callable[[EgressRequest], None] | None,
) -> Sandbox:
    """A backend name opens a sandbox without a warm pool: it holds nothing to close."""
    if not isinstance(sandbox, str):
        if allow_hosts or on_egress or resolve:
            raise ConfigError("allow_hosts needs a backend name; or open the sandbox with egress=")
        return sandbox
    if allow_hosts:
        return open_sandbox(
            sandbox, warm=0, egress=allow_hosts, egress_resolve=resolve, on_egress=on_egress
        )
    if resolve:
        raise ConfigError("resolve= only applies to the hosts in allow_hosts")
    return open_sandbox(sandbox, warm=0)


def _limits_note(limits: SandboxLimits, allow_hosts: Sequence[str]) -> str:
    network = "with no network"
    if allow_hosts:
        network = f"with HTTP(S) access to {', '.join(allow_hosts)} only (through a proxy)"
    return (
        f"Each call starts fresh, {network}; it may run {limits.timeout:g}s "
        f"and use {format_bytes(limits.memory_bytes)} of memory."
    )


def run_python(
    sandbox: Sandbox | str = "bwrap",
    *,
    limits: SandboxLimits | None = None,
    name: str = "run_python",
    allow_hosts: Sequence[str] = (),
    resolve: Mapping[str, str] | None = None,
    on_egress: Callable[[EgressRequest], None] | None = None,
) -> SandboxTool:
    """A tool that runs Python code in a sandbox (default: bubblewrap, deny-all).

    ``allow_hosts`` opens it to those hosts only (see ``BwrapSandbox``'s ``egress``);
    ``resolve`` maps their names to addresses; ``on_egress`` hears of every request the
    code makes, allowed or not (each is also an ``EgressRequested`` event in the run).
    """
    box = _resolve(sandbox, allow_hosts, resolve, on_egress)
    return SandboxTool(
        box,
        name=name,
        description=(
            "Run Python 3 code in an isolated sandbox and see its output. Print what you "
            "need to see; files it writes in its working directory are shown too. "
            + _limits_note(limits or box.limits, allow_hosts)
        ),
        argument="code",
        argument_description="Python source code, run as a script",
        shell=False,
        limits=limits,
    )


def run_shell(
    sandbox: Sandbox | str = "bwrap",
    *,
    limits: SandboxLimits | None = None,
    name: str = "run_shell",
    allow_hosts: Sequence[str] = (),
    resolve: Mapping[str, str] | None = None,
    on_egress: Callable[[EgressRequest], None] | None = None,
) -> SandboxTool:
    """A tool that runs a shell command line in a sandbox (default: bubblewrap, deny-all).

    ``allow_hosts``, ``resolve`` and ``on_egress`` as for ``run_python``.
    """
    box = _resolve(sandbox, allow_hosts, resolve, on_egress)
    return SandboxTool(
        box,
        name=name,
        description=(
            "Run a shell command line (/bin/sh) in an isolated sandbox with the usual "
            "command-line tools, and see its output and the files it writes in its working "
            "directory. " + _limits_note(limits or box.limits, allow_hosts)
        ),
        argument="command",
        argument_description="the command line, as given to sh -c",
        shell=True,
        limits=limits,
    )
