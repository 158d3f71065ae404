"""Outages of what the oracle depends on (the chain node, the database, its disk): which error
stands for which, and one log line when each starts and one when it ends, however many requests
or passes it fails in between. The job API answers 503 for them; the worker loop waits them out."""

from __future__ import annotations

import errno
import logging
import threading
import time

import requests
from sqlalchemy.exc import DatabaseError, IntegrityError, OperationalError
from web3.exceptions import ProviderConnectionError

from oracle.rpc import STORAGE_ERRNOS, RpcUnavailable
from tributa.errors import TributaError
from tributa.store.errors import BackendUnavailable, StoreFull, StoreUnwritable

log = logging.getLogger("tributa.oracle.api")

# Retry-After (seconds) for a 503: the node, the database or its disk is down.
OUTAGE_RETRY_AFTER_S = 5
# What a chain call raises while the node is down or unreachable.
_NODE_ERRORS = (
    RpcUnavailable,
    ProviderConnectionError,
    requests.ConnectionError,
    requests.Timeout,
    ConnectionError,
    TimeoutError,
)


# Words of a database error that mean its disk is away (SQLite) or the server is (PostgreSQL).
_DISK_WORDS = ("disk", "readonly", "read-only", "full", "i/o", "unable to open")
_UNREACHABLE_WORDS = (
    "locked",
    "could not connect",
    "connection",
    "server closed",
    "terminating",
    "timeout",
    "the database system is",
    "no route",
    "refused",
)


class Unavailable(TributaError):
    """The API cannot serve this request now (503 with Retry-After): `kind` names the outage."""

    def __init__(self, kind: str, message: str, retry_after_s: int = OUTAGE_RETRY_AFTER_S) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry_after_s = retry_after_s


class Outages:
    """One log line when an outage (node, database, disk) starts and one when it ends, with its
    duration, however many requests it fails in between."""

    def __init__(self, who: str = "job API", meanwhile: str = "answering 503", logger: logging.Logger = log) -> None:
        self.who = who
        self.meanwhile = meanwhile
        self.log = logger
        self._since: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def down(self, kind: str, detail: str) -> None:
        with self._lock:
            if kind in self._since:
                return
            self._since[kind] = (time.monotonic(), detail)
        self.log.warning("%s: %s unavailable (%s); %s until it is back", self.who, kind, detail, self.meanwhile)

    def up(self) -> None:
        if not self._since:  # the common case: no lock, nothing to do
            return
        with self._lock:
            ended, self._since = self._since, {}
        for kind, (since, _detail) in ended.items():
            self.log.warning("%s: %s available again after %.1f s", self.who, kind, time.monotonic() - since)

    @property
    def current(self) -> set[str]:
        return set(self._since)


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` stands for an outage of the disk, the store, the database or the node (wait
    and retry), rather than something wrong with the task at hand (fail it)."""
    return classify_outage(exc) is not None


def classify_outage(exc: BaseException, _depth: int = 0) -> Unavailable | None:
    """The 503 an exception stands for (a node, database or disk outage), or None for a real bug."""
    found = _classify(exc)
    cause = exc.__cause__ or exc.__context__
    if found is None and cause is not None and _depth < 4:
        return classify_outage(cause, _depth + 1)
    return found


def _classify(exc: BaseException) -> Unavailable | None:
    if isinstance(exc, Unavailable):
        return exc
    if isinstance(exc, (StoreFull, StoreUnwritable)):  # its disk is full or read-only: retry once it is not
        return Unavailable("disk", f"content store: {exc}")
    if isinstance(exc, BackendUnavailable):  # the Kubo daemon the store uses is away
        return Unavailable("store", f"content store: {exc}")
    if isinstance(exc, OperationalError):
        text = str(exc.orig if exc.orig is not None else exc).splitlines()[0][:160]
        lowered = text.lower()
        if "malformed" in lowered:  # a damaged database is not waited out
            return None
        if any(word in lowered for word in _DISK_WORDS):
            return Unavailable("disk", f"database storage: {text}")
        if any(word in lowered for word in _UNREACHABLE_WORDS):
            return Unavailable("database", f"database: {text}")
        return None  # `no such column`, too many variables…: a bug, worth its traceback
    if isinstance(exc, DatabaseError) and not isinstance(exc, IntegrityError):
        text = str(exc.orig if exc.orig is not None else exc).splitlines()[0][:160]
        if any(word in text.lower() for word in ("disk", "readonly", "read-only", "i/o")):
            return Unavailable("disk", f"database storage: {text}")
    if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
        return Unavailable("disk", f"storage: {exc.strerror or exc} ({errno.errorcode.get(exc.errno, exc.errno)})")
    if isinstance(exc, _NODE_ERRORS):
        first = str(exc).splitlines()[0][:160] if str(exc) else ""
        return Unavailable("node", f"chain node: {type(exc).__name__}: {first}")
    return None
