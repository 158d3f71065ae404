"""Reading UnixFS DAGs back: stream a file, walk every block, list and export directories.

Everything here works on verified blocks from a BlockSource and keeps memory bounded by the
DAG's depth (one node's links per level), never by the content's size.
"""

from __future__ import annotations

import os
import secrets
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tributa.store import dagpb, unixfs
from tributa.store.cid import Cid
from tributa.store.errors import ContentIntegrityError, NotFound, StoreError, write_error
from tributa.store.unixfs import DataType


class BlockSource(Protocol):
    def read(self, cid: Cid) -> bytes:
        """Verified block bytes; NotFound if absent, ContentIntegrityError if damaged."""
        ...


@dataclass(frozen=True, slots=True)
class Node:
    """A decoded block: raw data, or a dag-pb node with its UnixFS payload."""

    cid: Cid
    block: bytes
    links: list[dagpb.PBLink]
    fs: unixfs.UnixFsData | None  # None for raw blocks

    @property
    def kind(self) -> DataType:
        return DataType.RAW if self.fs is None else self.fs.type


def decode(cid: Cid, block: bytes) -> Node:
    if cid.codec == "raw":
        return Node(cid, block, [], None)
    try:
        pb = dagpb.decode_node(block)
        if pb.data is None:
            raise unixfs.UnixFsError("the node has no UnixFS Data")
        fs = unixfs.decode_data(pb.data)
    except ValueError as exc:
        raise ContentIntegrityError(f"block {cid} is not a valid UnixFS node ({exc})") from None
    return Node(cid, block, pb.links, fs)


def _read_child(source: BlockSource, cid: Cid, root: Cid) -> bytes:
    try:
        return source.read(cid)
    except NotFound:
        raise ContentIntegrityError(f"block {cid} of {root} is missing: the content is incomplete; re-add it") from None


def load(source: BlockSource, cid: Cid) -> Node:
    return decode(cid, source.read(cid))


# -- files -------------------------------------------------------------------------------------


def open_file(source: BlockSource, cid: Cid, prefetch: int = 0) -> Iterator[bytes]:
    """Check the root now (so errors surface at the call) and return the chunk iterator.

    With `prefetch` > 1, that many upcoming blocks are read and re-hashed by worker threads
    while earlier chunks are consumed (hashlib and file reads release the GIL)."""
    root = load(source, cid)
    require_file(root)
    return _file_chunks(source, root, prefetch)


def require_file(node: Node) -> None:
    kind = node.kind
    if kind in (DataType.DIRECTORY, DataType.HAMT_SHARD):
        raise StoreError(f"{node.cid} is a directory, not a file: export it with `tributa store get {node.cid} -o DIR`")
    if kind == DataType.SYMLINK:
        raise StoreError(f"{node.cid} is a symlink, not a file")
    if kind not in (DataType.FILE, DataType.RAW):
        raise StoreError(f"{node.cid} is a UnixFS {kind.name.lower()} node, not a file")


def _ahead(
    pool: ThreadPoolExecutor,
    fetch: Callable[[dagpb.PBLink], Node],
    links: list[dagpb.PBLink],
    window: int,
) -> Iterator[Node]:
    """fetch(link) for each link, in order, keeping `window` fetches running ahead."""
    pending: deque[Future[Node]] = deque()
    for link in links:
        pending.append(pool.submit(fetch, link))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _file_chunks(source: BlockSource, root: Node, prefetch: int = 0) -> Iterator[bytes]:
    expected = root.fs.filesize if root.fs is not None else len(root.block)
    produced = 0
    stack: list[Iterator[Node]] = []
    pool = ThreadPoolExecutor(prefetch, thread_name_prefix="store-read") if prefetch > 1 else None

    def fetch(link: dagpb.PBLink) -> Node:
        return decode(link.cid, _read_child(source, link.cid, root.cid))

    def emit(node: Node) -> bytes | None:
        if node.fs is None:
            return node.block
        if node.fs.type not in (DataType.FILE, DataType.RAW):
            raise ContentIntegrityError(f"block {node.cid} inside file {root.cid} is not file data")
        if node.links:
            if pool is None:
                stack.append(fetch(link) for link in node.links)
            else:
                stack.append(_ahead(pool, fetch, node.links, prefetch))
        return bytes(node.fs.data) if node.fs.data is not None and len(node.fs.data) else None

    try:
        first = emit(root)
        if first:
            produced += len(first)
            yield first
        while stack:
            node = next(stack[-1], None)
            if node is None:
                stack.pop()
                continue
            chunk = emit(node)
            if chunk:
                produced += len(chunk)
                if expected is not None and produced > expected:
                    # Stop at once: links repeating one leaf could otherwise write far past the size.
                    raise ContentIntegrityError(
                        f"{root.cid} yields more than the {expected} bytes its root records: "
                        "the DAG is inconsistent; re-add the content"
                    )
                yield chunk
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
    if expected is not None and produced != expected:
        raise ContentIntegrityError(
            f"{root.cid} yielded {produced} bytes but its root records {expected}: "
            "the DAG is truncated or inconsistent; re-add the content"
        )


# -- walking -----------------------------------------------------------------------------------


def walk(source: BlockSource, cid: Cid) -> Iterator[Node]:
    """Every block of a DAG, depth first, each read (and so re-hashed) once per visit."""
    root = load(source, cid)
    yield root
    stack: list[Iterator[dagpb.PBLink]] = [iter(root.links)]
    while stack:
        link = next(stack[-1], None)
        if link is None:
            stack.pop()
            continue
        node = decode(link.cid, _read_child(source, link.cid, cid))
        yield node
        if node.links:
            stack.append(iter(node.links))


# -- directories -------------------------------------------------------------------------------


MAX_SHARD_DEPTH = 64  # a HAMT over a 64-bit hash splits at most 64 times (fanout 2); Kubo's 256 needs 8


def list_dir(source: BlockSource, node: Node, _depth: int = 0) -> Iterator[tuple[bytes, Cid]]:
    """(name, cid) of each entry of a plain or HAMT-sharded UnixFS directory."""
    if node.kind == DataType.DIRECTORY:
        for link in node.links:
            yield link.name, link.cid
        return
    if node.kind != DataType.HAMT_SHARD:
        raise StoreError(f"{node.cid} is not a directory")
    fanout = node.fs.fanout if node.fs is not None and node.fs.fanout else 256
    prefix = len(f"{fanout - 1:X}")
    for link in node.links:
        if len(link.name) == prefix:  # a sub-shard: its entries carry the real names
            if _depth >= MAX_SHARD_DEPTH:
                raise ContentIntegrityError(f"directory {node.cid} nests HAMT shards more than {MAX_SHARD_DEPTH} deep")
            yield from list_dir(source, decode(link.cid, _read_child(source, link.cid, node.cid)), _depth + 1)
        else:
            yield link.name[prefix:], link.cid


TEMP_SUFFIX = ".tributa-tmp"
MAX_EXPORT_DEPTH = 256  # folders below the root; deeper trees are refused, not recursed into


def _safe_name(name: bytes, where: Cid) -> str:
    if not name or name in (b".", b"..") or b"/" in name or b"\0" in name:
        raise ContentIntegrityError(f"directory {where} holds an unsafe entry name {name!r}; refusing to export it")
    text = os.fsdecode(name)
    if text.endswith(TEMP_SUFFIX):
        # Never valid content: such a name could only be there to meet an export's temp file.
        raise ContentIntegrityError(
            f"directory {where} holds an entry named like an export's temporary file ({name!r}); refusing to export it"
        )
    return text


def entries(source: BlockSource, node: Node) -> Iterator[tuple[str, Cid]]:
    """(name, cid) of a directory's entries, each name checked safe to create in a folder and
    unique: a crafted node may repeat a name, which Kubo never writes."""
    seen: set[str] = set()
    for raw, child in list_dir(source, node):
        name = _safe_name(raw, node.cid)
        if name in seen:
            raise ContentIntegrityError(f"directory {node.cid} holds the entry {raw!r} twice; refusing to export it")
        seen.add(name)
        yield name, child


def link_target(node: Node, depth: int | None, shown: object) -> str:
    """A symlink node's target, if following it from where it is exported stays inside the
    exported tree; `depth`: folders between the tree's root and the link (None: the link is the
    root itself, so every target is outside).

    Only relative targets whose '..' all come first, no more of them than `depth`: a '..' after
    another component could climb out through a second link (`a -> .`, `b -> a/..`)."""
    target = bytes(node.fs.data) if node.fs is not None and node.fs.data is not None else b""
    parts = [part for part in target.split(b"/") if part not in (b"", b".")]
    ups = 0
    while ups < len(parts) and parts[ups] == b"..":
        ups += 1
    inside = (
        depth is not None
        and target
        and not target.startswith(b"/")
        and b"\0" not in target
        and b".." not in parts[ups:]
        and ups <= depth
    )
    if not inside:
        raise ContentIntegrityError(
            f"{shown} would be a symlink to {target!r}, which points outside the exported tree; refusing to export it"
        )
    return os.fsdecode(target)


def tree_files(source: BlockSource, cid: Cid) -> Iterator[tuple[tuple[str, ...], Node]]:
    """(path below the root, root node) of every file in a file or directory DAG, straight from
    the blocks: symlinks are skipped, never resolved, and nothing touches the file system."""
    # CIDs, not nodes, wait on the stack: a single-chunk file is its own (up to 256 KiB) block.
    stack: list[tuple[tuple[str, ...], Cid]] = [((), cid)]
    while stack:
        parts, at = stack.pop()
        node = decode(at, _read_child(source, at, cid)) if parts else load(source, cid)
        if node.kind in (DataType.DIRECTORY, DataType.HAMT_SHARD):
            if len(parts) > MAX_EXPORT_DEPTH:
                raise ContentIntegrityError(f"{cid} nests folders more than {MAX_EXPORT_DEPTH} deep")
            stack.extend(((*parts, name), child) for name, child in entries(source, node))
        elif node.kind != DataType.SYMLINK:
            require_file(node)
            yield parts, node


def file_chunks(source: BlockSource, node: Node) -> Iterator[bytes]:
    """The bytes of a file node from tree_files, streamed and re-hashed block by block."""
    return _file_chunks(source, node)


WriteFile = Callable[[Iterator[bytes], int, str], None]
"""write_file(chunks, dir_fd, name): create the new file `name` in the open folder `dir_fd`."""

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def export_tree(source: BlockSource, cid: Cid, dest: Path, write_file: WriteFile) -> None:
    """Recreate `cid` at `dest`, which must not exist yet; its parent folders are created.

    Every entry is created new (mkdir, O_EXCL|O_NOFOLLOW) relative to its folder's descriptor,
    so nothing in the tree, not even one of its own symlinks, is ever followed while writing."""
    dest = Path(dest)
    if dest.exists() or dest.is_symlink():
        raise StoreError(f"{dest} already exists: choose a new path or remove it first")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        parent = os.open(dest.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise write_error(exc, str(exc.filename or dest)) from None
    try:
        _export(source, cid, parent, dest.name, dest, None, write_file)
    finally:
        os.close(parent)


def _export(
    source: BlockSource,
    cid: Cid,
    parent: int,
    name: str,
    shown: Path,
    depth: int | None,
    write_file: WriteFile,
) -> None:
    """Create `name` in the folder `parent`; `depth` as for link_target."""
    node = load(source, cid)
    try:
        if node.kind in (DataType.DIRECTORY, DataType.HAMT_SHARD):
            level = 0 if depth is None else depth + 1
            if level > MAX_EXPORT_DEPTH:
                raise ContentIntegrityError(
                    f"{cid} nests folders more than {MAX_EXPORT_DEPTH} deep; refusing to export it"
                )
            os.mkdir(name, dir_fd=parent)
            folder = os.open(name, _DIR_FLAGS, dir_fd=parent)
            try:
                for child_name, child in entries(source, node):
                    _export(source, child, folder, child_name, shown / child_name, level, write_file)
            finally:
                os.close(folder)
        elif node.kind == DataType.SYMLINK:
            os.symlink(link_target(node, depth, shown), name, dir_fd=parent)
        else:
            require_file(node)
            write_file(_file_chunks(source, node), parent, name)
    except OSError as exc:
        raise write_error(exc, str(shown)) from None


def write_file_atomically(chunks: Iterator[bytes], dir_fd: int, name: str) -> None:
    """Write a streamed file via a fresh temp name, so a failed export leaves no partial file.

    The temp file is created with O_EXCL|O_NOFOLLOW: an entry already there (a planted symlink)
    makes the write fail rather than go through it."""
    tmp = f".{secrets.token_hex(8)}{TEMP_SUFFIX}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise


def verify(store, root: Cid):
    """Re-hash every block under `root` (walk re-hashes each as it reads); count what was checked."""
    from tributa.store.base import VerifyReport

    blocks = size = 0
    for node in walk(store, root):
        blocks += 1
        size += len(node.block)
    return VerifyReport(cid=root, blocks=blocks, bytes=size)
