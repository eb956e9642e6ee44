"""@tool: schemas from type hints and docstrings, validation, and the executor's error handling."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

import pydantic
import pytest

from autonomic.errors import ConfigError, ToolError
from autonomic.events import ActionCompleted, ActionFailed, ActionRequested
from autonomic.tools import FunctionTool, ToolContext, tool
from autonomic.tools.executor import execute_action, refusal


@tool
def add(a: int, b: int = 1) -> int:
    """Add two integers.

    Args:
        a: the first number
        b: the second number,
            which defaults to one
    """
    return a + b


@tool(name="lookup", timeout=0.2, idempotent=True)
async def slow_lookup(
    key: Annotated[str, pydantic.Field(min_length=1)], mode: Literal["fast", "slow"] = "fast"
) -> dict[str, str]:
    "Look a key up."
    if mode == "slow":
        await asyncio.sleep(5)
    return {"key": key}


@tool
def whoami(context: ToolContext) -> str:
    "Tell the idempotency key."
    return context.idempotency_key


@tool
def explode() -> str:
    "Always fails."
    raise RuntimeError("kaboom")


@tool
def refuse() -> str:
    "Fails the polite way."
    raise ToolError("quota exhausted, try later", retryable=True)


def request(tool_name: str, **args: object) -> ActionRequested:
    return ActionRequested("run-1", "call-1", tool_name, dict(args))


def test_schema_comes_from_hints_and_docstring() -> None:
    assert add.spec.name == "add"
    assert add.spec.description == "Add two integers."
    params = add.spec.parameters
    assert params["required"] == ["a"]
    assert params["properties"]["a"] == {"type": "integer", "description": "the first number"}
    assert params["properties"]["b"]["default"] == 1
    assert params["properties"]["b"]["description"] == "the second number, which defaults to one"
    assert params["additionalProperties"] is False


def test_constraints_and_enums_reach_the_schema() -> None:
    props = slow_lookup.spec.parameters["properties"]
    assert props["key"]["minLength"] == 1
    assert props["mode"]["enum"] == ["fast", "slow"]
    assert slow_lookup.idempotent and slow_lookup.timeout == 0.2


def test_context_parameters_are_hidden_from_the_model() -> None:
    assert whoami.spec.parameters["properties"] == {}


def test_decorated_function_stays_callable() -> None:
    assert add(2, 3) == 5


def test_bad_tool_definitions_fail_early() -> None:
    with pytest.raises(ConfigError, match="must match"):
        tool(name="no spaces allowed")(lambda: None)

    def variadic(*args: int) -> None: ...

    with pytest.raises(ConfigError, match=r"\*args"):
        tool(variadic)


async def test_valid_call_returns_the_observation() -> None:
    outcome = await execute_action(add, request("add", a=2, b=3), "run")
    assert isinstance(outcome, ActionCompleted) and outcome.observation == "5"
    outcome = await execute_action(slow_lookup, request("lookup", key="k"), "run")
    assert isinstance(outcome, ActionCompleted) and outcome.observation == '{"key":"k"}'


async def test_the_idempotency_key_is_the_action_id() -> None:
    outcome = await execute_action(whoami, request("whoami"), "run")
    assert isinstance(outcome, ActionCompleted) and outcome.observation == "run-1"


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ({"a": "two"}, "a: Input should be a valid integer"),
        ({}, "a: Field required"),
        ({"a": 1, "c": 2}, "c: Extra inputs are not permitted"),
    ],
)
async def test_bad_arguments_become_an_error_observation(args: dict, reason: str) -> None:
    outcome = await execute_action(add, request("add", **args), "run")
    assert isinstance(outcome, ActionFailed)
    assert outcome.error.startswith("invalid arguments") and reason in outcome.error


async def test_exceptions_and_timeouts_become_error_observations() -> None:
    failed = await execute_action(explode, request("explode"), "run")
    assert isinstance(failed, ActionFailed) and failed.error == "RuntimeError: kaboom"
    refused = await execute_action(refuse, request("refuse"), "run")
    assert isinstance(refused, ActionFailed) and refused.retryable
    assert "quota exhausted" in refused.error
    timed_out = await execute_action(slow_lookup, request("lookup", key="k", mode="slow"), "run")
    assert isinstance(timed_out, ActionFailed) and timed_out.error == "timed out after 0.2s"


def test_unknown_tools_and_unparsable_arguments_are_refused_with_the_reason() -> None:
    tools = {"add": add}
    assert refusal(request("add"), tools, None) is None
    assert refusal(request("mul"), tools, None) == "unknown tool 'mul' (available: add)"
    assert "malformed arguments" in (refusal(request("add"), tools, "bad JSON") or "")


@tool
def google(path: str, depth: int = 1, follow: bool = False) -> str:
    """List a directory.

    Only files the agent may read are shown.

    Args:
        path (str): the directory,
            relative to the workspace
        depth (int, optional): how many levels
            to descend. Defaults to 1.
        follow: whether to follow symlinks

    Returns:
        str: one line per file
    """
    return path


@tool
def numpy_style(path: str, depth: int = 1) -> str:
    """List a directory.

    Only files the agent may read are shown.

    Parameters
    ----------
    path : str
        the directory,
        relative to the workspace
    depth : int, optional
        how many levels
        to descend. Defaults to 1.

    Returns
    -------
    str
        one line per file
    """
    return path


@tool
def sphinx_style(path: str, depth: int = 1) -> str:
    """List a directory.

    Only files the agent may read are shown.

    :param str path: the directory,
        relative to the workspace
    :param depth: how many levels
        to descend. Defaults to 1.
    :type depth: int
    :returns: one line per file
    :raises OSError: when the directory is gone
    """
    return path


@pytest.mark.parametrize("listing", [google, numpy_style, sphinx_style], ids=lambda t: t.name)
def test_google_numpy_and_sphinx_docstrings_describe_the_tool(listing: FunctionTool) -> None:
    assert listing.spec.description == (
        "List a directory.\n\nOnly files the agent may read are shown."
    )
    props = listing.spec.parameters["properties"]
    assert props["path"]["description"] == "the directory, relative to the workspace"
    assert props["depth"]["description"] == "how many levels to descend. Defaults to 1."
    assert props["depth"]["type"] == "integer"  # types come from the hints, not the docstring


def test_a_summary_over_two_lines_and_a_docstring_without_arguments() -> None:
    @tool
    def wrapped() -> str:
        """Summarise the report in a few
        words for the model.
        """
        return ""

    @tool
    def undocumented(x: int) -> int:
        return x

    assert wrapped.spec.description == "Summarise the report in a few words for the model."
    assert undocumented.spec.description == "undocumented"
    assert "description" not in undocumented.spec.parameters["properties"]["x"]


async def test_a_callable_object_can_be_a_tool() -> None:
    class Multiplier:
        """Multiply by a fixed factor."""

        def __init__(self, factor: int) -> None:
            self.factor = factor

        async def __call__(self, x: int) -> int:
            return x * self.factor

    triple = tool(name="triple")(Multiplier(3))
    assert triple.spec.parameters["properties"]["x"]["type"] == "integer"
    outcome = await execute_action(triple, request("triple", x=4), "run")
    assert isinstance(outcome, ActionCompleted) and outcome.observation == "12"
