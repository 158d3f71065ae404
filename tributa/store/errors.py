"""The content store's errors: one hierarchy, each message one line that says what to do."""

from __future__ import annotations

import errno

from tributa.errors import TributaError


class StoreError(TributaError):
    """Base of every content-store error; the CLI prints it as one line and exits 1."""


class CidError(StoreError, ValueError):
    """A string or byte sequence is not a valid (sha2-256, dag-pb or raw) CID."""


class NotFound(StoreError):
    """A CID that is not in the store, or a local path that does not exist."""


class ContentIntegrityError(StoreError):
    """A stored block no longer hashes to its CID, is truncated, or a DAG is incomplete."""


class StoreFull(StoreError):
    """The disk filled up while writing; the partial block is not indexed, older ones are intact."""


class StoreUnwritable(StoreError):
    """The store's folder cannot be written now (a read-only mount, an immutable file); retry later."""


class BackendUnavailable(StoreError):
    """The Kubo daemon cannot be reached, or went away in the middle of an operation."""


class DamagedIndex(StoreError):
    """The store's SQLite index is not a database or is malformed. The packs are intact:
    `tributa store repair` (EmbeddedStore.rebuild_index) rebuilds the index from them."""

    def __init__(self, path: object, reason: str) -> None:
        self.reason = reason
        super().__init__(
            f"the store index {path} is damaged ({reason}): run `tributa store repair` to "
            "rebuild it from the pack files"
        )


_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_UNWRITABLE_ERRNOS = frozenset({errno.EROFS, errno.EPERM, errno.EACCES})  # read-only mount, immutable file


def write_error(exc: OSError, what: str) -> StoreError:
    """The store's error for `exc`, raised while writing `what`: a full or unwritable disk is an
    outage to retry (StoreFull, StoreUnwritable), anything else a plain StoreError."""
    if exc.errno in _FULL_ERRNOS:
        return StoreFull(
            f"disk full while writing {what}: free some space (or run `tributa store gc`) and retry; "
            "blocks already stored are intact"
        )
    if exc.errno in _UNWRITABLE_ERRNOS:
        return StoreUnwritable(
            f"cannot write {what} ({exc.strerror}): make it writable and retry; blocks already stored are intact"
        )
    return StoreError(f"cannot write {what}: {exc.strerror}")
