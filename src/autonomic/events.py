"""The typed events a run's log is made of, and their encoding.

A run is an append-only sequence of events, numbered from 1 and never edited. Every event
type is registered once (``@register_event``); the registry is what decodes stored events,
so strategies, guards and memory can define event types of their own. Each type carries a
schema version; an event written by an older release is upgraded on read by the
functions in ``UPGRADES``, so a run started by an older release resumes under a newer one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

import msgspec

from autonomic.errors import ConfigError, StoreCorrupt
from autonomic.messages import ToolCall, Usage

__all__ = [
    "TERMINAL_EVENTS",
    "ActionCompleted",
    "ActionDeferred",
    "ActionFailed",
    "ActionRequested",
    "ActionRetried",
    "ApprovalDenied",
    "ApprovalGranted",
    "ApprovalRequested",
    "BudgetReserved",
    "BudgetWarned",
    "CancelRequested",
    "ChildCompleted",
    "ChildSpawned",
    "CircuitChanged",
    "EgressRequested",
    "Event",
    "EventRecord",
    "GuardTripped",
    "InboxRefused",
    "ModelCalled",
    "ModelResponded",
    "NewEvent",
    "Resumed",
    "RunCancelled",
    "RunCompleted",
    "RunDead",
    "RunFailed",
    "RunForked",
    "RunStarted",
    "SignalReceived",
    "Suspended",
    "Thought",
    "TimerFired",
    "decode_event",
    "encode_event",
    "event_to_dict",
    "event_types",
    "register_event",
]

BLOB_THRESHOLD = 2048
"""String fields longer than this (in bytes) are stored once as a blob and referenced."""


class Event(msgspec.Struct, frozen=True, gc=False, tag_field="type", omit_defaults=True):
    """Base of every event. ``VERSION`` is bumped when a type's fields change."""

    VERSION: ClassVar[int] = 1
    LARGE_FIELDS: ClassVar[tuple[str, ...]] = ()


E = TypeVar("E", bound=type[Event])

_TYPES: dict[str, type[Event]] = {}
_DECODERS: dict[type[Event], msgspec.json.Decoder[Any]] = {}


def register_event(cls: E) -> E:
    """Make an event type known to the log (use as a class decorator).

    Its tag is the class name, which must be unique: it is what the store keeps.
    """
    name = cls.__name__
    known = _TYPES.get(name)
    if known is not None and known is not cls:
        raise ConfigError(
            f"two event types are named {name!r} ({known.__module__} and {cls.__module__}): "
            "rename one"
        )
    _TYPES[name] = cls
    _DECODERS[cls] = msgspec.json.Decoder(cls)
    return cls


def event_types() -> Mapping[str, type[Event]]:
    """Every registered event type by name."""
    return _TYPES


# -- the run's lifecycle -------------------------------------------------------------------


@register_event
class RunStarted(Event, frozen=True, tag=True):
    """``lineage`` names the agents of the run's ancestors, root first (for cycle checks)."""

    goal: str
    agent: str
    agent_path: str | None = None
    agent_digest: str = ""
    model: str = ""
    limits: dict[str, Any] = {}
    parent_run_id: str | None = None
    root_run_id: str | None = None
    lineage: tuple[str, ...] = ()
    tenant: str | None = None
    budget: dict[str, float] | None = None
    """What a child was given out of its parent's budget (``cost_usd``, ``tokens``)."""
    priority: int = 0
    """The run's claim priority (a child's is its parent's unless its spawn named one)."""
    LARGE_FIELDS: ClassVar[tuple[str, ...]] = ("goal",)


@register_event
class RunForked(Event, frozen=True, tag=True):
    """First event of a fork's own history: everything before it came from ``from_run_id``."""

    from_run_id: str
    at_seq: int


@register_event
class Suspended(Event, frozen=True, tag=True):
    """The run waits, holding no process, task or lease, until one of ``waiting_on``
    arrives in its inbox or ``wake_at`` (a UNIX time) passes."""

    reason: str
    waiting_on: tuple[str, ...] = ()
    wake_at: float | None = None


@register_event
class Resumed(Event, frozen=True, tag=True):
    """A process took the run over: after a wait, a crash, or by hand."""

    by: str
    reason: str = ""


@register_event
class RunCompleted(Event, frozen=True, tag=True):
    answer: str
    LARGE_FIELDS: ClassVar[tuple[str, ...]] = ("answer",)


@register_event
class RunFailed(Event, frozen=True, tag=True):
    error: str
    LARGE_FIELDS: ClassVar[tuple[str, ...]] = ("error",)


@register_event
class RunCancelled(Event, frozen=True, tag=True):
    by: str = "user"


@register_event
class RunDead(Event, frozen=True, tag=True):
    """The run crashed its process ``recoveries`` times; it waits for a person to resume it."""

    reason: str
    recoveries: int = 0


TERMINAL_EVENTS = (RunCompleted, RunFailed, RunCancelled)


# -- the brain ------------------------------------------------------------------------------


@register_event
class ModelCalled(Event, frozen=True, tag=True):
    """Committed before the request is sent, so a call in flight is never invisible."""

    purpose: str
    request_digest: str
    model: str = ""


@register_event
class ModelResponded(Event, frozen=True, tag=True):
    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = Usage()
    model: str = ""
    cost: float | None = None
    latency_ms: float = 0.0
    meta: dict[str, Any] = {}
    purpose: str = "act"
    LARGE_FIELDS: ClassVar[tuple[str, ...]] = ("text",)


@register_event
class Thought(Event, frozen=True, tag=True):
    rationale: str
    plan: tuple[str, ...] = ()


# -- the body -------------------------------------------------------------------------------


@register_event
class ActionRequested(Event, frozen=True, tag=True):
    """Committed before the tool runs. ``approval`` is the digest a person approved."""

    action_id: str
    call_id: str
    tool: str
    args: dict[str, Any] = {}
    rationale: str = ""
    idempotent: bool = False
    approval: str | None = None


@register_event
class ActionCompleted(Event, frozen=True, tag=True):
    """``observation`` is what the model sees; when the output was too long for that,
    ``full_output`` keeps all of it (stored once, as a blob)."""

    action_id: str
    observation: str
    duration_ms: float = 0.0
    attempts: int = 1
    full_output: str = ""
    LARGE_FIELDS: ClassVar[tuple[str, ...]] = ("observation", "full_output")


@register_event
class ActionRetried(Event, frozen=True, tag=True):
    """An attempt failed in a way worth retrying; the next one starts after ``delay_s``."""

    action_id: str
    attempt: int
    error: str
    delay_s: float


@register_event
class ActionFailed(Event, frozen=True, tag=True):
    action_id: str
    error: str
    retryable: bool = False
    duration_ms: float = 0.0
    attempts: int = 1
    LARGE_FIELDS: ClassVar[tuple[str, ...]] = ("error",)


@register_event
class ActionDeferred(Event, frozen=True, tag=True):
    """The action is a durable wait: it ends when ``children`` end or at ``wake_at``."""

    action_id: str
    children: tuple[str, ...] = ()
    wake_at: float | None = None


@register_event
class EgressRequested(Event, frozen=True, tag=True):
    """Sandboxed code asked the egress proxy for a host; ``allowed`` says if it got through."""

    action_id: str
    method: str
    host: str
    port: int
    allowed: bool
    target: str = ""
    reason: str = ""


@register_event
class CircuitChanged(Event, frozen=True, tag=True):
    """A circuit breaker in front of a model endpoint or a tool changed state."""

    target: str
    from_state: str
    to_state: str
    reason: str = ""


@register_event
class GuardTripped(Event, frozen=True, tag=True):
    guard: str
    detail: str


@register_event
class BudgetReserved(Event, frozen=True, tag=True):
    """Recorded with the ``ModelCalled`` it belongs to: what the call may cost at most
    (prompt plus ``max_tokens``). It counts as spent until the response settles it, and
    for good if the process died while the call was in flight. ``wrap_up``: the last
    turn, with tools disabled, before the run waits for more budget."""

    tokens: int
    cost_usd: float
    wrap_up: bool = False


@register_event
class BudgetWarned(Event, frozen=True, tag=True):
    """The run used ``used`` (a fraction) of one of its limits; the model is told what is left."""

    detail: str
    used: float


# -- approvals ------------------------------------------------------------------------------


@register_event
class ApprovalRequested(Event, frozen=True, tag=True):
    """A tool call waits for a person. ``digest`` binds the approval to exactly this call:
    run, call id, tool, arguments and policy version."""

    action_id: str
    call_id: str
    tool: str
    digest: str
    args: dict[str, Any] = {}
    rationale: str = ""
    reason: str = ""


@register_event
class ApprovalGranted(Event, frozen=True, tag=True):
    """``args``, when set, are the arguments the approver edited; they run, under
    ``approved_digest``, instead of the requested ones."""

    digest: str
    approver: str
    signature: str
    args: dict[str, Any] | None = None
    approved_digest: str = ""


@register_event
class ApprovalDenied(Event, frozen=True, tag=True):
    digest: str
    approver: str
    signature: str
    reason: str = ""


# -- the inbox: what arrives from outside -----------------------------------------------------


@register_event
class SignalReceived(Event, frozen=True, tag=True):
    name: str
    data: Any = None


@register_event
class TimerFired(Event, frozen=True, tag=True):
    at: float


@register_event
class CancelRequested(Event, frozen=True, tag=True):
    """Delivered to a run's inbox; the run records its cancellation when it reads it."""

    by: str = "user"


@register_event
class InboxRefused(Event, frozen=True, tag=True):
    """Something arrived that the run will not act on (a forged or stale approval...)."""

    key: str
    reason: str


# -- child runs -------------------------------------------------------------------------------


@register_event
class ChildSpawned(Event, frozen=True, tag=True):
    """A child run was created in the same commit as this event."""

    child_run_id: str
    agent: str
    goal: str
    budget: dict[str, float] | None = None
    """What the child was given out of this run's budget; held until it ends."""
    LARGE_FIELDS: ClassVar[tuple[str, ...]] = ("goal",)


@register_event
class ChildCompleted(Event, frozen=True, tag=True):
    child_run_id: str
    status: str
    answer: str = ""
    error: str = ""
    usage: Usage = Usage()
    cost: float = 0.0
    spent: dict[str, float] | None = None
    """What the child's budget ledger counted (unpriced calls and calls a crash cut
    short included), which the parent counts instead of ``cost`` and ``usage``."""
    LARGE_FIELDS: ClassVar[tuple[str, ...]] = ("answer", "error")


Upgrade = Callable[[dict[str, Any]], dict[str, Any]]
UPGRADES: dict[tuple[str, int], Upgrade] = {}
"""(type name, from version) -> function turning that version's fields into the next's."""


class NewEvent(msgspec.Struct, frozen=True, gc=False):
    """An event encoded for the store: its body, and any blobs the body refers to."""

    type: str
    version: int
    ts: float
    body: bytes
    blobs: dict[str, bytes] = {}


class EventRecord(msgspec.Struct, frozen=True, gc=False):
    """An event as the store returns it, still encoded."""

    seq: int
    type: str
    version: int
    ts: float
    body: bytes


_encoder = msgspec.json.Encoder()
_dict_decoder = msgspec.json.Decoder(dict[str, Any])
BLOB_REF = "$blob:"
_BLOB_REF_BYTES = BLOB_REF.encode()


def blob_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def encode_event(event: Event, ts: float) -> NewEvent:
    """Encode an event, moving its large string fields into content-addressed blobs.

    An event that would not read back (a field of the wrong type, a lone surrogate, a
    type that is not registered) is refused with ConfigError: a log must never hold
    what cannot be decoded.
    """
    cls = type(event)
    decoder = _DECODERS.get(cls)
    if decoder is None or _TYPES.get(cls.__name__) is not cls:
        raise ConfigError(f"{cls.__name__} is not a registered event type (@register_event)")
    blobs: dict[str, bytes] = {}
    replaced: dict[str, str] = {}
    try:
        for name in event.LARGE_FIELDS:
            value = getattr(event, name)
            if not isinstance(value, str):
                raise TypeError(f"its {name} is a {type(value).__name__}, not a string")
            # a short value that merely looks like a reference is stored as a blob too
            if len(value) > BLOB_THRESHOLD or value.startswith(BLOB_REF):
                data = value.encode()
                digest = blob_digest(data)
                blobs[digest] = data
                replaced[name] = BLOB_REF + digest
        if replaced:
            event = msgspec.structs.replace(event, **replaced)
        body = _encoder.encode(event)
        decoder.decode(body)
    except (TypeError, ValueError, msgspec.MsgspecError) as e:
        raise ConfigError(f"a {cls.__name__} event cannot be recorded: {e}") from None
    return NewEvent(cls.__name__, event.VERSION, ts, body, blobs)


def blob_refs(record: EventRecord) -> list[str]:
    """Digests of the blobs an encoded event refers to (cheap check first)."""
    if _BLOB_REF_BYTES not in record.body:
        return []
    cls = _TYPES.get(record.type)
    try:
        fields = _dict_decoder.decode(record.body)
    except msgspec.DecodeError as e:
        raise StoreCorrupt(f"event {record.seq} ({record.type}) cannot be decoded: {e}") from e
    return [
        value[len(BLOB_REF) :]
        for name in (cls.LARGE_FIELDS if cls else ())
        if isinstance(value := fields.get(name), str) and value.startswith(BLOB_REF)
    ]


def decode_event(record: EventRecord, blobs: Mapping[str, bytes] | None = None) -> Event:
    """Decode a stored event: upgrade old versions, then put its blobs back in place."""
    cls = _TYPES.get(record.type)
    if cls is None:
        raise StoreCorrupt(
            f"event {record.seq} has unknown type {record.type!r}: import the module that "
            "defines it, or upgrade autonomic"
        )
    if record.version > cls.VERSION:
        raise StoreCorrupt(
            f"event {record.seq} ({record.type} v{record.version}) was written by a newer "
            "autonomic: upgrade autonomic to read this run"
        )
    if record.version < cls.VERSION and any(
        (record.type, v) not in UPGRADES for v in range(record.version, cls.VERSION)
    ):
        raise StoreCorrupt(
            f"event {record.seq} ({record.type} v{record.version}) has a schema version this "
            f"autonomic cannot upgrade (it reads v{cls.VERSION})"
        )
    try:
        if record.version == cls.VERSION and _BLOB_REF_BYTES not in record.body:
            event: Event = _DECODERS[cls].decode(record.body)
            return event
        fields = _dict_decoder.decode(record.body)
        version = record.version
        while version < cls.VERSION:
            fields = UPGRADES[(record.type, version)](fields)
            version += 1
        for name in cls.LARGE_FIELDS:
            value = fields.get(name)
            if isinstance(value, str) and value.startswith(BLOB_REF):
                digest = value[len(BLOB_REF) :]
                if blobs is None or digest not in blobs:
                    raise StoreCorrupt(
                        f"event {record.seq} ({record.type}) refers to blob {digest[:12]}, "
                        "which is missing from the store"
                    )
                fields[name] = blobs[digest].decode()
        fields["type"] = record.type
        upgraded: Event = msgspec.convert(fields, cls)
        return upgraded
    except (msgspec.DecodeError, msgspec.ValidationError, KeyError, UnicodeDecodeError) as e:
        raise StoreCorrupt(f"event {record.seq} ({record.type}) cannot be decoded: {e}") from e


def event_to_dict(event: Event) -> dict[str, Any]:
    """A JSON-ready dict of an event, for ``--json`` output and the bus."""
    result: dict[str, Any] = msgspec.to_builtins(event)
    return result
