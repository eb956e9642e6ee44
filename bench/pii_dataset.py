"""A synthetic, labelled PII corpus: snippets of business text with personal data at known
spans, and hard negatives (order numbers, dates, versions, card-like numbers that fail
Luhn, IBAN-like codes that fail mod 97).

Deterministic (seeded). Writes one JSON object per line: ``{"text": ..., "spans":
[[start, end, entity_type], ...]}``. Usage: python bench/pii_dataset.py [OUT.jsonl]
(default tests/guards/data/pii_snippets.jsonl).
"""

from __future__ import annotations

import json
import random
import string
import sys
from collections.abc import Callable
from pathlib import Path

FIRST = ["ana", "bob", "chen", "dara", "eli", "fatima", "gus", "hana", "ivan", "jo", "kemal"]
LAST = ["smith", "okafor", "li", "garcia", "novak", "berg", "tanaka", "rossi", "khan"]
DOMAINS = ["example.com", "corp.io", "mail.example.org", "acme.co.uk", "startup.dev"]


def _luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    for check in string.digits:
        candidate = body + check
        total = 0
        for i, ch in enumerate(reversed(candidate)):
            d = int(ch)
            if i % 2:
                d = d * 2 - 9 if d > 4 else d * 2
            total += d
        if total % 10 == 0:
            return candidate
    raise AssertionError("unreachable")


def email(rng: random.Random) -> str:
    sep = rng.choice([".", "_", ""])
    return f"{rng.choice(FIRST)}{sep}{rng.choice(LAST)}{rng.randint(1, 99)}@{rng.choice(DOMAINS)}"


def phone(rng: random.Random) -> str:
    d = lambda n: "".join(rng.choice(string.digits) for _ in range(n))  # noqa: E731
    return rng.choice(
        [
            f"+1 {rng.randint(201, 989)} {d(3)} {d(4)}",
            f"({rng.randint(201, 989)}) {d(3)}-{d(4)}",
            f"+44 20 {d(4)} {d(4)}",
            f"+49 30 {d(3)} {d(5)}",
            f"{rng.randint(201, 989)}-{d(3)}-{d(4)}",
            f"+33 1 {d(2)} {d(2)} {d(2)} {d(2)}",
        ]
    )


def card(rng: random.Random) -> str:
    number = rng.choice(
        [
            _luhn_complete("4", 16, rng),
            _luhn_complete(str(rng.randint(51, 55)), 16, rng),
            _luhn_complete(rng.choice(["34", "37"]), 15, rng),
        ]
    )
    style = rng.choice(["plain", "space", "dash"])
    if style == "plain" or len(number) == 15:
        return number
    sep = " " if style == "space" else "-"
    return sep.join(number[i : i + 4] for i in range(0, 16, 4))


def iban(rng: random.Random) -> str:
    country, length = rng.choice([("DE", 22), ("GB", 22), ("FR", 27), ("NL", 18), ("ES", 24)])
    if country in ("GB", "NL"):
        bank = "".join(rng.choice(string.ascii_uppercase) for _ in range(4))
        bban = bank + "".join(rng.choice(string.digits) for _ in range(length - 8))
    else:
        bban = "".join(rng.choice(string.digits) for _ in range(length - 4))
    moved = bban + country + "00"
    check = 98 - int("".join(str(int(c, 36)) for c in moved)) % 97
    code = f"{country}{check:02d}{bban}"
    if rng.random() < 0.5:
        return " ".join(code[i : i + 4] for i in range(0, len(code), 4))
    return code


def ipv4(rng: random.Random) -> str:
    return ".".join(str(rng.randint(1, 254)) for _ in range(4))


def ipv6(rng: random.Random) -> str:
    return ":".join(f"{rng.randint(0, 65535):x}" for _ in range(8))


def ssn(rng: random.Random) -> str:
    return f"{rng.randint(100, 665)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}"


def nino(rng: random.Random) -> str:
    letters = "ABCEGHJKLMNPRSTWXYZ"
    d = "".join(rng.choice(string.digits) for _ in range(6))
    return f"{rng.choice(letters)}{rng.choice(letters)}{d}{rng.choice('ABCD')}"


def api_key(rng: random.Random) -> str:
    chars = string.ascii_letters + string.digits
    r = lambda n: "".join(rng.choice(chars) for _ in range(n))  # noqa: E731
    return rng.choice(
        [
            f"sk-{r(40)}",
            f"AKIA{''.join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(16))}",
            f"ghp_{r(36)}",
            f"xoxb-{rng.randint(10**9, 10**10)}-{r(24)}",
            f"sk_live_{r(24)}",
        ]
    )


def private_key(rng: random.Random) -> str:
    body = "".join(rng.choice(string.ascii_letters + string.digits + "+/") for _ in range(64))
    return f"-----BEGIN RSA PRIVATE KEY-----\n{body}\n{body[::-1]}\n-----END RSA PRIVATE KEY-----"


MAKERS: dict[str, tuple[Callable[[random.Random], str], list[str]]] = {
    "EMAIL_ADDRESS": (
        email,
        ["Please reply to {} by Friday.", "Contact: {}", "cc {} on the thread", "From: {}\n"],
    ),
    "PHONE_NUMBER": (phone, ["Call me at {} after 5pm.", "Tel. {}", "mobile: {}, office hours"]),
    "CREDIT_CARD": (card, ["Card {} expires 09/27.", "charged to {} yesterday", "PAN={}"]),
    "IBAN_CODE": (iban, ["Wire it to {} please.", "IBAN: {}", "account {} (business)"]),
    "IP_ADDRESS": (
        lambda rng: ipv4(rng) if rng.random() < 0.75 else ipv6(rng),
        ["Login from {} was blocked.", "server at {} is down", "allow {} in the firewall"],
    ),
    "US_SSN": (ssn, ["SSN {} on file.", "social security number: {}"]),
    "UK_NINO": (nino, ["NI number {} for payroll.", "National Insurance: {}"]),
    "API_KEY": (api_key, ["export TOKEN={}", "the key is {} - rotate it", "api_key: {}"]),
    "PRIVATE_KEY": (private_key, ["Here is the key:\n{}\nkeep it safe.", "{}"]),
}

NEGATIVES = [
    "Order #{n} shipped on 2024-03-{d:02d}.",
    "Version {v} fixes the login bug.",
    "Invoice total: ${a}.{c:02d}, due in {d} days.",
    "Ticket {n} was closed by the on-call engineer.",
    "Card ending in {last4} was declined.",
    "Reference {bad_card} (not a card: it fails Luhn).",
    "Code {bad_iban} looks like an IBAN but its checksum is wrong.",
    "Meeting moved to {d}:30 in room {n}.",
    "The build {v} took {a} seconds.",
    "Tracking number 1Z{n}{n} arrives Tuesday.",
]

FILLER = [
    "Thanks for the quick turnaround.",
    "Let me know if anything else is needed.",
    "The quarterly report is attached.",
    "We met the target for Q3.",
]


def _bad_card(rng: random.Random) -> str:
    good = _luhn_complete("4", 16, rng)
    return good[:-1] + str((int(good[-1]) + 1) % 10)


def _bad_iban(rng: random.Random) -> str:
    good = iban(rng).replace(" ", "")
    return good[:2] + f"{(int(good[2:4]) + 1) % 100:02d}" + good[4:]


def negative(rng: random.Random) -> str:
    return rng.choice(NEGATIVES).format(
        n=rng.randint(1000, 999999),
        d=rng.randint(1, 28),
        v=f"{rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}",
        a=rng.randint(10, 9999),
        c=rng.randint(0, 99),
        last4=rng.randint(1000, 9999),
        bad_card=_bad_card(rng),
        bad_iban=_bad_iban(rng),
    )


def snippet(rng: random.Random) -> dict[str, object]:
    """One snippet: 0-3 labelled entities among filler and hard negatives."""
    parts: list[str] = []
    spans: list[list[object]] = []
    pieces = rng.randint(1, 4)
    for _ in range(pieces):
        if parts:
            parts.append(" ")
        roll = rng.random()
        if roll < 0.6:
            kind = rng.choice(list(MAKERS))
            make, templates = MAKERS[kind]
            value, template = make(rng), rng.choice(templates)
            offset = sum(map(len, parts)) + template.index("{}")
            spans.append([offset, offset + len(value), kind])
            parts.append(template.format(value))
        elif roll < 0.85:
            parts.append(negative(rng))
        else:
            parts.append(rng.choice(FILLER))
    return {"text": "".join(parts), "spans": spans}


def corpus(count: int = 600, seed: int = 8) -> list[dict[str, object]]:
    rng = random.Random(seed)
    return [snippet(rng) for _ in range(count)]


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/guards/data/pii_snippets.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = corpus()
    out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    labelled = sum(len(r["spans"]) for r in rows)  # type: ignore[arg-type]
    print(json.dumps({"snippets": len(rows), "entities": labelled, "out": str(out)}))


if __name__ == "__main__":
    main()
