"""Blocks on disk: appended to pack files, found through a SQLite index.

Layout under the store root:
    packs/<time>-<pid>-<random>.pack   append-only: an 8-byte magic, then one record per block,
                                       digest (32 bytes) | length (u32 LE) | block bytes
    index.sqlite                       digest -> (pack, offset, length)  (packindex.py)
    corrupt/1220<digest hex>           bytes of blocks that failed a re-hash, kept for a look
    lock                               flock: writers share it, gc and migration take it alone

Why packs: creating one small file per 256 KiB block cost the filesystem more CPU than hashing
the block did; appending to one file per add costs a fraction of it.

Each add writes through a WriteBatch: a pack of its own that the importer's threads append to,
a few blocks at a time (one index lookup to skip blocks already stored, one pwritev). Its blocks
are visible to this Blockstore at once and indexed in one transaction when the batch ends (also
when the add failed: what was written is valid), so other processes see them from then on. Records no index row points at (an add that crashed, a record cut short
by a full disk, blocks gc found unreachable) are dead bytes; gc copies the live records of every
pack holding any into a fresh pack and deletes the old one.

Every read re-hashes the block. A block whose bytes no longer match has them saved to corrupt/
and its row dropped, so adding the content again writes a fresh copy; the error says so.

Stores made before packs (blocks/<2 hex>/1220<hex>, one file per block) are moved into a pack
the first time they are opened.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import shutil
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tributa.store.base import Buffer
from tributa.store.cid import Cid
from tributa.store.errors import IntegrityError, NotFound, StoreError, StoreFull
from tributa.store.layout import Block
from tributa.store.locking import StoreLock
from tributa.store.packindex import Location, PackIndex, Row

PACK_MAGIC = b"TRBPACK1"
RECORD_HEADER = struct.Struct("<32sI")  # digest, block length
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_MULTIHASH_PREFIX = "1220"
_OPEN_PACKS = 32  # read handles kept open per Blockstore
_IOV_MAX = 1024  # buffers one pwritev takes (Linux's IOV_MAX)


@dataclass(frozen=True, slots=True)
class BlockLocation:
    """Where a block's bytes are: `length` bytes at `offset` in the pack file at `path`."""

    path: Path
    offset: int
    length: int


class Blockstore:
    """Content-addressed blocks under `root`. Safe to use from several threads and processes."""

    def __init__(self, root: Path, *, durable: bool = False) -> None:
        self.root = root
        self.packs_dir = root / "packs"
        self.corrupt_dir = root / "corrupt"
        # fsync each pack before its blocks are indexed: survives power loss, costs speed.
        self.durable = durable
        try:
            self.packs_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the store under {root}: {exc.strerror}") from None
        self.lock = StoreLock(root)
        self._index = PackIndex(root / "index.sqlite", durable=durable)
        self._readers = _PackReaders(self.packs_dir)
        # This instance's open batches, whose blocks it can read before they are indexed.
        # Replaced, never changed in place, so readers need no lock.
        self._open: tuple[WriteBatch, ...] = ()
        self._open_lock = threading.Lock()
        if (root / "blocks").is_dir():
            try:
                self._migrate()
            except OSError as exc:
                raise StoreError(
                    f"cannot move the blocks under {root / 'blocks'} into a pack: {exc}"
                ) from None

    def close(self) -> None:
        self._index.close()
        self._readers.close()

    # -- writing -------------------------------------------------------------------------------

    @contextmanager
    def writing(self) -> Iterator[WriteBatch]:
        """A batch to put an add's blocks into (under the shared lock, so gc waits for it)."""
        with self.lock.shared(), self._batch() as batch:
            yield batch

    @contextmanager
    def _batch(self, *, replace: bool = False, sync: bool = False) -> Iterator[WriteBatch]:
        batch = WriteBatch(self, replace=replace, sync=sync)
        with self._open_lock:
            self._open = (*self._open, batch)
        try:
            yield batch
        except BaseException:
            batch.close(quiet=True)  # index what was written; the add's own error wins
            raise
        else:
            batch.close()
        finally:
            with self._open_lock:
                self._open = tuple(other for other in self._open if other is not batch)

    def put(self, digest: bytes, parts: Sequence[Buffer]) -> None:
        """Store one block outside any add (a batch of one)."""
        if not self.has(digest):
            with self.writing() as batch:
                batch.put(digest, parts)

    # -- reading -------------------------------------------------------------------------------

    def _where(self, digest: bytes) -> Location | None:
        for batch in self._open:
            where = batch.written.get(digest)
            if where is not None:
                return where
        return self._index.lookup(digest)

    def has(self, digest: bytes) -> bool:
        return self._where(digest) is not None

    def locate(self, digest: bytes) -> BlockLocation | None:
        where = self._where(digest)
        if where is None:
            return None
        pack, offset, length = where
        return BlockLocation(self.packs_dir / pack, offset, length)

    def read(self, cid: Cid) -> bytes:
        """The verified bytes of a block; NotFound if absent, IntegrityError if damaged."""
        found = self._fetch(cid.digest, cid)
        if found is None:
            raise NotFound(f"{cid} is not in the store: add it first, or check the CID")
        where, data = found
        self._check(cid.digest, cid, where, data)
        return data

    def first_byte(self, digest: bytes) -> int | None:
        """The first byte of a block (None if absent or empty); lets gc skip reading leaves."""
        name = _MULTIHASH_PREFIX + digest.hex()
        found = self._fetch(digest, name, size=1)
        if found is None:
            return None
        where, head = found
        if not head and where[2]:
            self._check(digest, name, where, head)  # cut short: raises, so gc stops
        return head[0] if head else None

    def _fetch(
        self, digest: bytes, name: object, size: int | None = None
    ) -> tuple[Location, bytes] | None:
        """(location, up to `size` bytes of the block, all by default), unverified; None if
        the block is not stored. `name` (a Cid) is only formatted for an error: it is slow."""
        for attempt in range(2):
            where = self._where(digest)
            if where is None:
                return None
            pack, offset, length = where
            try:
                wanted = length if size is None else min(size, length)
                return where, self._readers.pread(pack, offset, wanted)
            except FileNotFoundError:
                if attempt == 0:
                    continue  # gc in another process may have just moved it to a new pack
            except OSError as exc:
                raise StoreError(f"cannot read block {name}: {exc.strerror}") from None
        # Every block in it is lost: forget them all, so adding the content again rewrites them.
        self._index.discard_past(pack, 0)
        raise IntegrityError(
            f"block {name} is lost: its pack {self.packs_dir / pack} is gone; re-add the "
            "original content to repair it"
        )

    def _check(self, digest: bytes, name: object, where: Location, data: bytes) -> None:
        if hashlib.sha256(data).digest() != digest:
            moved = self._quarantine(digest, where, data)
            raise IntegrityError(
                f"block {name} is corrupted or truncated ({len(data)} bytes no longer hash to "
                f"its CID); moved it to {moved}: re-add the original content to repair it"
            )

    def _quarantine(self, digest: bytes, where: Location, data: bytes) -> Path:
        """Keep the damaged bytes in corrupt/ and forget the block, so a re-add rewrites it."""
        target = self.corrupt_dir / (_MULTIHASH_PREFIX + digest.hex())
        try:
            self.corrupt_dir.mkdir(exist_ok=True)
            target.write_bytes(data)
        except OSError:
            target = self.packs_dir / where[0]  # could not copy them out: they stay in the pack
        self._discard(digest, where)
        if len(data) < where[2]:  # the pack was cut short: every block past the cut is lost too
            try:
                end = (self.packs_dir / where[0]).stat().st_size
            except OSError:
                end = 0
            self._index.discard_past(where[0], end)
        return target

    def _discard(self, digest: bytes, where: Location | None) -> bool:
        """Forget a block (only its copy at `where`, when given): its bytes become dead."""
        dropped = False
        for batch in self._open:
            dropped |= batch.unwrite(digest, where)
        return self._index.discard(digest, where) or dropped

    def forget(self, digest: bytes) -> bool:
        """Drop a block from the index (its bytes become dead, for gc to reclaim)."""
        return self._discard(digest, None)

    # -- gc ------------------------------------------------------------------------------------

    def collect(self, keep: set[bytes]) -> tuple[int, int, int]:
        """Forget every block not in `keep`, then rewrite the packs holding dead bytes.
        Returns (blocks removed, their bytes, blocks kept). Call under the exclusive lock."""
        removed = self._index.keep_only(keep)
        self._compact()
        shutil.rmtree(self.root / "tmp", ignore_errors=True)  # the old layout's half-written
        return removed

    def _compact(self) -> None:
        live = self._index.live_packs()
        dirty: list[str] = []
        for entry in list(os.scandir(self.packs_dir)):
            count, size = live.get(entry.name, (0, 0))
            if not count:
                _unlink_quietly(entry.path)  # nothing live in it (first: frees space at once)
            elif entry.stat().st_size != _pack_size(count, size):
                dirty.append(entry.name)
        if not dirty:
            return
        with self._batch(replace=True, sync=True) as batch:
            for name in dirty:
                for digest, pack, offset, length in self._index.rows_in(name):
                    where = (pack, offset, length)
                    try:
                        data = self._readers.pread(pack, offset, length)
                        self._check(digest, _MULTIHASH_PREFIX + digest.hex(), where, data)
                    except IntegrityError:
                        continue  # moved to corrupt/ and forgotten, as a read would
                    batch.append(digest, (data,))
                batch.flush()  # the copies are on disk and indexed before the original goes
                self._readers.drop(name)
                _unlink_quietly(self.packs_dir / name)

    # -- migration from one file per block -----------------------------------------------------

    def _migrate(self) -> None:
        """Move blocks/<2 hex>/1220<hex> files into a pack. Each shard's blocks are fsynced and
        indexed before its files are deleted, so a crash at any point loses nothing and the
        next open carries on (blocks already indexed are not written twice)."""
        old = self.root / "blocks"
        with self.lock.exclusive():
            if not old.is_dir():
                return  # another process got there first
            with self._batch(sync=True) as batch:
                for shard in sorted(old.iterdir()):
                    files = sorted(shard.iterdir()) if shard.is_dir() else [shard]
                    for path in files:
                        self._migrate_file(batch, path)
                    batch.flush()
                    for path in files:
                        _unlink_quietly(path)
                    _rmdir_quietly(shard)
            _rmdir_quietly(old)
            shutil.rmtree(self.root / "tmp", ignore_errors=True)

    def _migrate_file(self, batch: WriteBatch, path: Path) -> None:
        try:
            digest = bytes.fromhex(path.name.removeprefix(_MULTIHASH_PREFIX))
        except ValueError:
            digest = b""
        data = path.read_bytes()
        named_right = len(digest) == 32 and path.name.startswith(_MULTIHASH_PREFIX)
        if named_right and hashlib.sha256(data).digest() == digest:
            batch.put(digest, (data,))
            return
        self.corrupt_dir.mkdir(exist_ok=True)  # damaged, or not a block at all: set aside
        os.replace(path, self.corrupt_dir / path.name)


class WriteBatch:
    """The blocks of one add, appended to a pack of their own; a BlockSink.

    put() and put_many() may be called from several threads: each reserves its records' place
    in the pack under a lock, then writes them with one pwritev without holding it. Written
    blocks are readable through the Blockstore at once and indexed by flush() and close(), in
    one transaction each; close() deletes the pack if none of its records got indexed."""

    def __init__(self, store: Blockstore, *, replace: bool = False, sync: bool = False) -> None:
        self._store = store
        self._replace = replace  # repoint blocks already indexed (gc's copies)
        self._sync = sync or store.durable
        self.name = f"{time.time_ns():016x}-{os.getpid()}-{secrets.token_hex(4)}.pack"
        self.path = store.packs_dir / self.name
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
            raise _write_error(exc, store.root) from None
        _, error = _pwrite_all(self._fd, (PACK_MAGIC,), 0)
        if error is not None:
            os.close(self._fd)
            _unlink_quietly(self.path)
            raise _write_error(error, store.root)
        self._end = len(PACK_MAGIC)

    def put(self, digest: bytes, parts: Sequence[Buffer]) -> None:
        """Store a block unless the store already has it."""
        self.put_many([(digest, parts)])

    def put_many(self, blocks: Sequence[Block]) -> None:
        """Store the blocks the store does not have yet: one lookup and one write for all."""
        wanted = [block for block in blocks if block[0] not in self._claimed]
        if wanted:
            have = self._store._index.present([digest for digest, _ in wanted])
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
                self._failure = self._failure or _write_error(error, self._store.root)
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
                _fsync_dir(self._store.packs_dir)
        except OSError as exc:
            raise _write_error(exc, self._store.root) from None
        self._store._index.add(rows, replace=self._replace, sync=self._sync)
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
                _unlink_quietly(self.path)


class _PackReaders:
    """Read-only handles on pack files, shared by threads, the most recently used kept open.

    An evicted handle is closed when the last thread still reading through it lets go of it
    (_Handle.__del__), never under a reader. Packs are never changed once written, so a handle
    on a pack gc has since replaced still reads valid bytes."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._open: OrderedDict[str, _Handle] = OrderedDict()
        self._lock = threading.Lock()

    def pread(self, pack: str, offset: int, size: int) -> bytes:
        with self._lock:
            handle = self._open.get(pack)
            if handle is not None:
                self._open.move_to_end(pack)
        if handle is None:
            handle = self._add(pack)
        return os.pread(handle.fd, size, offset)

    def _add(self, pack: str) -> _Handle:
        handle = _Handle(os.open(self._folder / pack, os.O_RDONLY | os.O_CLOEXEC))
        with self._lock:
            self._open[pack] = handle
            # Let go of packs gc deleted (their space is freed once nobody has them open)...
            for name in [name for name, old in self._open.items() if old.deleted()]:
                del self._open[name]
            while len(self._open) > _OPEN_PACKS:  # ...and of the least recently used.
                self._open.popitem(last=False)
        return handle

    def drop(self, pack: str) -> None:
        with self._lock:
            self._open.pop(pack, None)

    def close(self) -> None:
        with self._lock:
            self._open.clear()


class _Handle:
    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def deleted(self) -> bool:
        return os.fstat(self.fd).st_nlink == 0

    def __del__(self, _close: Callable[[int], None] = os.close) -> None:
        _close(self.fd)  # bound early: module globals may be gone at interpreter exit


def _pack_size(blocks: int, block_bytes: int) -> int:
    """The size of a pack holding exactly these records."""
    return len(PACK_MAGIC) + blocks * RECORD_HEADER.size + block_bytes


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
    if exc.errno in _FULL_ERRNOS:
        return StoreFull(
            f"disk full while writing to {root}: free some space (or run "
            "`tributa store gc`) and retry; blocks already stored are intact"
        )
    return StoreError(f"cannot write a block under {root}: {exc.strerror}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: str | Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _rmdir_quietly(path: Path) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass
