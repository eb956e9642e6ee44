"""The Tool protocol, and ``@tool``, which turns a typed Python function into one.

A tool has a ``ToolSpec`` (name, description, JSON schema), a few execution settings
(timeout, idempotency, ``options``) and ``invoke``. Function tools, MCP tools and sandboxed
tools all look the same to the runtime.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, get_type_hints, overload, runtime_checkable

import docstring_parser
import pydantic

from autonomic.errors import ConfigError, ToolError
from autonomic.events import EgressRequested, Event
from autonomic.messages import ToolSpec
from autonomic.tools.observations import observation_of, observation_text
from autonomic.tools.options import DEFAULT_OPTIONS, ToolOptions
from autonomic.tools.threads import run_in_thread

__all__ = ["TOOL_EVENTS", "FunctionTool", "Tool", "ToolContext", "allow_tool_events", "tool"]

_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

TOOL_EVENTS: set[type[Event]] = {EgressRequested}
"""The events a tool may add to its run's log; every other event is the runtime's to record.
Extended in place (never rebound), so every importer sees the same set."""


def allow_tool_events(*types: type[Event]) -> None:
    """Let tools record these (registered) event types too, e.g. memory's ``Remembered``."""
    TOOL_EVENTS.update(types)


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What a tool may know about the call it serves.

    ``idempotency_key`` is the action id: the same on every re-run of one action, so a
    tool can pass it to an external API to make a retried effect happen once.
    ``secrets`` holds the secrets the tool declared, read when it runs. ``sink`` is where
    ``record`` puts events; the executor gives one that is safe from any thread.
    """

    run_id: str
    action_id: str
    attempt: int = 1
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    sink: Callable[[Event], None] | None = field(default=None, repr=False, compare=False)

    @property
    def idempotency_key(self) -> str:
        return self.action_id

    def secret(self, name: str) -> str:
        try:
            return self.secrets[name]
        except KeyError:
            raise ToolError(f"secret {name} was not declared by this tool") from None

    def record(self, event: Event) -> None:
        """Add ``event`` to the run's log (e.g. each network request the tool's code made).

        Only ``TOOL_EVENTS`` about this action are accepted; callable from any thread.
        """
        if not isinstance(event, tuple(TOOL_EVENTS)):
            allowed = ", ".join(sorted(t.__name__ for t in TOOL_EVENTS))
            raise ToolError(
                f"a tool may record only {allowed}, not {type(event).__name__}: "
                "the runtime records everything else"
            )
        action_id = getattr(event, "action_id", self.action_id)
        if action_id != self.action_id:
            raise ToolError(
                f"a tool may record events of its own action {self.action_id!r} only, "
                f"not of {action_id!r}"
            )
        if self.sink is not None:
            self.sink(event)


@runtime_checkable
class Tool(Protocol):
    @property
    def spec(self) -> ToolSpec: ...

    @property
    def idempotent(self) -> bool: ...

    @property
    def timeout(self) -> float | None: ...

    @property
    def options(self) -> ToolOptions:
        """Retries, breaker, rate limit, output caps, secrets, approval: the defaults unless set."""
        return DEFAULT_OPTIONS

    async def invoke(self, arguments: dict[str, Any], context: ToolContext) -> str:
        """Validate ``arguments``, run, and return the observation text.

        Raises ``ToolError`` (bad arguments included) for a failure the model should see.
        """
        ...


def _paragraphs(text: str) -> str:
    """``text`` with the lines of each paragraph joined, paragraphs a blank line apart."""
    blocks = re.split(r"\n\s*\n", text.strip())
    return "\n\n".join(
        " ".join(line.strip() for line in b.splitlines() if line.strip()) for b in blocks
    )


def _docstring_parts(doc: str) -> tuple[str, dict[str, str]]:
    """The description and per-argument descriptions of a Google, NumPy or Sphinx docstring."""
    try:
        parsed = docstring_parser.parse(doc)
    except docstring_parser.ParseError:
        return _paragraphs(inspect.cleandoc(doc)), {}
    text = parsed.short_description or ""
    if parsed.long_description:
        between = "\n\n" if parsed.blank_after_short_description else "\n"
        text = f"{text}{between}{parsed.long_description}"
    params = {p.arg_name: _paragraphs(p.description or "") for p in parsed.params}
    return _paragraphs(text), {name: text for name, text in params.items() if text}


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """The type hints of a function, or of the ``__call__`` of a callable object."""
    for target in (fn, type(fn).__call__):
        try:
            return get_type_hints(target, include_extras=True)
        except TypeError:
            continue
    return {}


def _argument_model(
    fn: Callable[..., Any], name: str, docs: dict[str, str]
) -> tuple[type[pydantic.BaseModel], tuple[str, ...]]:
    """A pydantic model of the function's parameters, and which ones take the ToolContext."""
    hints = _hints(fn)
    fields: dict[str, Any] = {}
    context_params: list[str] = []
    for param in inspect.signature(fn).parameters.values():
        annotation = hints.get(param.name, Any)
        if annotation is ToolContext:
            context_params.append(param.name)
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ConfigError(f"tool {name}: *args and **kwargs cannot be described")
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (
            annotation,
            pydantic.Field(default, description=docs.get(param.name)),
        )
    model = pydantic.create_model(
        f"{name}_arguments",
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


def _is_async(fn: Callable[..., Any]) -> bool:
    # an object whose __call__ is async counts too
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


def _check_timeout(name: str, timeout: object) -> float | None:
    if timeout is None:
        return None
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise ConfigError(
            f"tool {name}: timeout must be a number of seconds > 0 or None, got {timeout!r}"
        )
    return float(timeout)


class FunctionTool:
    """A tool backed by a Python function.

    Sync functions run on a daemon thread (``tools.threads``), where their result is also
    turned into text; an async function's non-string result is turned into text on one.
    """

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
        tool_name = name or getattr(fn, "__name__", "")
        if not isinstance(tool_name, str) or not _NAME.match(tool_name):
            raise ConfigError(f"tool name {tool_name!r} must match {_NAME.pattern}")
        if inspect.isasyncgenfunction(fn):
            raise ConfigError(
                f"tool {tool_name} is an async generator: return a value (a list, a string)"
            )
        if not isinstance(options, ToolOptions):
            raise ConfigError(f"tool {tool_name}: options must be a ToolOptions")
        summary, docs = _docstring_parts(fn.__doc__ or "")
        self.fn = fn
        self._arguments, self._context_params = _argument_model(fn, tool_name, docs)
        self._fields = tuple(self._arguments.model_fields)
        self._spec = ToolSpec(
            name=tool_name,
            description=description or summary or tool_name,
            parameters=_schema(self._arguments),
        )
        self._timeout = _check_timeout(tool_name, timeout)
        self._idempotent = idempotent
        self.options = options
        self._is_async = _is_async(fn)

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
        limit = self.options.max_output_chars
        if self._is_async:
            return await observation_of(await self.fn(**kwargs), max_chars=limit)
        return await run_in_thread(self._call, kwargs, limit)

    def _call(self, kwargs: dict[str, Any], limit: int) -> str:
        """Run the function and read its result, both on the tool's thread."""
        return observation_text(self.fn(**kwargs), max_chars=limit)

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
    are ``ToolOptions``: ``retries``, ``rate_per_s``, ``secrets``, ``max_observation_chars``,
    ``requires_approval``...; a bad value is a ``ConfigError`` here, not at the first call.
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
