"""Options of a bus URL that are ours (``?prefix=...``), split from those of its client."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from autonomic.errors import ConfigError

__all__ = ["BusOptions", "redacted", "split_bus_url"]


class BusOptions:
    """``prefix``: names this deployment's keys or subjects (several share a broker);
    ``claim_idle_s``: how long a group member may hold a message before another takes
    it; ``keep``: how many messages a topic keeps for groups; ``ttl_s``: how long."""

    __slots__ = ("claim_idle_s", "keep", "prefix", "ttl_s")

    def __init__(self, prefix: str, claim_idle_s: float, keep: int, ttl_s: float) -> None:
        self.prefix, self.claim_idle_s, self.keep, self.ttl_s = prefix, claim_idle_s, keep, ttl_s


_NUMBERS = {"claim_idle_s": float, "keep": int, "ttl_s": float}


def split_bus_url(url: str) -> tuple[str, BusOptions]:
    """The URL for the client (without our options), and our options."""
    parts = urlsplit(url)
    ours: dict[str, str] = {}
    theirs: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in (*_NUMBERS, "prefix"):
            ours[key] = value
        else:
            theirs.append((key, value))
    numbers: dict[str, float] = {"claim_idle_s": 30.0, "keep": 10_000, "ttl_s": 86_400.0}
    for key, kind in _NUMBERS.items():
        if key in ours:
            try:
                numbers[key] = kind(ours[key])
            except ValueError:
                numbers[key] = -1
            if numbers[key] <= 0:
                raise ConfigError(f"bus URL {url!r}: {key} must be a positive number")
    prefix = ours.get("prefix", "autonomic")
    if not prefix or not all(c.isalnum() or c in "_-" for c in prefix):
        raise ConfigError(f"bus URL {url!r}: prefix must be letters, digits, '_' or '-'")
    client = urlunsplit(parts._replace(query=urlencode(theirs)))
    options = BusOptions(prefix, numbers["claim_idle_s"], int(numbers["keep"]), numbers["ttl_s"])
    return client, options


def redacted(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
