"""Telling a node that is away from a node that said no, and backing off while it is away.

The ingestor and the transaction manager share this: a transport failure (connection refused,
timeout, 5xx) is retried later with exponential backoff and logged as one line; an answer from
the node (a revert, "nonce too low") is a decision, handled by the caller.
"""

from __future__ import annotations

import errno
import logging
import time
from dataclasses import dataclass, field

import requests

from tributa.errors import ChainError


class RpcUnavailable(ChainError):
    """The RPC node could not be reached; nothing was lost, the caller retries later."""


# What an OSError from the oracle's own disk carries (full, read-only, immutable, failing): an
# outage of its storage, not of the node, though both are OSErrors.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EIO, errno.EDQUOT, errno.EPERM, errno.EACCES})


def is_transient(exc: BaseException) -> bool:
    """True for failures to talk to the node at all (as opposed to the node answering an error)."""
    if isinstance(exc, (requests.RequestException, ConnectionError, TimeoutError)):
        return True
    return isinstance(exc, OSError) and exc.errno not in STORAGE_ERRNOS


def describe(exc: BaseException) -> str:
    """One short line: the exception type and the first line of its message."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if "Max retries exceeded" in first and "Caused by" in first:
        first = first.split("Caused by", 1)[1].strip(" ()")
    return f"{type(exc).__name__}: {first[:160]}"


@dataclass
class Backoff:
    """Exponential backoff for one kind of RPC work; `ready()` says whether to try again now."""

    what: str
    logger: logging.Logger
    initial_s: float = 0.5
    maximum_s: float = 8.0  # also how late, at most, an outage's end is noticed
    failures: int = 0
    _next_try: float = field(default=0.0, repr=False)
    _down_since: float | None = field(default=None, repr=False)

    def ready(self) -> bool:
        return time.monotonic() >= self._next_try

    @property
    def delay_s(self) -> float:
        return 0.0 if not self.failures else min(self.maximum_s, self.initial_s * 2 ** (self.failures - 1))

    def failed(self, exc: BaseException, url: str = "") -> RpcUnavailable:
        """Record a transport failure, log it as one line, and return the error to raise."""
        self.failures += 1
        self._next_try = time.monotonic() + self.delay_s
        if self._down_since is None:
            self._down_since = time.monotonic()
        where = f" at {url}" if url else ""
        message = f"{self.what}: RPC node{where} unreachable ({describe(exc)}); retrying in {self.delay_s:.1f}s (failure {self.failures})"
        # One line when the outage starts; the retries during it are debug (the end says how long it lasted).
        self.logger.log(logging.WARNING if self.failures == 1 else logging.DEBUG, message)
        return RpcUnavailable(message)

    @property
    def down_for_s(self) -> float:
        """How long the current outage has lasted (0 while the node answers)."""
        return 0.0 if self._down_since is None else time.monotonic() - self._down_since

    def succeeded(self) -> None:
        if self.failures:
            self.logger.info(
                "%s: RPC node reachable again after an outage of %.1fs (%d failed attempts)",
                self.what,
                self.down_for_s,
                self.failures,
            )
        self.failures = 0
        self._next_try = 0.0
        self._down_since = None


def endpoint(w3) -> str:
    """The node's URL for log lines (no credentials: only scheme, host and port)."""
    uri = str(getattr(w3.provider, "endpoint_uri", "") or "")
    if "@" in uri:
        scheme, _, rest = uri.partition("://")
        uri = f"{scheme}://{rest.split('@', 1)[1]}"
    return uri
