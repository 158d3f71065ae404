"""Where each block lives: a SQLite table from digest to (pack, offset, length).

One connection per Blockstore, shared by its threads under a lock. WAL mode lets readers in
other processes go on while a writer commits, and SQLite serialises writers from several
processes (each waits up to BUSY_TIMEOUT_S). Every lookup goes to the database, so a process
sees blocks other processes added as soon as they are committed.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tributa.store.errors import StoreError, StoreFull

BUSY_TIMEOUT_S = 30.0
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

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """The connection, opened on first use (and again in a forked child), under the lock."""
        with self._lock, self._errors():
            self._drop_inherited()
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

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._sync_mode}")
        conn.executescript(_SCHEMA)
        return conn

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
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
            self._drop_inherited()
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- blocks --------------------------------------------------------------------------------

    def lookup(self, digest: bytes) -> Location | None:
        with self._db() as conn:
            row = conn.execute(
                "SELECT pack, offset, length FROM blocks WHERE digest = ?", (digest,)
            ).fetchone()
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
            removed, removed_bytes = conn.execute(
                f"SELECT count(*), coalesce(sum(length), 0) {dead}"
            ).fetchone()
            conn.execute(f"DELETE {dead}")
            conn.execute("DELETE FROM temp.keep")
            (kept,) = conn.execute("SELECT count(*) FROM blocks").fetchone()
        return removed, removed_bytes, kept

    # -- packs ---------------------------------------------------------------------------------

    def live_packs(self) -> dict[str, tuple[int, int]]:
        """pack name -> (blocks indexed in it, their total length)."""
        with self._db() as conn:
            rows = conn.execute(
                "SELECT pack, count(*), sum(length) FROM blocks GROUP BY pack"
            ).fetchall()
        return {pack: (count, size) for pack, count, size in rows}

    def rows_in(self, pack: str) -> list[Row]:
        with self._db() as conn:
            return conn.execute(
                "SELECT digest, pack, offset, length FROM blocks WHERE pack = ? ORDER BY offset",
                (pack,),
            ).fetchall()
