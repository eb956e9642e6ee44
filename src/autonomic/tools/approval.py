"""Whether a tool call must be approved by a person before it runs.

A tool says so with ``@tool(requires_approval=True)`` or with a function of the call's
arguments. The answer fails closed: a rule that raises, or answers anything but a bool,
means approval is required, and ``ApprovalCheck.reason`` says why.
"""

from __future__ import annotations

import copy
from typing import Any, NamedTuple

from autonomic.resilience.describe import describe_error
from autonomic.tools.options import options_of

__all__ = ["ApprovalCheck", "approval_check", "needs_approval"]


class ApprovalCheck(NamedTuple):
    required: bool
    reason: str


def _name(tool: object) -> str:
    try:
        return str(tool.spec.name)  # type: ignore[attr-defined]
    except Exception:
        return type(tool).__name__


def approval_check(tool: object, args: dict[str, Any]) -> ApprovalCheck:
    """Whether calling ``tool`` with ``args`` needs approval, and why; never raises.

    The rule gets a copy of ``args``, so it cannot change what would run.
    """
    rule = options_of(tool).requires_approval
    name = _name(tool)
    if rule is True:
        return ApprovalCheck(True, f"tool {name} always requires approval")
    if rule is False:
        return ApprovalCheck(False, f"tool {name} needs no approval")
    try:
        answer = rule(copy.deepcopy(args))
    except BaseException as e:  # even SystemExit: the question must get an answer
        return ApprovalCheck(
            True,
            f"the approval rule of tool {name} failed ({describe_error(e, 300)}), "
            "so approval is required",
        )
    if not isinstance(answer, bool):
        return ApprovalCheck(
            True,
            f"the approval rule of tool {name} answered a {type(answer).__name__}, not a bool, "
            "so approval is required",
        )
    verdict = "requires approval" if answer else "needs no approval"
    return ApprovalCheck(answer, f"the approval rule of tool {name} says this call {verdict}")


def needs_approval(tool: object, args: dict[str, Any]) -> bool:
    """Whether calling ``tool`` with ``args`` needs approval; never raises.

    ``approval_check`` gives the reason too."""
    return approval_check(tool, args).required
