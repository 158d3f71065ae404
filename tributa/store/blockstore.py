"""Blocks on disk: the Blockstore ties the pack files to their SQLite index.

Layout under the store root:
    packs/<time>-<pid>-<random>.pack   append-only records digest | length | bytes (packformat.py)
    index.sqlite                       digest -> (pack, offset, length)  (packindex.py)
    corrupt/1220<digest hex>           bytes of blocks that failed a re-hash, kept for a look
    lock                               flock: writers share it; gc, migration, rebuild take it alone

Adds write through a WriteBatch (packwriter.py), whose blocks this Blockstore can read before
they are indexed; reads go through cached handles (packreader.py). Records no index row points
at (an add that crashed, a record cut short by a full disk, blocks gc found unreachable) are dead
bytes; gc copies the live records of every pack holding any into a fresh pack and deletes the
old one.

Every read re-hashes the block. A block whose bytes no longer match has them saved to corrupt/
and its row dropped, so adding the content again writes a fresh copy; the error says so.

The packs hold everything the index records, so the index can always be rebuilt from them
(rebuild_index). Opening a store whose index is missing, empty while packs exist, or not a
usable database rebuilds it at once (a damaged one is kept as index.sqlite.corrupt-<time>).
Stores made before packs are converted the first time they are opened (migrate.py).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tributa.store.base import Buffer, Progress
from tributa.store.cid import Cid
from tributa.store.errors import ContentIntegrityError, DamagedIndex, NotFound, StoreError
from tributa.store.files import block_file_name, unlink_quietly
from tributa.store.locking import StoreLock
from tributa.store.migrate import convert_old_layout
from tributa.store.packformat import PackScan, pack_size
from tributa.store.packindex import Location, PackIndex, Row
from tributa.store.packreader import PackReaders
from tributa.store.packwriter import WriteBatch

__all__ = ["BlockLocation", "Blockstore", "RebuildReport", "WriteBatch"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BlockLocation:
    """Where a block's bytes are: `length` bytes at `offset` in the pack file at `path`."""

    path: Path
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class RebuildReport:
    """What rebuilding the index from the packs found."""

    packs: int  # files scanned in packs/
    blocks: int  # blocks in the new index
    damaged: int  # records skipped: their bytes no longer hash to their digest
    torn: int  # packs whose last record is cut short (an add that crashed or hit a full disk)
    unreadable: int  # files in packs/ without the pack magic, or that could not be read
    problems: tuple[str, ...]  # one line per record or file passed over, naming pack and byte

    @classmethod
    def of(cls, scans: Sequence[PackScan], blocks: int) -> RebuildReport:
        return cls(
            packs=len(scans),
            blocks=blocks,
            damaged=sum(len(scan.damaged) for scan in scans),
            torn=sum(scan.torn_at is not None for scan in scans),
            unreadable=sum(scan.unreadable is not None for scan in scans),
            problems=tuple(line for scan in scans for line in scan.problems()),
        )

    def summary(self) -> str:
        """One line: `rebuilt the index from 3 packs: 120 blocks, 1 damaged record skipped`."""
        packs, blocks = _count(self.packs, "pack"), _count(self.blocks, "block")
        parts = [f"rebuilt the index from {packs}: {blocks}"]
        if self.damaged:
            parts.append(f"{_count(self.damaged, 'damaged record')} skipped")
        if self.torn:
            parts.append(f"{_count(self.torn, 'pack')} cut short at the end")
        if self.unreadable:
            parts.append(f"{_count(self.unreadable, 'unreadable file')}")
        return ", ".join(parts)


class Blockstore:
    """Content-addressed blocks under `root`. Safe to use from several threads and processes."""

    def __init__(self, root: Path, *, durable: bool = False, check_index: bool = True) -> None:
        """`check_index=False` skips looking at the index on open (and so its automatic rebuild,
        and the conversion of an old layout, which needs it): for rebuild_index() next."""
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
        self._readers = PackReaders(self.packs_dir)
        # This instance's open batches, whose blocks it can read before they are indexed.
        # Replaced, never changed in place, so readers need no lock.
        self._open: tuple[WriteBatch, ...] = ()
        self._open_lock = threading.Lock()
        if check_index:
            self._recover_index()
            convert_old_layout(self)

    def close(self) -> None:
        self._index.close()
        self._readers.close()

    # -- writing -------------------------------------------------------------------------------

    @contextmanager
    def writing(self) -> Iterator[WriteBatch]:
        """A batch to put an add's blocks into (under the shared lock, so gc waits for it)."""
        with self.lock.shared(), self.batch() as batch:
            yield batch

    @contextmanager
    def batch(self, *, replace: bool = False, sync: bool = False) -> Iterator[WriteBatch]:
        """A batch outside the shared lock, for callers holding the exclusive one (gc,
        migration); `replace` repoints blocks already indexed, `sync` fsyncs before indexing."""
        batch = WriteBatch(self._index, self.packs_dir, replace=replace, sync=sync or self.durable)
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
        """The verified bytes of a block; NotFound if absent, ContentIntegrityError if damaged."""
        found = self._fetch(cid.digest, cid)
        if found is None:
            raise NotFound(f"{cid} is not in the store: add it first, or check the CID")
        where, data = found
        self._check(cid.digest, cid, where, data)
        return data

    def first_byte(self, digest: bytes) -> int | None:
        """The first byte of a block (None if absent or empty); lets gc skip reading leaves."""
        name = block_file_name(digest)
        found = self._fetch(digest, name, size=1)
        if found is None:
            return None
        where, head = found
        if not head and where[2]:
            self._check(digest, name, where, head)  # cut short: raises, so gc stops
        return head[0] if head else None

    def _fetch(self, digest: bytes, name: object, size: int | None = None) -> tuple[Location, bytes] | None:
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
        raise ContentIntegrityError(
            f"block {name} is lost: its pack {self.packs_dir / pack} is gone; re-add the original content to repair it"
        )

    def _check(self, digest: bytes, name: object, where: Location, data: bytes) -> None:
        if hashlib.sha256(data).digest() != digest:
            moved = self._quarantine(digest, where, data)
            raise ContentIntegrityError(
                f"block {name} is corrupted or truncated ({len(data)} bytes no longer hash to "
                f"its CID); moved it to {moved}: re-add the original content to repair it"
            )

    def _quarantine(self, digest: bytes, where: Location, data: bytes) -> Path:
        """Keep the damaged bytes in corrupt/ and forget the block, so a re-add rewrites it."""
        target = self.corrupt_dir / block_file_name(digest)
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
                unlink_quietly(entry.path)  # nothing live in it (first: frees space at once)
            elif entry.stat().st_size != pack_size(count, size):
                dirty.append(entry.name)
        if not dirty:
            return
        with self.batch(replace=True, sync=True) as batch:
            for name in dirty:
                for digest, pack, offset, length in self._index.rows_in(name):
                    where = (pack, offset, length)
                    try:
                        data = self._readers.pread(pack, offset, length)
                        self._check(digest, block_file_name(digest), where, data)
                    except ContentIntegrityError:
                        continue  # moved to corrupt/ and forgotten, as a read would
                    batch.append(digest, (data,))
                batch.flush()  # the copies are on disk and indexed before the original goes
                self._readers.drop(name)
                unlink_quietly(self.packs_dir / name)

    # -- rebuilding the index from the packs ----------------------------------------------------

    def rebuild_index(self, progress: Progress | None = None) -> RebuildReport:
        """Replace the index with one made from the packs alone: every record is re-hashed and
        every intact one indexed (see PackScan for what is skipped). Blocks no pin reaches come
        back too, until the next gc. progress(bytes scanned, bytes in all packs) is called as
        it goes. Takes the exclusive lock, so adds and gc wait for it."""
        with self.lock.exclusive():
            report = self._rebuild(progress)
        convert_old_layout(self)  # an old layout's blocks are not in packs yet
        return report

    def _rebuild(self, progress: Progress | None) -> RebuildReport:
        packs = sorted(  # oldest first (names start with the time): its copy of a block wins
            (entry.name, entry.stat().st_size) for entry in os.scandir(self.packs_dir) if entry.is_file()
        )
        total = sum(size for _, size in packs)
        scans = [PackScan(self.packs_dir / name) for name, _ in packs]

        def rows() -> Iterator[Row]:
            done = 0
            for scan, (_, size) in zip(scans, packs, strict=False):
                for row in scan.records():
                    yield row
                    if progress is not None:
                        progress(done + row[2] + row[3], total)
                done += size
                if progress is not None:
                    progress(done, total)

        return RebuildReport.of(scans, self._index.rebuild(rows()))

    def _recover_index(self) -> None:
        """Rebuild the index now if it is damaged, or missing (or emptied) while packs exist."""
        if self._index_problem() is None:
            return
        with self.lock.exclusive():
            found = self._index_problem()  # again: another process may have rebuilt it
            if found is None:
                return
            problem, damaged = found
            if damaged:
                problem += f"; kept it as {self._index.move_aside()}"
            log.warning("store index %s %s: rebuilding it from the packs", self._index.path, problem)
            report = self._rebuild(None)
        log.warning("store index %s: %s", self._index.path, report.summary())
        for line in report.problems:
            log.warning("store index rebuild skipped: %s", line)

    def _index_problem(self) -> tuple[str, bool] | None:
        """(what is wrong with the index, whether its file is damaged), or None if it can be
        used as it is. A new index is only wrong where packs already hold blocks."""
        try:
            if not self._index.path.exists():
                return ("is missing", False) if self._has_packs() else None
            if self._index.probe() and self._has_packs():
                return "has no table of blocks", False  # emptied, e.g. truncated to 0 bytes
        except DamagedIndex as exc:
            return f"is damaged ({exc.reason})", True
        return None

    def _has_packs(self) -> bool:
        with os.scandir(self.packs_dir) as entries:
            return any(entries)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
