"""HTTP facts shared by the provider adapters: which failures are transient, Retry-After."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

from autonomic.errors import ModelError, ModelUnavailable

__all__ = ["is_loopback", "retry_after", "status_error"]

_TRANSIENT = frozenset({408, 409, 425, 429})
# A 500 is as often a request the server cannot handle (llama-cpp-python's server answers
# a message it rejects with 500) as a passing fault: worth one more try, not four.
_ATTEMPTS_AFTER_500 = 2


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms``, ``retry-after``), if any."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def status_error(status: int, detail: str, headers: Mapping[str, str], where: str) -> ModelError:
    """The error for an HTTP failure: transient ones (429, 5xx...) are ``ModelUnavailable``;
    a 500 is tried once more at most."""
    message = f"{where}: HTTP {status}: {detail[:500]}".rstrip(": ")
    if status in _TRANSIENT or status >= 500:
        attempts = _ATTEMPTS_AFTER_500 if status == 500 else None
        return ModelUnavailable(message, retry_after=retry_after(headers), max_attempts=attempts)
    return ModelError(message)


def is_loopback(url: str) -> bool:
    """Whether ``url`` points at this machine (a self-hosted server, which costs nothing)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
