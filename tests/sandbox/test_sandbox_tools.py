"""The built-in tools: run_python and run_shell, as an agent's executor sees them."""

from __future__ import annotations

import pytest

from autonomic.errors import ToolError
from autonomic.sandbox import BwrapSandbox, SandboxLimits
from autonomic.sandbox.base import ResourceUsage, SandboxResult
from autonomic.tools.base import Tool, ToolContext
from autonomic.tools.sandboxed import SandboxTool, format_result, run_python, run_shell

from .conftest import requires_bwrap

CONTEXT = ToolContext(run_id="run-1", action_id="act-1")


@requires_bwrap
def test_tools_in_one_line() -> None:
    python, shell = run_python(), run_shell()
    assert isinstance(python, Tool) and isinstance(shell, SandboxTool)
    assert python.spec.name == "run_python" and shell.spec.name == "run_shell"
    assert python.spec.parameters == {
        "type": "object",
        "properties": {
            "code": {"type": "string", "description": "Python source code, run as a script"}
        },
        "required": ["code"],
        "additionalProperties": False,
    }
    assert "no network" in python.spec.description and "30s" in python.spec.description
    assert python.idempotent and python.timeout == 40.0
    assert isinstance(python.sandbox, BwrapSandbox)


@requires_bwrap
async def test_run_python_observes_output_and_files(no_leaks: None) -> None:
    tool = run_python()
    observation = await tool.invoke(
        {"code": "print('hello')\nopen('report.md', 'w').write('# done')"}, CONTEXT
    )
    assert observation.startswith("ok (")
    assert "--- stdout ---\nhello" in observation
    assert "--- files written ---\nreport.md (6 bytes):\n# done" in observation


@requires_bwrap
async def test_failures_are_observations(no_leaks: None) -> None:
    tool = run_python(limits=SandboxLimits(timeout=1))
    assert tool.timeout == 11.0
    crashed = await tool.invoke({"code": "import sys; sys.exit('no luck')"}, CONTEXT)
    assert crashed.startswith("exit code 1") and "--- stderr ---\nno luck" in crashed
    slow = await tool.invoke({"code": "import time; time.sleep(30)"}, CONTEXT)
    assert "limit hit: timeout after 1s" in slow


@requires_bwrap
async def test_run_shell(no_leaks: None) -> None:
    observation = await run_shell().invoke({"command": "echo hi | tr a-z A-Z >&2"}, CONTEXT)
    assert observation.splitlines()[1:] == ["--- stderr ---", "HI"]


@requires_bwrap
async def test_a_shared_open_sandbox(no_leaks: None) -> None:
    async with BwrapSandbox(warm=1) as box:
        await box.warm_up()
        tool = run_python(box, name="python")
        assert tool.sandbox is box and tool.spec.name == "python"
        assert "--- stdout ---\n4" in await tool.invoke({"code": "print(2 + 2)"}, CONTEXT)


@requires_bwrap
@pytest.mark.parametrize("arguments", [{}, {"code": 1}, {"code": "1", "more": 2}, {"cmd": "x"}])
async def test_bad_arguments_are_tool_errors(arguments: dict[str, object]) -> None:
    with pytest.raises(ToolError, match="expected one string argument 'code'"):
        await run_python().invoke(arguments, CONTEXT)


@requires_bwrap
async def test_a_sandbox_that_cannot_start_is_a_retryable_tool_error(no_leaks: None) -> None:
    tool = run_python(BwrapSandbox(python="/bin/false", warm=0))
    with pytest.raises(ToolError, match="the sandbox could not run it") as caught:
        await tool.invoke({"code": "print(1)"}, CONTEXT)
    assert caught.value.retryable


def test_observations_are_clipped_and_binary_files_named() -> None:
    result = SandboxResult(
        exit_code=0,
        stdout="a" * 5_000 + "b" * 5_000,
        stderr="",
        usage=ResourceUsage(wall_seconds=0.5, cpu_seconds=0.1, peak_memory_bytes=1),
        files={"blob.bin": b"\xff\xfe"},
        violations=("stdout truncated at 1 MiB",),
    )
    text = format_result(result)
    assert text.startswith("ok (0.50s)\nlimit hit: stdout truncated at 1 MiB\n--- stdout ---\n")
    assert "a" * 4_000 + "\n[... 2000 characters cut ...]\n" + "b" * 4_000 + "\n" in text
    assert text.endswith("--- files written ---\nblob.bin (2 bytes, binary)")
