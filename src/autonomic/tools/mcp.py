"""Tools from MCP servers, as ordinary autonomic tools (stdio and streamable HTTP transports).

    async with mcp_tools(stdio("python", "server.py"), prefix="files_") as tools:
        agent = Agent("helper", tools=[*tools, other_tool])

An agent must also be buildable at import time, so that a process resuming one of its runs
can rebuild it; ``load()`` lists the tools there, from synchronous code:

    agent = Agent("helper", tools=mcp_tools(http("http://127.0.0.1:8000/mcp")).load())

Either way the tool set connects when first used, with one session per event loop, held by
a task of its own so that any task may call through it. A session whose server went away is
replaced by a new one. A call cut off that way may or may not have run: an idempotent tool's
call is sent once more, on the new session; any other fails and says so.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Self, overload

from autonomic._resource import AsyncResource
from autonomic.errors import ConfigError, MissingExtra, ToolError
from autonomic.models.base import ToolSpec
from autonomic.tools._mcp_session import (
    Disconnected,
    HttpServer,
    MCPServerParams,
    RemoteTool,
    Session,
    SessionExpired,
    StdioServer,
    Unreachable,
    http,
    stdio,
)
from autonomic.tools.base import ToolContext
from autonomic.tools.observations import observation_text
from autonomic.tools.options import DEFAULT_OPTIONS, ToolOptions

try:
    from jsonschema import SchemaError
    from jsonschema.protocols import Validator
    from jsonschema.validators import validator_for
    from mcp.shared.exceptions import MCPError
    from mcp.types import (
        REQUEST_TIMEOUT,
        AudioContent,
        BlobResourceContents,
        CallToolResult,
        ContentBlock,
        EmbeddedResource,
        ImageContent,
        ResourceLink,
        TextContent,
    )
    from referencing.exceptions import Unresolvable
except ImportError as e:
    raise MissingExtra("mcp", "MCP tools") from e

__all__ = ["HttpServer", "MCPTool", "MCPTools", "StdioServer", "http", "mcp_tools", "stdio"]

log = logging.getLogger("autonomic.tools.mcp")

_INVALID_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_-]")
_MAX_ARGUMENT_ERRORS = 5
# A run this long of base64 is binary data (an image in a JSON result, say), which a model
# cannot read: it is replaced by its size. (1 KiB: a 300 KB image was 16,000 characters of
# an observation, all of them noise.)
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{1024,}={0,2}")


# -- what the model sees ---------------------------------------------------------------


def _size(data: str) -> str:
    """The size of base64 ``data`` once decoded."""
    return f"{len(data) * 3 // 4 - data.count('=')} bytes"


def _without_binary(text: str) -> str:
    return _BASE64_RUN.sub(lambda m: f"[binary data, {_size(m.group())}]", text)


def _render_block(block: ContentBlock) -> str:
    if isinstance(block, TextContent):
        return _without_binary(block.text)
    if isinstance(block, ImageContent | AudioContent):
        return f"[{block.type}: {block.mime_type}, {_size(block.data)}]"
    if isinstance(block, ResourceLink):
        return f"[resource link: {block.name} <{block.uri}>]"
    if isinstance(block, EmbeddedResource):
        resource = block.resource
        if isinstance(resource, BlobResourceContents):
            kind = resource.mime_type or "binary"
            return f"[resource {resource.uri}: {kind}, {_size(resource.blob)}]"
        return f"[resource {resource.uri}]\n{_without_binary(resource.text)}"
    return f"[{block.type} content]"


def _render(result: CallToolResult) -> str:
    """A tool result as one observation text: its text, with other content described.

    Structured content is shown as JSON only when there is no text; servers usually send
    the same data as text too.
    """
    parts = [_render_block(block) for block in result.content]
    has_text = any(isinstance(block, TextContent) for block in result.content)
    if result.structured_content is not None and not has_text:
        parts.insert(0, _without_binary(observation_text(result.structured_content)))
    return "\n".join(parts)


def _argument_validator(schema: dict[str, Any]) -> Validator | None:
    """A validator of the tool's input schema, or None where the schema itself is invalid
    (the server then judges the arguments)."""
    cls = validator_for(schema)
    try:
        cls.check_schema(schema)
    except SchemaError:
        return None
    return cls(schema)


def _argument_errors(validator: Validator, arguments: Any) -> str | None:
    try:
        errors = sorted(validator.iter_errors(arguments), key=lambda e: list(map(str, e.path)))
    except Unresolvable:  # a $ref to elsewhere: the server can resolve it, we need not
        return None
    if not errors:
        return None
    parts = [
        f"{'.'.join(map(str, e.path)) or 'arguments'}: {e.message}"
        for e in errors[:_MAX_ARGUMENT_ERRORS]
    ]
    return "invalid arguments: " + "; ".join(parts)


def _parameters(schema: dict[str, Any]) -> dict[str, Any]:
    """The input schema as the model sees it: an object, without generated titles."""
    parameters = {key: value for key, value in schema.items() if key != "title"}
    parameters.setdefault("type", "object")
    if parameters["type"] == "object":
        properties = parameters.get("properties", {})
        parameters["properties"] = {name: _untitled(prop) for name, prop in properties.items()}
    return parameters


def _untitled(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {key: value for key, value in schema.items() if key != "title"}
    return schema


def _needs_a_task(tool: RemoteTool) -> bool:
    """Whether the server only runs ``tool`` as an MCP task (``taskSupport: required``):
    a plain call would fail, so the model is not offered it."""
    return tool.execution is not None and tool.execution.task_support == "required"


# -- the tools -------------------------------------------------------------------------


class MCPTool:
    """One tool of an MCP server. Arguments are checked against its schema before a call."""

    def __init__(
        self,
        toolset: MCPTools,
        remote: RemoteTool,
        *,
        name: str,
        timeout: float | None,
        idempotent: bool,
        options: ToolOptions = DEFAULT_OPTIONS,
    ) -> None:
        self._toolset = toolset
        self.options = options
        self.remote_name = remote.name
        self._spec = ToolSpec(
            name=name,
            description=remote.description or remote.title or remote.name,
            parameters=_parameters(remote.input_schema),
        )
        self._validator = _argument_validator(remote.input_schema)
        self._timeout = timeout
        self._idempotent = idempotent

    @property
    def spec(self) -> ToolSpec:
        return self._spec

    @property
    def idempotent(self) -> bool:
        return self._idempotent

    @property
    def timeout(self) -> float | None:
        return self._timeout

    async def invoke(self, arguments: dict[str, Any], context: ToolContext) -> str:
        if self._validator is not None:
            problem = _argument_errors(self._validator, arguments)
            if problem:
                raise ToolError(problem)
        result = await self._toolset._call(self, arguments)
        text = _render(result)
        if result.is_error:
            raise ToolError(text or f"{self.remote_name} failed")
        return text

    def __repr__(self) -> str:
        return f"<tool {self._spec.name} from MCP server {self._toolset.server}>"


def _tool_name(remote: str, prefix: str, rename: Mapping[str, str]) -> str:
    """The name the model sees; characters model APIs refuse in names become ``_``."""
    name = rename.get(remote, prefix + remote)
    return _INVALID_NAME_CHARS.sub("_", name)[:64]


class MCPTools(AsyncResource, Sequence[MCPTool]):
    """The tools of one MCP server, chosen, named and configured for an agent.

    Names in ``include``, ``exclude``, ``rename``, ``timeouts`` and in the mappings of
    ``idempotent`` and ``options`` are the server's. A tool is idempotent when
    ``idempotent`` says so (``True``/``False`` for all, or a mapping per tool), else when
    the server marks it idempotent or read-only. ``options`` (retries, rate limit, output
    cap...) are for every tool, or a mapping per tool. Leaving ``async with`` closes this
    event loop's session; ``close()`` does too.
    """

    def __init__(
        self,
        server: MCPServerParams,
        *,
        include: Iterable[str] | None = None,
        exclude: Iterable[str] = (),
        prefix: str = "",
        rename: Mapping[str, str] | None = None,
        timeout: float | None = 60.0,
        timeouts: Mapping[str, float | None] | None = None,
        idempotent: bool | Mapping[str, bool] | None = None,
        options: ToolOptions | Mapping[str, ToolOptions] = DEFAULT_OPTIONS,
        connect_timeout: float = 30.0,
    ) -> None:
        if connect_timeout <= 0:
            raise ConfigError("connect_timeout must be positive")
        if isinstance(include, str) or isinstance(exclude, str):
            raise ConfigError("include and exclude take a list of tool names, not one string")
        self.server = server
        self._include = None if include is None else frozenset(include)
        self._exclude = frozenset(exclude)
        self._prefix = prefix
        self._rename = dict(rename or {})
        self._timeout = timeout
        self._timeouts = dict(timeouts or {})
        self._idempotent = idempotent
        self._options = options
        self._connect_timeout = connect_timeout
        # One session per event loop: a session belongs to the loop that opened it.
        self._sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Session] = (
            weakref.WeakKeyDictionary()
        )
        self._tools: tuple[MCPTool, ...] | None = None

    # -- listing ------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            await self.refresh()
        except BaseException:
            await self.close()
            raise

    async def refresh(self) -> None:
        """List the server's tools (again), connecting if need be; a session the server
        has forgotten is replaced once."""
        for attempt in (1, 2):
            session = self._session()
            try:
                remote = await session.list_tools()
            except SessionExpired:
                await self._discard(session)
                if attempt == 1:
                    continue
                raise
            except (Disconnected, MCPError) as e:
                await self._discard(session)
                raise ToolError(
                    f"cannot list the tools of MCP server {self.server}: {e}", retryable=True
                ) from e
            self._tools = self._select(remote)
            return

    def load(self) -> Self:
        """List the tools now, from synchronous code such as a module defining an agent.

        It blocks for a moment on a short-lived session of its own; the tools connect
        again, lazily, in the event loop that runs them.
        """
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, self._load_once()).result()
        return self

    async def _load_once(self) -> None:
        try:
            await self.refresh()
        finally:
            await self.close()

    def _select(self, remote: list[RemoteTool]) -> tuple[MCPTool, ...]:
        tasks_only = {tool.name for tool in remote if _needs_a_task(tool)}
        named = set(self._include or ()) | set(self._rename) | set(self._timeouts)
        if tasks_only & named:
            raise ConfigError(
                f"MCP tool {sorted(tasks_only & named)[0]!r} of {self.server} can only be run as "
                "an MCP task, which autonomic does not support; leave it out"
            )
        if tasks_only:
            log.info("MCP server %s: hiding %s (they need MCP tasks)", self.server, tasks_only)
        names = {tool.name for tool in remote}
        for option, keys in (
            ("include", self._include or ()),
            ("exclude", self._exclude),
            ("rename", self._rename),
            ("timeouts", self._timeouts),
            ("idempotent", self._idempotent if isinstance(self._idempotent, Mapping) else ()),
            ("options", self._options if isinstance(self._options, Mapping) else ()),
        ):
            unknown = sorted(set(keys) - names)
            if unknown:
                known = ", ".join(sorted(names)) or "none"
                raise ConfigError(
                    f"{option} names {unknown[0]!r}, which MCP server {self.server} does not "
                    f"have (it has: {known})"
                )
        chosen = [
            tool
            for tool in remote
            if (self._include is None or tool.name in self._include)
            and tool.name not in self._exclude | tasks_only
        ]
        tools = tuple(self._tool(remote_tool) for remote_tool in chosen)
        seen: dict[str, str] = {}
        for tool in tools:
            if tool.spec.name in seen:
                raise ConfigError(
                    f"MCP tools {seen[tool.spec.name]!r} and {tool.remote_name!r} are both named "
                    f"{tool.spec.name!r} here; rename one"
                )
            seen[tool.spec.name] = tool.remote_name
        return tools

    def _tool(self, remote: RemoteTool) -> MCPTool:
        if isinstance(self._idempotent, bool):
            idempotent = self._idempotent
        elif isinstance(self._idempotent, Mapping) and remote.name in self._idempotent:
            idempotent = self._idempotent[remote.name]
        else:
            hints = remote.annotations
            idempotent = bool(hints and (hints.idempotent_hint or hints.read_only_hint))
        return MCPTool(
            self,
            remote,
            name=_tool_name(remote.name, self._prefix, self._rename),
            timeout=self._timeouts.get(remote.name, self._timeout),
            idempotent=idempotent,
            options=(
                self._options.get(remote.name, DEFAULT_OPTIONS)
                if isinstance(self._options, Mapping)
                else self._options
            ),
        )

    # -- calling ------------------------------------------------------------------------

    def _session(self) -> Session:
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None or not session.alive:
            session = self._sessions[loop] = Session(self.server, self._connect_timeout)
        return session

    async def _discard(self, session: Session) -> None:
        loop = asyncio.get_running_loop()
        if self._sessions.get(loop) is session:
            del self._sessions[loop]
        await session.close()

    async def _call(self, tool: MCPTool, arguments: dict[str, Any]) -> CallToolResult:
        """Call ``tool`` through this loop's session. A lost session is replaced, and an
        idempotent call sent once more on the new one; so is any call that a server which
        forgot the session refused unseen."""
        try:
            return await self._call_once(tool, arguments)
        except SessionExpired:
            pass
        except Disconnected as e:
            if isinstance(e, Unreachable) or not tool.idempotent:
                raise self._lost(tool, e) from e
        try:
            return await self._call_once(tool, arguments)
        except Disconnected as e:
            raise self._lost(tool, e) from e

    async def _call_once(self, tool: MCPTool, arguments: dict[str, Any]) -> CallToolResult:
        session = self._session()
        try:
            return await session.call(tool.remote_name, arguments)
        except Disconnected as e:
            log.warning("MCP server %s: the session was lost (%s)", self.server, e)
            await self._discard(session)
            raise
        except MCPError as e:
            if e.code == REQUEST_TIMEOUT:
                raise ToolError(
                    f"MCP server {self.server} did not answer in time: {e.message}",
                    retryable=tool.idempotent,
                ) from e
            raise ToolError(f"MCP server {self.server} refused the call: {e.message}") from e

    def _lost(self, tool: MCPTool, error: Disconnected) -> ToolError:
        """Nothing was sent to an unreachable server, so trying again is safe; a call cut
        off may have had its effect, so only an idempotent one is worth trying again."""
        if isinstance(error, Unreachable):
            return ToolError(f"cannot reach MCP server {self.server} ({error})", retryable=True)
        return ToolError(
            f"lost the connection to MCP server {self.server} ({error}) during the call, "
            "which may or may not have run; the next call reconnects",
            retryable=tool.idempotent,
        )

    async def close(self) -> None:
        """Close the session of the running event loop, if it has one."""
        session = self._sessions.pop(asyncio.get_running_loop(), None)
        if session is not None:
            await session.close()

    # -- the sequence of tools ----------------------------------------------------------

    def _listed(self) -> tuple[MCPTool, ...]:
        if self._tools is None:
            raise ConfigError(
                f"the tools of MCP server {self.server} are not listed yet: "
                "use `async with mcp_tools(...) as tools`, or `mcp_tools(...).load()`"
            )
        return self._tools

    @overload
    def __getitem__(self, index: int) -> MCPTool: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[MCPTool]: ...

    def __getitem__(self, index: int | slice) -> MCPTool | Sequence[MCPTool]:
        return self._listed()[index]

    def __len__(self) -> int:
        return len(self._listed())

    def __iter__(self) -> Iterator[MCPTool]:
        return iter(self._listed())

    def __repr__(self) -> str:
        listed = "not listed" if self._tools is None else f"{len(self._tools)} tools"
        return f"<MCPTools {self.server} ({listed})>"


def mcp_tools(
    server: MCPServerParams | str,
    *,
    include: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
    prefix: str = "",
    rename: Mapping[str, str] | None = None,
    timeout: float | None = 60.0,
    timeouts: Mapping[str, float | None] | None = None,
    idempotent: bool | Mapping[str, bool] | None = None,
    options: ToolOptions | Mapping[str, ToolOptions] = DEFAULT_OPTIONS,
    connect_timeout: float = 30.0,
) -> MCPTools:
    """The tools of an MCP server: ``stdio(...)``, ``http(...)`` or a URL. See ``MCPTools``."""
    return MCPTools(
        http(server) if isinstance(server, str) else server,
        include=include,
        exclude=exclude,
        prefix=prefix,
        rename=rename,
        timeout=timeout,
        timeouts=timeouts,
        idempotent=idempotent,
        options=options,
        connect_timeout=connect_timeout,
    )
