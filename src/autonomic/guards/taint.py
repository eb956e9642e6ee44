"""Taint: which values of a tool call came from untrusted text rather than from the user.

Pure functions over text. A value is tainted when it occurs in untrusted text (tool
output) and not in trusted text (the goal, the user's messages): copied whole, or
carrying a distinctive atom (an address, a URL or domain, an account number, a path, a
long number or token) that only untrusted text holds. Values the model wrote itself (a
summary in an email's body) are not tainted unless they carry such an atom, so ordinary
work on data the user gave goes on without asking anyone.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["MARK", "atoms", "normalise", "tainted_values", "values_of"]

MARK = "\u02c6"
"""The datamark spotlighting puts between the words of untrusted text (see shields)."""

_ATOM = re.compile(
    r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"  # email addresses
    r"|(?:https?|ftp)://[^\s\"'<>]+"  # URLs
    r"|\b(?:[a-z0-9-]+\.)+(?:com|net|org|io|dev|co|uk|ru|xyz|info|biz|app|sh|me)\b"  # domains
    r"|\b[a-z]{2}\d{2}(?: ?[a-z0-9]{4}){2,7}(?: ?[a-z0-9]{1,4})?\b"  # IBAN-like
    r"|(?:~|\.{0,2})/[\w./-]+"  # paths
    r"|#[\w-]{2,}"  # channels, tags
    r"|\b\d[\d ,.-]{3,}\d\b"  # long numbers: accounts, amounts, phones
    r"|\b(?=[a-z_-]*\d)(?=\w*[a-z])[\w-]{6,}\b"  # tokens mixing letters and digits
    r"|\b[\w-]+\.(?:exe|sh|py|ps1|bat|zip|pdf|docx?|xlsx?|txt|csv)\b"  # file names
)
_SPACE = re.compile(r"\s+")
_MIN_WHOLE = 8
"""A value copied whole from untrusted text counts from this length (shorter ones are
common words); shorter distinctive values are caught as atoms."""


def normalise(text: str) -> str:
    """Casefolded, datamarks and runs of whitespace turned into single spaces."""
    return _SPACE.sub(" ", text.replace(MARK, " ").casefold()).strip()


def atoms(text: str) -> set[str]:
    """The distinctive values in (normalised) ``text``."""
    return {m.group().strip(" ,.-") for m in _ATOM.finditer(text)}


def values_of(args: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(argument path, value as text) for every leaf of a call's arguments."""

    def walk(path: str, value: Any) -> Iterator[tuple[str, str]]:
        if isinstance(value, Mapping):
            for key, item in value.items():
                yield from walk(f"{path}.{key}" if path else str(key), item)
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                yield from walk(f"{path}[{i}]", item)
        elif value is not None and not isinstance(value, bool):
            yield path, str(value)

    yield from walk("", args)


def tainted_values(
    args: Mapping[str, Any], untrusted: str, untrusted_atoms: set[str], trusted: str
) -> list[tuple[str, str]]:
    """(argument path, what in it is tainted) for each tainted argument of a call.

    ``untrusted`` and ``trusted`` are normalised texts; ``untrusted_atoms`` the atoms of
    the untrusted one."""
    found: list[tuple[str, str]] = []
    for path, raw in values_of(args):
        value = normalise(raw)
        if not value:
            continue
        if len(value) >= _MIN_WHOLE and value in untrusted and value not in trusted:
            found.append((path, raw))
            continue
        for atom in sorted(atoms(value)):
            if atom in untrusted_atoms and atom not in trusted:
                found.append((path, atom))
                break
    return found
