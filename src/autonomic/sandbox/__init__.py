"""Sandboxes: run untrusted code under isolation and limits, and say what happened.

async with open_sandbox("bwrap") as sandbox:
    result = await sandbox.run_python("print(1)")
"""

from autonomic.sandbox.backends import BACKENDS, open_sandbox
from autonomic.sandbox.base import (
    FileInputs,
    KiB,
    MiB,
    ResourceUsage,
    Sandbox,
    SandboxLimits,
    SandboxResult,
)
from autonomic.sandbox.bwrap import BwrapSandbox
from autonomic.sandbox.egress import EgressRequest
from autonomic.sandbox.process import ProcessSandbox, UnsafeSandboxWarning

__all__ = [
    "BACKENDS",
    "BwrapSandbox",
    "EgressRequest",
    "FileInputs",
    "KiB",
    "MiB",
    "ProcessSandbox",
    "ResourceUsage",
    "Sandbox",
    "SandboxLimits",
    "SandboxResult",
    "UnsafeSandboxWarning",
    "open_sandbox",
]
