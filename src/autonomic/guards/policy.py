"""Tool policy: which tools an agent may call, with which arguments, how often, and when
a person must approve the call first.

Declared on the agent (``Agent(guards=[ToolPolicy(...)])``), frozen, and part of the
agent's digest, so a run can neither loosen it nor resume under a different one
unnoticed. A refused call becomes an error the model sees and a ``GuardTripped`` event
with the rule that refused it.

Tool names in ``allow`` and ``deny`` may be shell-style patterns (``"fs_*"``). An
argument rule is a predicate on the arguments (``True`` to allow; ``False`` or a reason
to refuse) or a JSON schema the arguments must also satisfy (a refinement of the tool's
own schema; needs ``pip install "autonomic[guards]"``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import msgspec

from autonomic.errors import ConfigError
from autonomic.events import ActionRequested, ApprovalRequested
from autonomic.guards.base import ALLOW, CallVerdict, Deny, Guard, RequireApproval
from autonomic.messages import ToolCall
from autonomic.state import RunState, folds, register_slot

__all__ = ["ArgRule", "ToolPolicy", "ToolUse"]

Predicate = Callable[[dict[str, Any]], "bool | str"]
ArgRule = Predicate | Mapping[str, Any]
"""A predicate on a call's arguments, or a JSON schema they must satisfy."""


@register_slot
class ToolUse(msgspec.Struct, gc=False):
    """How many calls of each tool a run has asked for (approved or not)."""

    calls: dict[str, int] = msgspec.field(default_factory=dict)


@folds(ActionRequested, ApprovalRequested)
def _used(s: RunState, e: ActionRequested | ApprovalRequested, ts: float) -> None:
    if isinstance(e, ActionRequested) and e.approval is not None:
        return  # counted when its approval was asked for
    calls = s.slot(ToolUse).calls
    calls[e.tool] = calls.get(e.tool, 0) + 1


def _frozen_rules(
    rules: Mapping[str, ArgRule | Sequence[ArgRule]],
) -> Mapping[str, tuple[ArgRule, ...]]:
    out: dict[str, tuple[ArgRule, ...]] = {}
    for tool, given in rules.items():
        listed = (given,) if callable(given) or isinstance(given, Mapping) else tuple(given)
        for rule in listed:
            if not callable(rule) and not isinstance(rule, Mapping):
                raise ConfigError(
                    f"the argument rule for {tool!r} is a {type(rule).__name__}: give "
                    "a predicate on the arguments or a JSON schema (a dict)"
                )
        out[tool] = tuple(
            MappingProxyType(dict(r)) if isinstance(r, Mapping) else r for r in listed
        )
    return MappingProxyType(out)


@dataclass(frozen=True)
class ToolPolicy(Guard):
    """``allow``: only these tools (None: any); ``deny``: never these. ``rules``: tool ->
    argument rule(s). ``limits``: tool -> most calls per run. ``approval``: tool ->
    predicate on the arguments (or ``True``) saying when a person must approve the call."""

    allow: Sequence[str] | None = None
    deny: Sequence[str] = ()
    rules: Mapping[str, ArgRule | Sequence[ArgRule]] = field(default_factory=dict)
    limits: Mapping[str, int] = field(default_factory=dict)
    approval: Mapping[str, Predicate | bool] = field(default_factory=dict)
    name: str = "policy"
    _validators: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)
    _rules: Mapping[str, tuple[ArgRule, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if isinstance(self.allow, str) or isinstance(self.deny, str):
            raise ConfigError("ToolPolicy allow and deny are lists of tool names, not a string")
        for tool, limit in self.limits.items():
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                raise ConfigError(f"ToolPolicy limit for {tool!r} must be a whole number >= 0")
        for tool, when in self.approval.items():
            if not isinstance(when, bool) and not callable(when):
                raise ConfigError(
                    f"ToolPolicy approval for {tool!r} must be True or a predicate on the arguments"
                )
        setattr_ = object.__setattr__
        setattr_(self, "allow", None if self.allow is None else tuple(self.allow))
        setattr_(self, "deny", tuple(self.deny))
        setattr_(self, "_rules", _frozen_rules(self.rules))
        setattr_(self, "rules", self._rules)
        setattr_(self, "limits", MappingProxyType(dict(self.limits)))
        setattr_(self, "approval", MappingProxyType(dict(self.approval)))
        for tool, listed in self._rules.items():
            for rule in listed:
                if isinstance(rule, Mapping):
                    self._validator(tool, rule)  # a bad schema fails here, not mid-run

    def check_call(self, state: RunState, call: ToolCall) -> CallVerdict:
        name, args = call.name, dict(call.arguments)
        if _matches(name, self.deny):
            return Deny(f"the tool {name!r} is denied by policy")
        if self.allow is not None and not _matches(name, self.allow):
            return Deny(f"the tool {name!r} is not among the tools this agent may call")
        for pattern, listed in self._rules.items():
            if fnmatch.fnmatchcase(name, pattern):
                for rule in listed:
                    why = self._refusal(pattern, rule, args)
                    if why is not None:
                        return Deny(f"{name}: {why}")
        limit = self.limits.get(name)
        used = state.slot(ToolUse).calls.get(name, 0)
        if limit is not None and used >= limit:
            return Deny(f"{name} may be called at most {limit} time(s) per run")
        when = self.approval.get(name)
        if when is True or (callable(when) and when(args)):
            return RequireApproval(f"policy: {name} with these arguments needs approval")
        return ALLOW

    def _refusal(self, pattern: str, rule: ArgRule, args: dict[str, Any]) -> str | None:
        if isinstance(rule, Mapping):
            error = next(iter(self._validator(pattern, rule).iter_errors(args)), None)
            if error is None:
                return None
            where = "/".join(str(p) for p in error.absolute_path)
            return f"arguments break the policy{f' at {where}' if where else ''}: {error.message}"
        verdict = rule(args)
        if verdict is True:
            return None
        if isinstance(verdict, str) and verdict:
            return verdict
        return f"arguments refused by rule {getattr(rule, '__qualname__', repr(rule))}"

    def _validator(self, tool: str, schema: Mapping[str, Any]) -> Any:
        cache = self._validators
        key = f"{tool}:{id(schema)}"
        found = cache.get(key)
        if found is None:
            try:
                from jsonschema.exceptions import SchemaError
                from jsonschema.validators import validator_for
            except ImportError:
                raise ConfigError(
                    'JSON-schema argument rules need jsonschema: pip install "autonomic[guards]"'
                ) from None
            plain = _plain(schema)
            cls = validator_for(plain)
            try:
                cls.check_schema(plain)
            except SchemaError as e:
                raise ConfigError(
                    f"the argument schema for {tool!r} is invalid: {e.message}"
                ) from None
            found = cache[key] = cls(plain)
        return found

    def digest_spec(self) -> dict[str, Any]:
        """What the agent's digest records of this policy."""
        return {
            "allow": self.allow,
            "deny": self.deny,
            "rules": {t: [_rule_spec(r) for r in rs] for t, rs in self._rules.items()},
            "limits": dict(self.limits),
            "approval": {t: _rule_spec(w) for t, w in self.approval.items()},
        }


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _rule_spec(rule: object) -> Any:
    if isinstance(rule, Mapping):
        return _plain(rule)
    if isinstance(rule, bool):
        return rule
    return f"rule {getattr(rule, '__qualname__', type(rule).__name__)}"
