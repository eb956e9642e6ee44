"""The typed events a run's log is made of, and their encoding.

A run is an append-only sequence of these, numbered from 1 and never edited. Each type
carries a schema version; an event written by an older release is upgraded on read by
the functions in ``UPGRADES``, so a run started by an older release resumes under a
newer one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import msgspec

from autonomic.errors import StoreCorrupt
from autonomic.models.base import ToolCall, Usage

__all__ = [
    "TERMINAL_EVENTS",
    "ActionCompleted",
    "ActionFailed",
    "ActionRequested",
    "ActionRetried",
    "CircuitChanged",
    "EgressRequested",
    "Event",
    "EventRecord",
    "GuardTripped",
    "ModelCalled",
    "ModelResponded",
    "NewEvent",
    "Resumed",
    "RunCancelled",
    "RunCompleted",
    "RunFailed",
    "RunForked",
    "RunStarted",
    "Suspended",
    "Thought",
    "decode_event",
    "encode_event",
    "event_types",
]

BLOB_THRESHOLD = 2048
"""String fields longer than this (in bytes) are stored once as a blob and referenced."""


class Event(msgspec.Struct, frozen=True, gc=False, tag_field="type", omit_defaults=True):
    """Base of every event. ``VERSION`` is bumped when a type's fields change."""

    VERSION: ClassVar[int] = 1
    LARGE_FIELDS: ClassVar[tuple[str, ...]] = ()


class RunStarted(Event, frozen=True, tag=True):
    goal: str
    agent: str
    agent_path: str | None = None
    agent_digest: str = ""
    model: str = ""
    limits: dict[str, Any] = {}
    parent_run_id: str | None = None
    LARGE_FIELDS: ClassVar[tuple[str, ...]] = ("goal",)


class RunForked(Event, frozen=True, tag=True):
    """First event of a fork's own history: everything before it came from ``from_run_id``."""

    from_run_id: str
    at_seq: int


class ModelCalled(Event, frozen=True, tag=True):
    purpose: str
    request_digest: str
    model: str = ""


class ModelResponded(Event, frozen=True, tag=True):
    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = Usage()
    model: str = ""
    cost: float | None = None
    latency_ms: float = 0.0
    meta: dict[str, Any] = {}
    LARGE_FIELDS: ClassVar[tuple[str, ...]] = ("text",)


class Thought(Event, frozen=True, tag=True):
    rationale: str
    plan: tuple[str, ...] = ()


class ActionRequested(Event, frozen=True, tag=True):
    action_id: str
    call_id: str
    tool: str
    args: dict[str, Any] = {}
    rationale: str = ""
    idempotent: bool = False


class ActionCompleted(Event, frozen=True, tag=True):
    """``observation`` is what the model sees; when the output was too long for that,
    ``full_output`` keeps all of it (stored once, as a blob)."""

    action_id: str
    observation: str
    duration_ms: float = 0.0
    attempts: int = 1
    full_output: str = ""
    LARGE_FIELDS: ClassVar[tuple[str, ...]] = ("observation", "full_output")


class ActionRetried(Event, frozen=True, tag=True):
    """An attempt failed in a way worth retrying; the next one starts after ``delay_s``."""

    action_id: str
    attempt: int
    error: str
    delay_s: float


class ActionFailed(Event, frozen=True, tag=True):
    action_id: str
    error: str
    retryable: bool = False
    duration_ms: float = 0.0
    attempts: int = 1
    LARGE_FIELDS: ClassVar[tuple[str, ...]] = ("error",)


class EgressRequested(Event, frozen=True, tag=True):
    """Sandboxed code asked the egress proxy for a host; ``allowed`` says if it got through."""

    action_id: str
    method: str
    host: str
    port: int
    allowed: bool
    target: str = ""


class CircuitChanged(Event, frozen=True, tag=True):
    """A circuit breaker in front of a model endpoint or a tool changed state."""

    target: str
    from_state: str
    to_state: str
    reason: str = ""


class GuardTripped(Event, frozen=True, tag=True):
    guard: str
    detail: str


class Suspended(Event, frozen=True, tag=True):
    reason: str


class Resumed(Event, frozen=True, tag=True):
    """A process took the run over, e.g. after the previous one crashed."""

    by: str
    reason: str = ""


class RunCompleted(Event, frozen=True, tag=True):
    answer: str
    LARGE_FIELDS: ClassVar[tuple[str, ...]] = ("answer",)


class RunFailed(Event, frozen=True, tag=True):
    error: str


class RunCancelled(Event, frozen=True, tag=True):
    by: str = "user"


AnyEvent = (
    RunStarted
    | RunForked
    | ModelCalled
    | ModelResponded
    | Thought
    | ActionRequested
    | ActionCompleted
    | ActionRetried
    | ActionFailed
    | EgressRequested
    | CircuitChanged
    | GuardTripped
    | Suspended
    | Resumed
    | RunCompleted
    | RunFailed
    | RunCancelled
)

TERMINAL_EVENTS = (RunCompleted, RunFailed, RunCancelled)

_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        RunStarted,
        RunForked,
        ModelCalled,
        ModelResponded,
        Thought,
        ActionRequested,
        ActionCompleted,
        ActionRetried,
        ActionFailed,
        EgressRequested,
        CircuitChanged,
        GuardTripped,
        Suspended,
        Resumed,
        RunCompleted,
        RunFailed,
        RunCancelled,
    )
}

Upgrade = Callable[[dict[str, Any]], dict[str, Any]]
UPGRADES: dict[tuple[str, int], Upgrade] = {}
"""(type name, from version) -> function turning that version's fields into the next's."""


def event_types() -> Mapping[str, type[Event]]:
    return _TYPES


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
_decoder = msgspec.json.Decoder(AnyEvent)
_dict_decoder = msgspec.json.Decoder(dict[str, Any])
BLOB_REF = "$blob:"


def blob_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def encode_event(event: Event, ts: float) -> NewEvent:
    """Encode an event, moving its large string fields into content-addressed blobs."""
    blobs: dict[str, bytes] = {}
    replaced: dict[str, str] = {}
    for name in event.LARGE_FIELDS:
        value = getattr(event, name)
        if len(value) > BLOB_THRESHOLD:
            data = value.encode()
            digest = blob_digest(data)
            blobs[digest] = data
            replaced[name] = BLOB_REF + digest
    if replaced:
        event = msgspec.structs.replace(event, **replaced)
    return NewEvent(type(event).__name__, event.VERSION, ts, _encoder.encode(event), blobs)


def blob_refs(record: EventRecord) -> list[str]:
    """Digests of the blobs an encoded event refers to (cheap check first)."""
    if BLOB_REF.encode() not in record.body:
        return []
    cls = _TYPES.get(record.type)
    fields = _dict_decoder.decode(record.body)
    return [
        value[len(BLOB_REF) :]
        for name in (cls.LARGE_FIELDS if cls else ())
        if isinstance(value := fields.get(name), str) and value.startswith(BLOB_REF)
    ]


def decode_event(record: EventRecord, blobs: Mapping[str, bytes] | None = None) -> Event:
    """Decode a stored event: upgrade old versions, then put its blobs back in place."""
    cls = _TYPES.get(record.type)
    if cls is None:
        raise StoreCorrupt(f"event {record.seq} has unknown type {record.type!r}")
    if record.version > cls.VERSION:
        raise StoreCorrupt(
            f"event {record.seq} ({record.type} v{record.version}) was written by a newer "
            "autonomic: upgrade autonomic to read this run"
        )
    try:
        if record.version == cls.VERSION and not blobs:
            event: Event = _decoder.decode(record.body)
            return event
        fields = _dict_decoder.decode(record.body)
        version = record.version
        while version < cls.VERSION:
            fields = UPGRADES[(record.type, version)](fields)
            version += 1
        for name in cls.LARGE_FIELDS:
            value = fields.get(name)
            if isinstance(value, str) and value.startswith(BLOB_REF) and blobs:
                fields[name] = blobs[value[len(BLOB_REF) :]].decode()
        fields["type"] = record.type
        upgraded: Event = msgspec.convert(fields, AnyEvent)
        return upgraded
    except (msgspec.DecodeError, msgspec.ValidationError, KeyError) as e:
        raise StoreCorrupt(f"event {record.seq} ({record.type}) cannot be decoded: {e}") from e


def event_to_dict(event: Event) -> dict[str, Any]:
    """A JSON-ready dict of an event, for ``--json`` output and the bus."""
    result: dict[str, Any] = msgspec.to_builtins(event)
    return result
