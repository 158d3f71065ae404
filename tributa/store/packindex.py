"""Where each block lives: a SQLite table from digest to (pack, offset, length).

One connection per Blockstore, shared by its threads under a lock. WAL mode lets readers in
other processes go on while a writer commits, and SQLite serialises writers from several
processes (each waits up to BUSY_TIMEOUT_S). Every lookup goes to the database, so a process
sees blocks other processes added as soon as they are committed.

The index only says where blocks are: the packs hold everything it records, so a lost or
damaged index is rebuilt from them (rebuild(), fed by packformat.PackScan) into a new file that
replaces the old one. A connection notices the replacement and reopens on its next use.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tributa.sqlite_wal import enter_wal
from tributa.store.errors import DamagedIndex, StoreError, StoreFull, StoreUnwritable
from tributa.store.files import fsync_dir, fsync_file, unlink_quietly
from tributa.writable import describe, sqlite_files, unwritable

BUSY_TIMEOUT_S = 30.0
_DAMAGED = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
# The disk under the index failing, read-only or gone for a moment: an outage to retry, not a bad request.
_UNUSABLE = {sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN}
_SIDECARS = ("-wal", "-shm")  # SQLite's files beside the database in WAL mode
_INHERITED: list[sqlite3.Connection] = []  # connections a forked child must leave alone

Location = tuple[str, int, int]
"""(pack file name, offset of the block's first byte in it, block length)."""

Row = tuple[bytes, str, int, int]
"""(digest, *Location)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (
    digest BLOB PRIMARY KEY,
    pack TEXT NOT NULL,
    offset INTEGER NOT NULL,
    length INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blocks_by_pack ON blocks (pack, offset);
"""


class PackIndex:
    def __init__(self, path: Path, *, durable: bool = False) -> None:
        self.path = path
        # FULL fsyncs the WAL on every commit; NORMAL only at checkpoints (a commit may be lost
        # on power loss, the database stays consistent).
        self._sync_mode = "FULL" if durable else "NORMAL"
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._file: tuple[int, int] | None = None  # (device, inode) the connection has open
        self._created = False  # whether opening the connection created the table

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """The connection, opened on first use (and again in a forked child), under the lock."""
        with self._lock, self._errors():
            # Reads too write to -shm, through an mmap: an immutable one would be SIGBUS, not an error.
            blocked = unwritable(sqlite_files(self.path))
            if blocked is not None:
                raise StoreUnwritable(
                    f"the store index cannot be used now: {describe(blocked)}; make it writable and retry"
                )
            self._drop_inherited()
            if self._conn is not None and self._replaced():
                self._close_locked()
            if self._conn is None:
                self._conn = self._open()
                self._pid = os.getpid()
            yield self._conn

    def _drop_inherited(self) -> None:
        # SQLite forbids using, or closing, a connection opened before fork() in the child:
        # keep it referenced (never closed) and let the child open its own.
        if self._conn is not None and self._pid != os.getpid():
            _INHERITED.append(self._conn)
            self._conn = None

    def _replaced(self) -> bool:
        """Whether a rebuild put a new file where the open one was (a file deleted from under
        the connection is kept: it still answers, and the next open rebuilds the index)."""
        current = _file_id(self.path)
        return current is not None and current != self._file

    def _open(self) -> sqlite3.Connection:
        self._file = _file_id(self.path)  # before connecting: a race only costs a reopen
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        try:
            enter_wal(conn)  # two processes opening a fresh store at once: one waits, not fails
            conn.execute(f"PRAGMA synchronous={self._sync_mode}")
            self._created = not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'blocks'").fetchall()
            conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        if self._file is None:
            self._file = _file_id(self.path)
        return conn

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # the primary code
            if code in _DAMAGED:
                raise DamagedIndex(self.path, str(exc)) from None
            if code in _UNUSABLE:
                raise StoreUnwritable(
                    f"the store index {self.path} cannot be used now ({exc}): check the disk and its "
                    "permissions, then retry; blocks already stored are intact"
                ) from None
            if code == sqlite3.SQLITE_FULL:
                raise StoreFull(
                    f"disk full while writing the store index {self.path}: free some space (or "
                    "run `tributa store gc`) and retry; blocks already stored are intact"
                ) from None
            raise StoreError(f"the store index {self.path} failed: {exc}") from None

    @contextmanager
    def _transaction(self, *, sync: bool = False) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT; `sync` makes this commit durable even in a NORMAL store
        (for commits after which the only other copy of the data is deleted)."""
        with self._db() as conn:
            if sync:
                conn.execute("PRAGMA synchronous=FULL")
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:  # also when COMMIT itself failed (a full disk)
                        conn.execute("ROLLBACK")
                    raise
            finally:
                if sync:
                    conn.execute(f"PRAGMA synchronous={self._sync_mode}")

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        self._drop_inherited()
        if self._conn is not None:
            self._conn.close()  # SQLite leaves a file that was moved away alone on close
            self._conn = None

    # -- rebuilding ----------------------------------------------------------------------------

    def probe(self) -> bool:
        """Open the index now and read from it: DamagedIndex if it is not a usable database
        (only what this reads is checked; damage elsewhere shows when it is reached). Returns
        whether opening it created its table: a new file, or one emptied."""
        with self._db() as conn:
            conn.execute("SELECT 1 FROM blocks LIMIT 1").fetchall()
            return self._created

    def move_aside(self) -> Path:
        """Rename a damaged index (with its WAL) to index.sqlite.corrupt-<UTC time>, kept for
        a look; the next use starts a new one."""
        self.close()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        number = 1
        while aside.exists():  # set aside twice in a second
            number += 1
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{number}")
        try:
            os.replace(self.path, aside)
            if os.path.exists(f"{self.path}-wal"):
                os.replace(f"{self.path}-wal", f"{aside}-wal")
        except OSError as exc:
            raise StoreError(f"cannot move the damaged index {self.path} aside: {exc}") from None
        unlink_quietly(f"{self.path}-shm")
        return aside

    def rebuild(self, rows: Iterable[Row]) -> int:
        """Replace the index with one holding `rows` (the first row of a digest wins) and return
        how many blocks it holds. The new index is built in a file of its own, fsynced, then
        renamed over the old one, so a crash leaves either the old index or the new one. Call
        under the store's exclusive lock (so no add commits meanwhile)."""
        building = self.path.with_name(f"{self.path.name}.rebuilding")
        _remove_database(building)  # left by a rebuild that crashed
        try:
            with self._errors():
                conn = sqlite3.connect(building, isolation_level=None)
                try:
                    # A crash leaves only this file, redone next time: no journal, no syncs.
                    conn.execute("PRAGMA journal_mode=OFF")
                    conn.execute("PRAGMA synchronous=OFF")
                    conn.execute("PRAGMA cache_size=-65536")  # 64 MiB: digests arrive unsorted
                    conn.executescript(_SCHEMA)
                    conn.execute("BEGIN")
                    conn.executemany("INSERT OR IGNORE INTO blocks VALUES (?, ?, ?, ?)", rows)
                    (count,) = conn.execute("SELECT count(*) FROM blocks").fetchone()
                    conn.execute("COMMIT")
                finally:
                    conn.close()
            try:
                fsync_file(building)
                with self._lock:  # this instance's other threads wait, then open the new file
                    self._close_locked()
                    # The old file's WAL would be replayed into the new one: it goes first.
                    for sidecar in _SIDECARS:
                        unlink_quietly(f"{self.path}{sidecar}")
                    os.replace(building, self.path)
                fsync_dir(self.path.parent)
            except OSError as exc:
                raise StoreError(f"cannot put the rebuilt index in place at {self.path}: {exc.strerror}") from None
        finally:
            _remove_database(building)
        return count

    # -- blocks --------------------------------------------------------------------------------

    def lookup(self, digest: bytes) -> Location | None:
        with self._db() as conn:
            row = conn.execute("SELECT pack, offset, length FROM blocks WHERE digest = ?", (digest,)).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def present(self, digests: list[bytes]) -> set[bytes]:
        """Those of `digests` that are indexed, in one query."""
        found: set[bytes] = set()
        with self._db() as conn:
            for start in range(0, len(digests), 500):  # under SQLite's bound on parameters
                some = digests[start : start + 500]
                marks = ", ".join("?" * len(some))
                query = f"SELECT digest FROM blocks WHERE digest IN ({marks})"
                found.update(row[0] for row in conn.execute(query, some))
        return found

    def add(self, rows: list[Row], *, replace: bool = False, sync: bool = False) -> None:
        """Index blocks; an already indexed digest keeps its row unless `replace`."""
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        with self._transaction(sync=sync) as conn:
            conn.executemany(f"{verb} INTO blocks VALUES (?, ?, ?, ?)", rows)

    def discard(self, digest: bytes, where: Location | None = None) -> bool:
        """Drop a block's row (only if it still points at `where`, when given)."""
        with self._db() as conn:
            if where is None:
                cursor = conn.execute("DELETE FROM blocks WHERE digest = ?", (digest,))
            else:
                cursor = conn.execute(
                    "DELETE FROM blocks WHERE digest = ? AND pack = ? AND offset = ?",
                    (digest, where[0], where[1]),
                )
        return cursor.rowcount > 0

    def discard_past(self, pack: str, end: int) -> None:
        """Drop the rows of every block in `pack` that does not end by byte `end` (the pack was
        cut short there, or is gone when `end` is 0)."""
        with self._db() as conn:
            conn.execute("DELETE FROM blocks WHERE pack = ? AND offset + length > ?", (pack, end))

    def keep_only(self, keep: Iterable[bytes]) -> tuple[int, int, int]:
        """Drop every row whose digest is not in `keep`: (rows dropped, their bytes, rows kept)."""
        with self._transaction() as conn:
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS keep (digest BLOB PRIMARY KEY)")
            conn.execute("DELETE FROM temp.keep")
            conn.executemany("INSERT OR IGNORE INTO temp.keep VALUES (?)", ((d,) for d in keep))
            dead = "FROM blocks WHERE digest NOT IN (SELECT digest FROM temp.keep)"
            removed, removed_bytes = conn.execute(f"SELECT count(*), coalesce(sum(length), 0) {dead}").fetchone()
            conn.execute(f"DELETE {dead}")
            conn.execute("DELETE FROM temp.keep")
            (kept,) = conn.execute("SELECT count(*) FROM blocks").fetchone()
        return removed, removed_bytes, kept

    # -- packs ---------------------------------------------------------------------------------

    def live_packs(self) -> dict[str, tuple[int, int]]:
        """pack name -> (blocks indexed in it, their total length)."""
        with self._db() as conn:
            rows = conn.execute("SELECT pack, count(*), sum(length) FROM blocks GROUP BY pack").fetchall()
        return {pack: (count, size) for pack, count, size in rows}

    def rows_in(self, pack: str) -> list[Row]:
        with self._db() as conn:
            return conn.execute(
                "SELECT digest, pack, offset, length FROM blocks WHERE pack = ? ORDER BY offset",
                (pack,),
            ).fetchall()


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _remove_database(path: Path) -> None:
    for suffix in ("", "-journal", *_SIDECARS):
        unlink_quietly(f"{path}{suffix}")
