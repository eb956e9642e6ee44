"""Event encoding: round trips, blobs for large fields, schema upgrades on read."""

from __future__ import annotations

import msgspec
import pytest

from autonomic.errors import StoreCorrupt
from autonomic.events import (
    UPGRADES,
    ActionCompleted,
    EventRecord,
    ModelResponded,
    RunStarted,
    blob_refs,
    decode_event,
    encode_event,
)
from autonomic.models.base import ToolCall, Usage


def record(event_bytes: bytes, type_: str, version: int = 1, seq: int = 1) -> EventRecord:
    return EventRecord(seq, type_, version, 0.0, event_bytes)


def test_round_trip_keeps_every_field() -> None:
    event = ModelResponded(
        text="thinking",
        tool_calls=(ToolCall("c1", "add", {"a": 1}),),
        usage=Usage(3, 4),
        model="m",
        cost=0.5,
        latency_ms=1.5,
        meta={"tier": "cheap"},
    )
    new = encode_event(event, 1.0)
    assert new.type == "ModelResponded" and not new.blobs
    assert decode_event(record(new.body, new.type)) == event


def test_large_fields_move_to_a_blob_and_come_back() -> None:
    event = ActionCompleted("a1", "y" * 5000)
    new = encode_event(event, 1.0)
    assert len(new.blobs) == 1 and len(new.body) < 200
    rec = record(new.body, new.type)
    assert blob_refs(rec) == list(new.blobs)
    assert decode_event(rec, new.blobs) == event


def test_the_same_payload_gives_the_same_blob() -> None:
    a = encode_event(ActionCompleted("a1", "z" * 4000), 1.0)
    b = encode_event(ActionCompleted("a2", "z" * 4000), 2.0)
    assert a.blobs.keys() == b.blobs.keys()


def test_old_versions_are_upgraded_on_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RunStarted, "VERSION", 2)

    def v1_to_v2(fields: dict) -> dict:
        fields["goal"] = fields.pop("objective")
        return fields

    monkeypatch.setitem(UPGRADES, ("RunStarted", 1), v1_to_v2)
    old = msgspec.json.encode({"type": "RunStarted", "objective": "legacy goal", "agent": "a"})
    event = decode_event(record(old, "RunStarted", version=1))
    assert isinstance(event, RunStarted) and event.goal == "legacy goal"


def test_events_from_a_newer_release_are_refused_clearly() -> None:
    body = encode_event(RunStarted(goal="g", agent="a"), 0).body
    with pytest.raises(StoreCorrupt, match="newer autonomic"):
        decode_event(record(body, "RunStarted", version=99))


def test_garbage_is_reported_as_corruption() -> None:
    with pytest.raises(StoreCorrupt, match="unknown type"):
        decode_event(record(b"{}", "NoSuchEvent"))
    with pytest.raises(StoreCorrupt, match="cannot be decoded"):
        decode_event(record(b"not json", "RunStarted"))
