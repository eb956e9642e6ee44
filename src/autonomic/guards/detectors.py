"""PII detectors: find personal data and secrets in text, as spans with a type and a score.

A detector is anything with ``analyze(text) -> Sequence[Detection-like]``, where each
result has ``entity_type``, ``start``, ``end`` and ``score``: the shape Presidio's
``AnalyzerEngine.analyze`` returns, so a Presidio analyzer (names, addresses...) plugs in
through ``PresidioDetector``. The built-in ``RegexDetector`` needs no extra dependency:
emails, phone numbers, payment cards (Luhn-checked), IBANs (mod-97-checked), IP
addresses, national ids (US SSN, UK NINO), API keys and private keys. Checksums keep
order numbers and look-alikes out.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "ENTITY_TYPES",
    "Detection",
    "Detector",
    "PresidioDetector",
    "RegexDetector",
    "detect",
    "iban_valid",
    "luhn_valid",
]


@dataclass(frozen=True, slots=True)
class Detection:
    """One span of ``text[start:end]`` of type ``entity_type`` (Presidio's names)."""

    entity_type: str
    start: int
    end: int
    score: float = 1.0


class Detector(Protocol):
    def analyze(self, text: str) -> Sequence[Any]:
        """Spans with ``entity_type``, ``start``, ``end`` and ``score``."""
        ...


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum every payment card number carries."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """ISO 13616: the country code and check digits moved to the end, read as a number
    with letters as 10..35, leave 1 modulo 97."""
    compact = iban.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34 or not compact.isalnum():
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _card(match: re.Match[str]) -> bool:
    digits = re.sub(r"[ -]", "", match.group())
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def _ssn(match: re.Match[str]) -> bool:
    area, group, serial = match.group().split("-")
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}|\d{2}[./-]\d{2}[./-]\d{4}")


def _phone(match: re.Match[str]) -> bool:
    text = match.group()
    count = sum(c.isdigit() for c in text)
    return 7 <= count <= 15 and _DATE.fullmatch(text) is None


def _ipv6(match: re.Match[str]) -> bool:
    try:
        ipaddress.IPv6Address(match.group())
    except ValueError:
        return False
    return True


Check = Callable[[re.Match[str]], bool]

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"

_PATTERNS: tuple[tuple[str, str, float, Check | None, str | None], ...] = (
    # (type, pattern, score, check of a match, a substring every match contains)
    (
        "PRIVATE_KEY",
        r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----[\s\S]*?-----END (?:[A-Z]+ )?PRIVATE KEY-----",
        1.0,
        None,
        "PRIVATE KEY",
    ),
    (
        "API_KEY",
        r"\b(?:sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}|sk_(?:live|test)_[A-Za-z0-9]{16,}"
        r"|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36,}|xox[abposr]-[A-Za-z0-9-]{10,}"
        r"|AIza[0-9A-Za-z_-]{35}|glpat-[A-Za-z0-9_-]{20,})",
        0.95,
        None,
        None,
    ),
    (
        "EMAIL_ADDRESS",
        r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b",
        1.0,
        None,
        "@",
    ),
    (
        "IBAN_CODE",
        r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b",
        1.0,
        lambda m: iban_valid(m.group()),
        None,
    ),
    ("CREDIT_CARD", r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])", 1.0, _card, None),
    ("US_SSN", r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])", 0.85, _ssn, "-"),
    (
        "UK_NINO",
        r"\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b",
        0.85,
        None,
        None,
    ),
    ("IP_ADDRESS", rf"(?<![\d.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\d.])", 0.9, None, "."),
    (
        "IP_ADDRESS",
        r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{1,4}:){2,7}[0-9A-Fa-f]{1,4}(?![0-9A-Fa-f:])"
        r"|(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{1,4}:){1,6}:[0-9A-Fa-f]{1,4}(?![0-9A-Fa-f:])",
        0.9,
        _ipv6,
        ":",
    ),
    (
        "PHONE_NUMBER",
        r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]\d{1,5}){1,5}"
        r"(?![\w-])",
        0.75,
        _phone,
        None,
    ),
)

ENTITY_TYPES = tuple(dict.fromkeys(kind for kind, *_ in _PATTERNS))
"""The entity types the regex tier finds."""


class RegexDetector:
    """The built-in tier: precise patterns with checksums, no dependency.

    ``entities`` limits it to some types (all of ``ENTITY_TYPES`` by default). Overlaps
    are resolved by the earlier, more specific pattern: a card's digits are not also a
    phone number."""

    def __init__(self, entities: Iterable[str] | None = None) -> None:
        wanted = set(ENTITY_TYPES if entities is None else entities)
        unknown = wanted - set(ENTITY_TYPES)
        if unknown:
            raise ValueError(
                f"unknown entity type {sorted(unknown)[0]!r}; known: {', '.join(ENTITY_TYPES)}"
            )
        self._patterns = [
            (kind, re.compile(pattern), score, check, hint)
            for kind, pattern, score, check, hint in _PATTERNS
            if kind in wanted
        ]

    def analyze(self, text: str) -> list[Detection]:
        found: list[Detection] = []
        taken = bytearray(len(text))
        for kind, pattern, score, check, hint in self._patterns:
            if hint is not None and hint not in text:
                continue
            for match in pattern.finditer(text):
                start, end = match.span()
                if check is not None and not check(match):
                    continue
                if any(taken[start:end]):
                    continue
                taken[start:end] = b"\x01" * (end - start)
                found.append(Detection(kind, start, end, score))
        found.sort(key=lambda d: d.start)
        return found


class PresidioDetector:
    """A Presidio ``AnalyzerEngine`` (or anything with its ``analyze(text=, language=)``)
    as a detector: names, locations and whatever its recognizers find."""

    def __init__(
        self,
        analyzer: Any,
        *,
        language: str = "en",
        entities: Sequence[str] | None = None,
        min_score: float = 0.5,
    ) -> None:
        self.analyzer, self.language = analyzer, language
        self.entities, self.min_score = entities, min_score

    def analyze(self, text: str) -> list[Detection]:
        results = self.analyzer.analyze(text=text, language=self.language, entities=self.entities)
        return [
            Detection(r.entity_type, r.start, r.end, r.score)
            for r in results
            if r.score >= self.min_score
        ]


def detect(text: str, detectors: Sequence[Detector]) -> list[Detection]:
    """Every detector's spans, overlaps resolved: the higher score, then the longer span,
    then the detector listed first wins."""
    candidates: list[tuple[float, int, int, Detection]] = []
    for rank, detector in enumerate(detectors):
        for r in detector.analyze(text):
            d = Detection(str(r.entity_type), int(r.start), int(r.end), float(r.score))
            if 0 <= d.start < d.end <= len(text):
                candidates.append((-d.score, -(d.end - d.start), rank, d))
    if len(detectors) == 1:
        return sorted((c[3] for c in candidates), key=lambda d: d.start)
    kept: list[Detection] = []
    for *_, d in sorted(candidates, key=lambda c: c[:3]):
        if all(d.end <= k.start or k.end <= d.start for k in kept):
            kept.append(d)
    return sorted(kept, key=lambda d: d.start)
