"""A tool's secrets reach the tool and nothing else, by any path and in any encoding.

One run on a real SQLite file calls tools that leak their secrets every way we know of:
in plain and structured results (JSON-escaped, with and without ``ensure_ascii``, escaped
twice), in a ``repr``, URL-quoted, in an exception (a ``KeyError`` quotes its key), in a
retried error, in a circuit breaker's reason, and in an event the tool records. Then the
raw bytes of the store file and its WAL, the prompts the model saw, the log and the CLI's
``runs trace`` and ``runs events --json`` are searched for every encoded form of the
secrets.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.parse
from pathlib import Path
from typing import Any

import msgspec
import pytest

from autonomic import Agent, FunctionModel, ModelRequest, Runtime, ToolError, tool, tool_call
from autonomic.cli import main
from autonomic.events import (
    ActionCompleted,
    ActionFailed,
    ActionRetried,
    CircuitChanged,
    EgressRequested,
    Event,
)
from autonomic.tools import FileSecrets, ToolContext
from autonomic.tools.secrets import redact, redactor_for

INNER = "inner-7c6b5a4d3e2f"
OUTER = f'sk-"vault"\\Ünïcødé\x01\t-{INNER}-tail9f8e'  # quotes, backslash, non-ASCII, controls
SECRETS = {"OUTER": OUTER, "INNER": INNER}


def leak_forms(secret: str) -> set[str]:
    """How ``secret`` could show up in text or bytes, written out here independently."""
    once = {
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        msgspec.json.encode(secret).decode()[1:-1],
        repr(secret)[1:-1],
        urllib.parse.quote(secret, safe=""),
    }
    twice = {json.dumps(form)[1:-1] for form in once} | {repr(form)[1:-1] for form in once}
    return once | twice


FORMS = leak_forms(OUTER) | leak_forms(INNER)


def leaks(text: str | bytes) -> list[str]:
    if isinstance(text, bytes):
        return [f for f in FORMS if f.encode("utf-8", "surrogatepass") in text]
    return [f for f in FORMS if f in text]


@tool(secrets=("OUTER", "INNER"), retries=1, backoff_s=0.0)
def leaky(mode: str, context: ToolContext) -> Any:
    "Uses its secrets, and carelessly lets them out."
    outer, inner = context.secret("OUTER"), context.secret("INNER")
    if mode == "plain":
        return f"token {outer} and {inner}"
    if mode == "structured":
        return {
            "auth": outer,
            "inner": inner,
            "as_json": json.dumps({"token": outer}),
            "as_ascii_json": json.dumps(outer, ensure_ascii=True),
            "as_repr": repr([outer]),
            "as_url": "https://api.test/?key=" + urllib.parse.quote(outer, safe=""),
        }
    if mode == "keyerror":
        raise KeyError(outer)
    if mode == "retried":
        if context.attempt == 1:
            raise ToolError(f"busy, token {outer!r} throttled", retryable=True)
        return "ok on the second attempt"
    if mode == "record":
        context.record(EgressRequested(context.action_id, "GET", inner, 443, False, outer))
        return "recorded"
    raise ValueError(mode)


@tool(secrets=("OUTER",), breaker_threshold=1, breaker_reset_s=3600)
def fragile(context: ToolContext) -> str:
    "Fails, naming its secret; its breaker opens at once."
    raise RuntimeError(f"connection refused for {json.dumps({'key': context.secret('OUTER')})}")


MODES = ["plain", "structured", "keyerror", "retried", "record"]


def test_secrets_leak_by_no_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    (tmp_path / "secrets.json").write_text(json.dumps(SECRETS))
    prompts: list[str] = []

    def decide(request: ModelRequest) -> object:
        prompts.append(msgspec.json.encode(request).decode())
        if not any(m.role == "tool" for m in request.messages):
            return [tool_call("leaky", mode=m) for m in MODES] + [tool_call("fragile")]
        return "done"

    agent = Agent(name="leaks", model=FunctionModel(decide), tools=[leaky, fragile])
    url = f"sqlite:///{tmp_path / 'runs.db'}"

    wal = tmp_path / "runs.db-wal"

    async def run() -> tuple[str, list[Event], bytes]:
        async with Runtime(url, secrets=FileSecrets(tmp_path / "secrets.json")) as rt:
            handle = await rt.start(agent, "use the api")
            assert (await handle.wait()).answer == "done"
            events = [s.event async for s in rt.events(handle.run_id, follow=False)]
            # the WAL as it is before closing checkpoints it away
            return handle.run_id, events, await asyncio.to_thread(wal.read_bytes)

    run_id, events, wal_bytes = asyncio.run(run())
    assert b"[secret OUTER]" in wal_bytes and not leaks(wal_bytes)

    # each path was taken, and masked
    completed = [e for e in events if isinstance(e, ActionCompleted)]
    failed = [e for e in events if isinstance(e, ActionFailed)]
    assert completed[0].observation == "token [secret OUTER] and [secret INNER]"
    assert json.loads(completed[1].observation) == {
        "auth": "[secret OUTER]",
        "inner": "[secret INNER]",
        "as_json": '{"token": "[secret OUTER]"}',
        "as_ascii_json": '"[secret OUTER]"',
        "as_repr": "['[secret OUTER]']",
        "as_url": "https://api.test/?key=[secret OUTER]",
    }
    assert [f.error for f in failed] == [
        "KeyError: '[secret OUTER]'",
        'RuntimeError: connection refused for {"key": "[secret OUTER]"}',
    ]
    (retried,) = [e for e in events if isinstance(e, ActionRetried)]
    assert retried.error == "busy, token '[secret OUTER]' throttled"
    (change,) = [e for e in events if isinstance(e, CircuitChanged)]
    assert change.reason.endswith('connection refused for {"key": "[secret OUTER]"}')
    (egress,) = [e for e in events if isinstance(e, EgressRequested)]
    assert (egress.host, egress.target) == ("[secret INNER]", "[secret OUTER]")

    # nothing anywhere holds any form of either secret
    store_files = sorted(tmp_path.glob("runs.db*"))
    assert store_files
    for path in store_files:  # read after the runtime closed, with nothing holding the db
        with open(path, "rb") as f:
            assert not leaks(f.read()), path.name
    assert b"[secret OUTER]" in (tmp_path / "runs.db").read_bytes()  # the log is all there
    assert len(prompts) == 2
    assert not any(leaks(p) for p in prompts)
    assert not leaks(caplog.text)
    for command in (["runs", "trace", run_id], ["runs", "events", "--json", run_id]):
        assert main(["--store", url, *command]) == 0
        out, err = capsys.readouterr()
        assert "[secret OUTER]" in out
        assert not leaks(out) and not leaks(err)


def test_redact_masks_each_encoded_form_longest_first() -> None:
    for form in leak_forms(OUTER):
        assert redact(f"<{form}>", SECRETS) == "<[secret OUTER]>", form
    for form in leak_forms(INNER):
        assert redact(f"<{form}>", SECRETS) == "<[secret INNER]>", form
    assert redact(f"a {INNER} b", {"SHORT": INNER[:5], "INNER": INNER}) == "a [secret INNER] b"
    # a secret with escapes in it also leaks unescaped: "a\\nb" written to JSON is "a\nb"
    assert redact("x a\nb y", {"ESCAPED": "a\\nb"}) == "x [secret ESCAPED] y"


def test_a_secret_cut_by_the_output_cap_leaves_no_prefix() -> None:
    masker = redactor_for({"INNER": INNER})
    text = "x" * 90 + INNER  # the cap at 100 falls inside the secret
    assert masker.head(text, 100) == "x" * 90 + "[secret INNER]"
    assert masker.head("x" * 200, 100) == "x" * 100
