"""A blackboard: shared, versioned notes for the runs of one tree, kept in the store.

One board per root run (its ``scope``): JSON values by key, each with a version that
every write bumps. Writes are compare-and-set (``expected`` version), so concurrent
writers lose no update: the loser is told the version it raced with and tries again
(``update`` does that for you). Who may write what is fixed per agent (``writers``: agent
name → key prefixes). Every write is sent as a signal named ``board:<key>`` to the root
run and to the runs that ``watch`` the key, so a run can ``Await(Signal(board_signal(key)))``
and a controller strategy sees the board in its own log.

Agents use it through tools (``Blackboard.tools(agent)``: ``read_board`` and
``write_board``); the board must be bound to the runtime that drives them
(``board.bind(runtime)``), whose store must hold boards (memory and SQLite do).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from autonomic.errors import ConfigError, RunNotFound, ToolError
from autonomic.store.base import Boards
from autonomic.tools.base import Tool, ToolContext, tool

if TYPE_CHECKING:
    from autonomic.runtime import Runtime

__all__ = ["Blackboard", "VersionConflict", "board_signal", "scope_of"]

SIGNAL_PREFIX = "board:"


class VersionConflict(ConfigError):
    """The key was not at the expected version: another writer got there first."""

    def __init__(self, key: str, expected: int, current: int) -> None:
        super().__init__(
            f"blackboard key {key!r} is at version {current}, not {expected}: read it again "
            "and write with the new version"
        )
        self.key, self.expected, self.current = key, expected, current


def board_signal(key: str) -> str:
    """The name of the signal a write of ``key`` sends."""
    return SIGNAL_PREFIX + key


def scope_of(run_id: str) -> str:
    """The board of a run: its root run's (child run ids extend their parent's)."""
    return run_id.split(".", 1)[0]


class Blackboard:
    def __init__(self, *, writers: Mapping[str, Sequence[str]] | None = None) -> None:
        """``writers``: agent name → the key prefixes it may write (``""``: every key);
        None lets every agent write every key."""
        self.writers = None if writers is None else {a: tuple(p) for a, p in writers.items()}
        self._runtime: Runtime | None = None

    def bind(self, runtime: Runtime) -> Blackboard:
        """Keep the board in ``runtime``'s store and signal its runs."""
        if not isinstance(runtime.store, Boards):
            raise ConfigError(
                f"store {type(runtime.store).__name__} cannot hold a blackboard "
                "(the memory and SQLite stores can)"
            )
        self._runtime = runtime
        return self

    @property
    def _store(self) -> Boards:
        if self._runtime is None:
            raise ConfigError("this blackboard is not bound to a runtime: call board.bind(rt)")
        store = self._runtime.store
        assert isinstance(store, Boards)
        return store

    def may_write(self, writer: str, key: str) -> bool:
        if self.writers is None:
            return True
        return any(key.startswith(prefix) for prefix in self.writers.get(writer, ()))

    async def read(self, scope: str) -> dict[str, Any]:
        """Every key's value."""
        entries = await self._store.board_entries(scope)
        return {k: json.loads(e.value) for k, e in sorted(entries.items())}

    async def versions(self, scope: str) -> dict[str, int]:
        entries = await self._store.board_entries(scope)
        return {k: e.version for k, e in entries.items()}

    async def write(
        self, scope: str, key: str, value: Any, *, writer: str, expected: int | None = None
    ) -> int:
        """Write ``value`` (JSON data); its new version. ``expected``: the version the key
        must be at (0: it must not exist), else VersionConflict."""
        if not isinstance(key, str) or not key.strip():
            raise ConfigError("a blackboard key must be a non-empty string")
        if not self.may_write(writer, key):
            allowed = ", ".join(repr(p) for p in (self.writers or {}).get(writer, ())) or "none"
            raise ConfigError(
                f"agent {writer!r} may not write blackboard key {key!r} (its prefixes: {allowed})"
            )
        try:
            body = json.dumps(value, sort_keys=True).encode()
        except (TypeError, ValueError) as e:
            raise ConfigError(f"blackboard value for {key!r} is not JSON data: {e}") from None
        written, version = await self._store.board_put(
            scope, key, body, writer, expected, time.time()
        )
        if not written:
            raise VersionConflict(key, expected or 0, version)
        await self._notify(scope, key, value, version, writer)
        return version

    async def update(
        self,
        scope: str,
        key: str,
        change: Callable[[Any], Any],
        *,
        writer: str,
        attempts: int = 1000,
    ) -> int:
        """Write ``change(current value or None)``, retrying on a lost race."""
        for _ in range(attempts):
            entries = await self._store.board_entries(scope)
            entry = entries.get(key)
            current, version = (json.loads(entry.value), entry.version) if entry else (None, 0)
            try:
                return await self.write(
                    scope, key, change(current), writer=writer, expected=version
                )
            except VersionConflict:
                continue
        raise ConfigError(f"blackboard key {key!r}: {attempts} writes in a row lost the race")

    async def watch(self, scope: str, key: str, run_id: str) -> None:
        """Signal ``run_id`` on every later write of ``key``."""
        await self._store.board_watch(scope, key, run_id)

    async def _notify(self, scope: str, key: str, value: Any, version: int, writer: str) -> None:
        assert self._runtime is not None
        data = {"key": key, "value": value, "version": version, "writer": writer}
        for run_id in dict.fromkeys([scope, *await self._store.board_watchers(scope, key)]):
            try:
                await self._runtime.signal(run_id, board_signal(key), data)
            except (ConfigError, RunNotFound):  # that run has ended, or there is none
                continue

    def tools(self, agent: str) -> list[Tool]:
        """``read_board`` and ``write_board`` for the runs of ``agent``."""
        board = self

        @tool(name="read_board", idempotent=True)
        async def read_board(context: ToolContext) -> str:
            "Read the shared blackboard: every key with its value and version."
            scope = scope_of(context.run_id)
            values, versions = await board.read(scope), await board.versions(scope)
            return json.dumps({k: {"value": v, "version": versions[k]} for k, v in values.items()})

        @tool(name="write_board")
        async def write_board(key: str, value: str, version: int, context: ToolContext) -> str:
            """Write a value on the shared blackboard.

            Args:
                key: the key to write.
                value: the value.
                version: the version you read (0 for a new key); a newer one is refused.
            """
            try:
                new = await board.write(
                    scope_of(context.run_id), key, value, writer=agent, expected=version
                )
            except ConfigError as e:
                raise ToolError(str(e)) from None
            return f"{key} is now at version {new}"

        return [read_board, write_board]
