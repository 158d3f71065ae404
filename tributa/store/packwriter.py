"""Writing blocks into packs: each add (and each gc or migration pass) appends to a pack of its
own through a WriteBatch, and indexes what it wrote in one transaction.

Why packs: creating one small file per 256 KiB block cost the filesystem more CPU than hashing
the block did; appending to one file per add costs a fraction of it. A record that is not
indexed (an add that crashed, a record cut short by a full disk) is only dead bytes that gc
reclaims, so a failed write never damages what was stored before.
"""

from __future__ import annotations

import errno
import os
import secrets
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from tributa.store.base import Buffer
from tributa.store.errors import StoreError, write_error
from tributa.store.files import fsync_dir, unlink_quietly
from tributa.store.layout import Block
from tributa.store.packformat import PACK_MAGIC, RECORD_HEADER
from tributa.store.packindex import Location, PackIndex, Row

_IOV_MAX = 1024  # buffers one pwritev takes (Linux's IOV_MAX)


class WriteBatch:
    """The blocks of one add, appended to a new pack in `packs_dir`; a BlockSink.

    put() and put_many() may be called from several threads: each reserves its records' place
    in the pack under a lock, then writes them with one pwritev without holding it. Written
    blocks are listed in `written` until flush() or close() indexes them, in one transaction
    each; close() deletes the pack if none of its records got indexed. The pack's name starts
    with its creation time, so names sort oldest first."""

    def __init__(self, index: PackIndex, packs_dir: Path, *, replace: bool = False, sync: bool = False) -> None:
        self._index = index
        self._packs_dir = packs_dir
        self._root = packs_dir.parent  # the store, for error messages
        self._replace = replace  # repoint blocks already indexed (gc's copies)
        self._sync = sync  # fsync the pack before indexing its blocks
        self.name = f"{time.time_ns():016x}-{os.getpid()}-{secrets.token_hex(4)}.pack"
        self.path = packs_dir / self.name
        self.written: dict[bytes, Location] = {}  # whole records, not yet flushed
        self._claimed: set[bytes] = set()  # blocks this batch writes (or is writing)
        self._rows: list[Row] = []
        self._indexed = 0
        self._failure: StoreError | None = None
        self._lock = threading.Lock()
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            self._fd = os.open(self.path, flags, 0o644)
        except OSError as exc:
            raise _write_error(exc, self._root) from None
        _, error = _pwrite_all(self._fd, (PACK_MAGIC,), 0)
        if error is not None:
            os.close(self._fd)
            unlink_quietly(self.path)
            raise _write_error(error, self._root)
        self._end = len(PACK_MAGIC)

    def put(self, digest: bytes, parts: Sequence[Buffer]) -> None:
        """Store a block unless the store already has it."""
        self.put_many([(digest, parts)])

    def put_many(self, blocks: Sequence[Block]) -> None:
        """Store the blocks the store does not have yet: one lookup and one write for all."""
        wanted = [block for block in blocks if block[0] not in self._claimed]
        if wanted:
            have = self._index.present([digest for digest, _ in wanted])
            self._append([block for block in wanted if block[0] not in have], dedup=True)

    def append(self, digest: bytes, parts: Sequence[Buffer]) -> None:
        """Write a record, whether or not the block is stored already (gc's copies)."""
        self._append([(digest, parts)], dedup=False)

    def _append(self, blocks: Sequence[Block], *, dedup: bool) -> None:
        records: list[tuple[bytes, int, int, Sequence[Buffer]]] = []
        with self._lock:  # reserve the records' places; they are written outside the lock
            if self._failure is not None:
                raise type(self._failure)(str(self._failure))
            start = end = self._end
            for digest, parts in blocks:
                if dedup and digest in self._claimed:
                    continue  # a block given twice
                self._claimed.add(digest)
                length = sum(len(part) for part in parts)
                records.append((digest, end + RECORD_HEADER.size, length, parts))
                end += RECORD_HEADER.size + length
            self._end = end
        if not records:
            return
        vector: list[Buffer] = []
        for digest, _, length, parts in records:
            vector.append(RECORD_HEADER.pack(digest, length))
            vector.extend(parts)
        done, error = _pwrite_all(self._fd, vector, start)
        with self._lock:
            for digest, offset, length, _ in records:
                if offset + length <= start + done:  # all of it got written
                    where = (self.name, offset, length)
                    self.written[digest] = where
                    self._rows.append((digest, *where))
            if error is not None:
                # The rest stays a hole or a cut record (dead bytes); later records are fine.
                self._failure = self._failure or _write_error(error, self._root)
                raise type(self._failure)(str(self._failure))

    def unwrite(self, digest: bytes, where: Location | None = None) -> bool:
        """Leave a written block out of the index (found damaged or forgotten)."""
        with self._lock:
            if digest not in self.written or where not in (None, self.written[digest]):
                return False
            del self.written[digest]
            self._claimed.discard(digest)
            self._rows = [row for row in self._rows if row[0] != digest]
            return True

    def flush(self) -> None:
        """Index the records written so far (fsynced first when the batch is durable). Call
        only while no put() is running."""
        rows = self._rows
        if not rows:
            return
        try:
            if self._sync:
                os.fsync(self._fd)
                fsync_dir(self._packs_dir)
        except OSError as exc:
            raise _write_error(exc, self._root) from None
        self._index.add(rows, replace=self._replace, sync=self._sync)
        self._indexed += len(rows)
        with self._lock:
            # The index has them now: keeping them here would only cost memory.
            self._rows = []
            self.written.clear()
            self._claimed.difference_update(row[0] for row in rows)

    def close(self, *, quiet: bool = False) -> None:
        try:
            self.flush()
        except StoreError:
            if not quiet:
                raise
        finally:
            self.written.clear()  # not indexed: dead bytes now
            os.close(self._fd)
            if not self._indexed:
                unlink_quietly(self.path)


def _pwrite_all(fd: int, parts: Sequence[Buffer], offset: int) -> tuple[int, OSError | None]:
    """pwritev until every byte is written at `offset`, retrying short writes. Returns the
    bytes written and the error that stopped it early, if one did."""
    views = [memoryview(part).cast("B") for part in parts if len(part)]
    done = 0
    while views:
        try:
            written = os.pwritev(fd, views[:_IOV_MAX], offset + done)
        except OSError as exc:
            return done, exc
        if written <= 0:
            return done, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        done += written
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if written:
            views[0] = views[0][written:]
    return done, None


def _write_error(exc: OSError, root: Path) -> StoreError:
    return write_error(exc, f"to {root}")
