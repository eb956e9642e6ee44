"""The Tool protocol, and ``@tool``, which turns a typed Python function into one.

A tool has a ``ToolSpec`` (name, description, JSON schema), a few execution settings
(timeout, idempotency) and ``invoke``. Function tools, MCP tools and sandboxed tools all
look the same to the runtime.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, get_type_hints, overload, runtime_checkable

import pydantic
import pydantic_core

from autonomic.errors import ConfigError, ToolError
from autonomic.events import Event
from autonomic.messages import ToolSpec
from autonomic.tools.options import DEFAULT_OPTIONS, ToolOptions

__all__ = ["FunctionTool", "Tool", "ToolContext", "tool"]

_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What a tool may know about the call it serves.

    ``idempotency_key`` is the action id: the same on every re-run of one action, so a
    tool can pass it to an external API to make a retried effect happen once.
    ``secrets`` holds the secrets the tool declared, read when it runs.
    """

    run_id: str
    action_id: str
    attempt: int = 1
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    record: Callable[[Event], None] | None = field(default=None, repr=False, compare=False)
    """Adds an event to the run's log (e.g. each network request the tool's code made)."""

    @property
    def idempotency_key(self) -> str:
        return self.action_id

    def secret(self, name: str) -> str:
        try:
            return self.secrets[name]
        except KeyError:
            raise ToolError(f"secret {name} was not declared by this tool") from None


@runtime_checkable
class Tool(Protocol):
    @property
    def spec(self) -> ToolSpec: ...

    @property
    def idempotent(self) -> bool: ...

    @property
    def timeout(self) -> float | None: ...

    async def invoke(self, arguments: dict[str, Any], context: ToolContext) -> str:
        """Validate ``arguments``, run, and return the observation text.

        Raises ``ToolError`` (bad arguments included) for a failure the model should see.
        """
        ...


def _docstring_parts(doc: str) -> tuple[str, dict[str, str]]:
    """The summary and per-argument descriptions of a Google-style docstring."""
    summary: list[str] = []
    params: dict[str, str] = {}
    section, current, base_indent = "summary", "", -1
    for raw in inspect.cleandoc(doc).splitlines():
        line = raw.strip()
        header = line.lower().rstrip(":")
        if line.endswith(":") and header in ("args", "arguments", "parameters"):
            section = "args"
            continue
        if line.endswith(":") and header in ("returns", "raises", "yields", "example", "examples"):
            section = "other"
            continue
        if section == "summary":
            summary.append(line)
        elif section == "args" and line:
            indent = len(raw) - len(raw.lstrip())
            match = re.match(r"^(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$", line)
            if match and (base_indent < 0 or indent <= base_indent):
                base_indent = indent
                current = match.group(1)
                params[current] = match.group(2)
            elif current:
                params[current] = f"{params[current]} {line}".strip()
    return " ".join(summary).strip(), params


def _argument_model(
    fn: Callable[..., Any], docs: dict[str, str]
) -> tuple[type[pydantic.BaseModel], tuple[str, ...]]:
    """A pydantic model of the function's parameters, and which ones take the ToolContext."""
    hints = get_type_hints(fn, include_extras=True)
    fields: dict[str, Any] = {}
    context_params: list[str] = []
    for param in inspect.signature(fn).parameters.values():
        annotation = hints.get(param.name, Any)
        if annotation is ToolContext:
            context_params.append(param.name)
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ConfigError(f"tool {fn.__name__}: *args and **kwargs cannot be described")
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (
            annotation,
            pydantic.Field(default, description=docs.get(param.name)),
        )
    model = pydantic.create_model(
        f"{fn.__name__}_arguments",
        __config__=pydantic.ConfigDict(extra="forbid"),
        **fields,
    )
    return model, tuple(context_params)


def _schema(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    schema.setdefault("properties", {})
    return schema


def _describe_validation_error(error: pydantic.ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "arguments"
        parts.append(f"{where}: {item['msg']}")
    return "invalid arguments: " + "; ".join(parts)


def observation_text(value: Any) -> str:
    """How a tool's return value is shown to the model."""
    if isinstance(value, str):
        return value
    return pydantic_core.to_json(value).decode()


class FunctionTool:
    """A tool backed by a Python function (sync functions run in a worker thread)."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = 60.0,
        idempotent: bool = False,
        options: ToolOptions = DEFAULT_OPTIONS,
    ) -> None:
        summary, docs = _docstring_parts(fn.__doc__ or "")
        tool_name = name or fn.__name__
        if not _NAME.match(tool_name):
            raise ConfigError(f"tool name {tool_name!r} must match {_NAME.pattern}")
        self.fn = fn
        self._arguments, self._context_params = _argument_model(fn, docs)
        self._fields = tuple(self._arguments.model_fields)
        self._spec = ToolSpec(
            name=tool_name,
            description=description or summary or tool_name,
            parameters=_schema(self._arguments),
        )
        self._timeout = timeout
        self._idempotent = idempotent
        self.options = options
        self._is_async = inspect.iscoroutinefunction(fn)

    @property
    def spec(self) -> ToolSpec:
        return self._spec

    @property
    def name(self) -> str:
        return self._spec.name

    @property
    def idempotent(self) -> bool:
        return self._idempotent

    @property
    def timeout(self) -> float | None:
        return self._timeout

    async def invoke(self, arguments: dict[str, Any], context: ToolContext) -> str:
        try:
            parsed = self._arguments.model_validate(arguments)
        except pydantic.ValidationError as e:
            raise ToolError(_describe_validation_error(e)) from None
        kwargs = {name: getattr(parsed, name) for name in self._fields}
        for name in self._context_params:
            kwargs[name] = context
        if self._is_async:
            result = await self.fn(**kwargs)
        else:
            result = await asyncio.to_thread(self.fn, **kwargs)
        return observation_text(result)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the underlying function directly, as if it were not decorated."""
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<tool {self.name}>"


@overload
def tool(fn: Callable[..., Any], /) -> FunctionTool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = 60.0,
    idempotent: bool = False,
    **options: Any,
) -> Callable[[Callable[..., Any]], FunctionTool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = 60.0,
    idempotent: bool = False,
    **options: Any,
) -> FunctionTool | Callable[[Callable[..., Any]], FunctionTool]:
    """Make a tool of a typed function; its schema comes from type hints and docstring.

    ``idempotent=True`` lets the runtime re-run the tool after a crash with the same
    idempotency key (declare a ``ToolContext`` parameter to receive it). Further keywords
    are ``ToolOptions``: ``retries``, ``rate_per_s``, ``secrets``, ``max_observation_chars``...
    """
    try:
        tool_options = ToolOptions(**options) if options else DEFAULT_OPTIONS
    except TypeError as e:
        raise ConfigError(f"@tool: {e}") from None

    def wrap(f: Callable[..., Any]) -> FunctionTool:
        return FunctionTool(
            f,
            name=name,
            description=description,
            timeout=timeout,
            idempotent=idempotent,
            options=tool_options,
        )

    return wrap(fn) if fn is not None else wrap
