"""The PII vault: detection quality, the encrypted vault, and a run in which no raw value
reaches a model request, an event, a blob, a snapshot, the trace or the log."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
from pathlib import Path

import msgspec
import pytest

from autonomic import Agent, FunctionModel, ModelRequest, Runtime, ToolError, tool, tool_call
from autonomic.cli import main
from autonomic.errors import ConfigError
from autonomic.events import (
    ActionRetried,
    ApprovalGranted,
    EgressRequested,
    SignalReceived,
    decode_event,
)
from autonomic.guards.base import store_scope
from autonomic.guards.detectors import (
    Detection,
    PresidioDetector,
    RegexDetector,
    detect,
    iban_valid,
    luhn_valid,
)
from autonomic.guards.pii import PIIGuard, reveal
from autonomic.guards.vault import Vault, vault_store
from autonomic.store import open_store
from autonomic.store.base import Store
from autonomic.tools import ToolContext

DATA = Path(__file__).parent / "data" / "pii_snippets.jsonl"
KEY = os.urandom(32)

EMAIL = "alice.smith@example.com"
CARD = "4111 1111 1111 1111"
PHONE = "+44 20 7946 0958"
IBAN = "GB82 WEST 1234 5698 7654 32"
RAW = [EMAIL, CARD, PHONE, IBAN]


def test_checksums() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid(IBAN) and not iban_valid("GB83 WEST 1234 5698 7654 32")


def test_regex_tier_f1_on_the_synthetic_corpus() -> None:
    rows = [json.loads(line) for line in DATA.read_text().splitlines()]
    assert len(rows) >= 500
    detector = RegexDetector()
    tp = fp = fn = 0
    for row in rows:
        gold = {tuple(s) for s in row["spans"]}
        found = {(d.start, d.end, d.entity_type) for d in detector.analyze(row["text"])}
        tp, fp, fn = tp + len(gold & found), fp + len(found - gold), fn + len(gold - found)
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    assert 2 * precision * recall / (precision + recall) >= 0.95
    assert tp >= 800  # the corpus has entities of every type, not only negatives


def test_hard_negatives_are_not_pii() -> None:
    text = "Order 4111111111111112 shipped 2024-03-05; version 1.2.3; code GB83WEST12345698765432"
    assert RegexDetector().analyze(text) == []


class _Names:
    """A Presidio-shaped analyzer: results with entity_type/start/end/score."""

    def analyze(self, *, text: str, language: str, entities: object) -> list[Detection]:
        at = text.find("Alice Smith")
        return [Detection("PERSON", at, at + 11, 0.85)] if at >= 0 else []


def test_a_presidio_shaped_detector_plugs_in() -> None:
    text = f"Alice Smith <{EMAIL}>"
    found = detect(text, [RegexDetector(), PresidioDetector(_Names())])
    assert [(d.entity_type, text[d.start : d.end]) for d in found] == [
        ("PERSON", "Alice Smith"),
        ("EMAIL_ADDRESS", EMAIL),
    ]


async def test_vault_is_encrypted_stable_and_refuses_a_wrong_key(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'v.db'}"
    async with open_store(url) as store:
        guard = PIIGuard(key=KEY)
        with store_scope(store):
            masked = await guard.screen_goal("r1", f"mail {EMAIL} and {EMAIL}, card {CARD}")
            again = await guard.screen_goal("r1", f"{CARD} / {EMAIL}")
        assert masked == "mail [EMAIL_1] and [EMAIL_1], card [CARD_1]"
        assert again == "[CARD_1] / [EMAIL_1]"
        # two writers that both think [EMAIL_2] is free: the second one loses and retries
        first, second = Vault(store, "r1", KEY), Vault(store, "r1", KEY)
        await first.load()
        await second.load()
        assert await first.save({"[EMAIL_2]": "bob@example.com"})
        assert not await second.save({"[EMAIL_2]": "carol@example.com"})
        await second.load()
        assert second.values["[EMAIL_2]"] == "bob@example.com"
        with pytest.raises(ConfigError, match="does not open with this key"):
            await Vault(store, "r1", os.urandom(32)).load()
    files = await asyncio.to_thread(lambda: [p.read_bytes() for p in tmp_path.glob("v.db*")])
    assert files and not any(EMAIL.encode() in data for data in files)


def test_the_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from autonomic.guards.vault import load_key

    monkeypatch.delenv("AUTONOMIC_VAULT_KEY", raising=False)
    with pytest.raises(ConfigError, match="set AUTONOMIC_VAULT_KEY"):
        load_key()
    monkeypatch.setenv("AUTONOMIC_VAULT_KEY", base64.b64encode(KEY).decode())
    assert load_key() == KEY
    monkeypatch.setenv("AUTONOMIC_VAULT_KEY", "short")
    with pytest.raises(ConfigError, match="must be 32 bytes"):
        load_key()


received: list[dict[str, str]] = []


@tool(retries=1, backoff_s=0.0)
def lookup(email: str, context: ToolContext) -> str:
    "The customer's record (busy at first; it notes where it looked)."
    assert email == EMAIL, email
    context.record(EgressRequested(context.action_id, "GET", "crm.example", 443, False, email))
    if context.attempt == 1:
        raise ToolError(f"the CRM is busy with {email}", retryable=True)
    return f"customer {email}: phone {PHONE}, iban {IBAN}"


@tool(requires_approval=True)
def send_email(to: str, body: str) -> str:
    "Send an email (a person approves it, and may edit it)."
    received.append({"to": to, "body": body})
    return f"sent to {to}"


def _placeholder(text: str, label: str) -> str:
    found = re.search(rf"\[{label}_\d+\]", text)
    assert found is not None, text
    return found.group()


def test_no_raw_value_reaches_a_model_or_any_record(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("AUTONOMIC_VAULT_KEY", base64.b64encode(KEY).decode())
    received.clear()
    prompts: list[str] = []

    def spy(request: ModelRequest) -> object:
        prompts.append(msgspec.json.encode(request).decode())
        tools = [m for m in request.messages if m.role == "tool"]
        goal = next(m.content for m in request.messages if m.role == "user")
        if not tools:
            return tool_call("lookup", email=_placeholder(goal, "EMAIL"))
        if len(tools) == 1:
            record = tools[0].content
            body = f"card {_placeholder(goal, 'CARD')}; iban {_placeholder(record, 'IBAN')}"
            return tool_call("send_email", to=_placeholder(record, "EMAIL"), body=body)
        return f"Done: {tools[-1].content}"

    agent = Agent(
        name="pii-spy",
        model=FunctionModel(spy),
        tools=[lookup, send_email],
        guards=[PIIGuard()],
    )
    url = f"sqlite:///{tmp_path / 'runs.db'}"

    async def run() -> tuple[str, str, str, list[object]]:
        async with Runtime(url, snapshot_every=2) as rt:
            handle = await rt.start(agent, f"Send {EMAIL} a note with card {CARD}")
            assert (await handle.wait_until_waiting()).status == "waiting"
            # what comes from outside the run is masked before it is stored too
            await rt.signal(handle.run_id, "callback", {"phone": PHONE, "n": 1})
            (pending,) = await handle.pending_approvals()
            edited = {"to": EMAIL, "body": f"card {CARD}; iban {IBAN}; call {PHONE}"}
            await rt.approve(handle.run_id, pending.digest, approver="ops", args=edited)
            result = await handle.wait()
            revealed = await reveal(rt.store, handle.run_id, result.answer or "")
            events = [e.event async for e in rt.events(handle.run_id, follow=False)]
            assert (await rt.replay(handle.run_id)).status == "completed"  # exact, masked
            return handle.run_id, result.answer or "", revealed, events

    run_id, answer, revealed, events = asyncio.run(run())
    (retried,) = [e for e in events if isinstance(e, ActionRetried)]
    assert retried.error == "the CRM is busy with [EMAIL_1]"
    egress = [e for e in events if isinstance(e, EgressRequested)]
    assert len(egress) == 2 and all(e.target == "[EMAIL_1]" for e in egress)
    assert answer == "Done: sent to [EMAIL_1]"
    assert revealed == f"Done: sent to {EMAIL}"
    (signal,) = [e for e in events if isinstance(e, SignalReceived)]
    assert signal.data == {"phone": "[PHONE_1]", "n": 1}
    (grant,) = [e for e in events if isinstance(e, ApprovalGranted)]
    assert grant.args == {"to": "[EMAIL_1]", "body": "card [CARD_1]; iban [IBAN_1]; call [PHONE_1]"}
    # the tools got the real values, the approver's edits included
    assert received == [{"to": EMAIL, "body": f"card {CARD}; iban {IBAN}; call {PHONE}"}]
    assert len(prompts) == 3
    assert "[EMAIL_1]" in prompts[0] and "[IBAN_1]" in prompts[1]
    for prompt in prompts:
        assert not any(raw in prompt for raw in RAW), prompt
    files = sorted(tmp_path.glob("runs.db*"))
    assert files
    for path in files:
        data = path.read_bytes()
        assert b"[EMAIL_1]" in data or path.name != "runs.db"
        assert not any(raw.encode() in data for raw in RAW), path.name
    assert not any(raw in caplog.text for raw in RAW)
    for command in (["runs", "trace", run_id], ["runs", "events", "--json", run_id]):
        assert main(["--store", url, *command]) == 0
        out, err = capsys.readouterr()
        assert "[EMAIL_1]" in out
        assert not any(raw in out + err for raw in RAW)
    assert main(["--store", url, "runs", "show", run_id, "--reveal"]) == 0
    assert EMAIL in capsys.readouterr().out


async def test_every_store_holds_a_vault(store: Store) -> None:
    with store_scope(store):
        guard = PIIGuard(key=KEY)
        assert await guard.screen_goal("r", f"ip 10.1.2.3 key sk-{'a' * 30}") == (
            "ip [IP_1] key [API_KEY_1]"
        )
    vaults = vault_store(store)
    assert (await vaults.get_vault("r")).keys() == {"[IP_1]", "[API_KEY_1]"}
    assert await vaults.put_vault("r", {"[IP_1]": b"other", "[IP_2]": b"x"}) == ["[IP_1]"]
    sealed = await vaults.get_vault("r")
    assert sealed["[IP_2]"] == b"x" and b"10.1.2.3" not in sealed["[IP_1]"]
    assert await vaults.get_vault("elsewhere") == {}


async def test_a_signal_name_holding_pii_is_refused_where_the_run_masks_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A signal's name is recorded as it is: personal data belongs in its data."""
    monkeypatch.setenv("AUTONOMIC_VAULT_KEY", base64.b64encode(KEY).decode())

    def answer(request: ModelRequest) -> str:
        return "done"

    masked = Agent(name="masked", model=FunctionModel(answer), guards=[PIIGuard()])
    plain = Agent(name="plain", model=FunctionModel(answer))
    async with Runtime("memory://", wake=False, agents=[masked, plain]) as rt:
        guarded = (await rt.submit(masked, "look someone up")).run_id
        open_run = (await rt.submit(plain, "look someone up")).run_id
        with pytest.raises(ConfigError, match=r"name holds personal data \(reply:\[EMAIL_1\]\)"):
            await rt.signal(guarded, f"reply:{EMAIL}", {"ok": True})
        await rt.signal(guarded, "reply", {"to": EMAIL})  # in the data it is masked
        await rt.signal(open_run, f"reply:{EMAIL}")  # a run that masks nothing takes it
        sent = {
            run_id: [decode_event(i.record) for i in await rt.store.read_inbox(run_id)]
            for run_id in (guarded, open_run)
        }
    assert sent[guarded] == [SignalReceived("reply", {"to": "[EMAIL_1]"})]
    assert sent[open_run] == [SignalReceived(f"reply:{EMAIL}", None)]
