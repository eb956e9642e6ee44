"""``import autonomic`` works where the sandbox cannot (Windows, macOS): it is imported on use."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SRC = Path(__file__).parents[1] / "src"

# Python without the Unix-only modules the sandbox needs, as on Windows.
NO_SANDBOX = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {src!r})
    for name in ("resource", "autonomic.sandbox"):
        sys.modules[name] = None
    import autonomic
    from autonomic import Agent, Runtime, ScriptedModel, run_sync, tool
    assert "autonomic.sandbox" not in sys.modules or sys.modules["autonomic.sandbox"] is None
    agent = Agent("calc", model=ScriptedModel(["5"]))
    assert run_sync(agent, "2+3?", store="memory://").answer == "5"
    try:
        autonomic.run_python
    except ImportError:
        print("sandbox refused on use")
    """
)


def test_import_autonomic_without_the_sandbox() -> None:
    script = NO_SANDBOX.format(src=str(SRC))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "sandbox refused on use"


def test_sandbox_names_load_on_first_use() -> None:
    import autonomic
    from autonomic.sandbox import open_sandbox
    from autonomic.tools.sandboxed import run_python

    assert autonomic.open_sandbox is open_sandbox and autonomic.run_python is run_python
