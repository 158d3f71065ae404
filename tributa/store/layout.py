"""The UnixFS DAG `ipfs add` builds, node by node, exactly as Kubo (boxo's balanced importer):

  * fixed-size chunks of 262144 bytes; an empty file is one empty leaf;
  * a balanced DAG, at most 174 links per node, all leaves at the same depth; a single-chunk
    file is just its leaf; a node that fills up is closed before the next leaf arrives;
  * CIDv0: leaves are dag-pb UnixFS File nodes. CIDv1 (`--cid-version=1`) switches raw leaves
    on, so leaves are raw blocks (`bafk…`) and inner nodes are CIDv1 dag-pb (`bafy…`);
  * directories are UnixFS Directory nodes with links sorted by name bytes (as Go sorts).

Every finished block goes to a BlockSink with its sha2-256; a parent only keeps its children's
(CID, Tsize, filesize), so memory is bounded by 174 links per level of the tree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from tributa.store import dagpb, unixfs
from tributa.store.base import Buffer
from tributa.store.cid import Cid
from tributa.store.errors import StoreError
from tributa.store.hamt import sharded_directory

CHUNK_SIZE = 262144
MAX_LINKS = 174
# Kubo turns a directory into a HAMT shard once the sum over its entries of
# len(name) + len(binary CID) reaches this (Internal.UnixFSShardingSizeThreshold, 256KiB).
HAMT_SHARDING_THRESHOLD = 262144


class BlockSink(Protocol):
    """Where finished blocks go. `parts` concatenated are the block; `digest` is its sha2-256.

    A sink may also have put_many([(digest, parts), ...]) to take several blocks in one call
    (the embedded store then looks them up and writes them together); see put_blocks."""

    def put(self, digest: bytes, parts: Sequence[Buffer]) -> None: ...


Block = tuple[bytes, Sequence[Buffer]]


def put_blocks(sink: BlockSink, blocks: list[Block]) -> None:
    put_many = getattr(sink, "put_many", None)
    if put_many is not None:
        put_many(blocks)
        return
    for digest, parts in blocks:
        sink.put(digest, parts)


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


def validate_version(cid_version: int) -> None:
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


def leaf(chunk: memoryview, cid_version: int, sink: BlockSink) -> Link:
    link, block = _leaf_block(chunk, cid_version)
    sink.put(*block)
    return link


def leaves(chunks: Sequence[memoryview], cid_version: int, sink: BlockSink) -> list[Link]:
    """leaf() for consecutive chunks, their blocks handed to the sink in one put_blocks."""
    built = [_leaf_block(chunk, cid_version) for chunk in chunks]
    put_blocks(sink, [block for _, block in built])
    return [link for link, _ in built]


def _leaf_block(chunk: memoryview, cid_version: int) -> tuple[Link, Block]:
    size = len(chunk)
    if cid_version == 1:
        digest = hashlib.sha256(chunk).digest()
        return Link(Cid(1, "raw", digest), size, size), (digest, (chunk,))
    prefix, suffix = unixfs.file_leaf_frame(size)
    hasher = hashlib.sha256(prefix)
    hasher.update(chunk)
    hasher.update(suffix)
    digest = hasher.digest()
    link = Link(Cid(0, "dag-pb", digest), len(prefix) + size + len(suffix), size)
    return link, (digest, (prefix, chunk, suffix))


def empty_file(cid_version: int, sink: BlockSink) -> Link:
    if cid_version == 1:
        block = b""
        digest = hashlib.sha256(block).digest()
        sink.put(digest, (block,))
        return Link(Cid(1, "raw", digest), 0, 0)
    block = dagpb.encode_node([], unixfs.EMPTY_FILE_DATA)
    digest = hashlib.sha256(block).digest()
    sink.put(digest, (block,))
    return Link(Cid(0, "dag-pb", digest), len(block), 0)


def symlink_node(target: bytes, cid_version: int, sink: BlockSink) -> Link:
    block = dagpb.encode_node([], unixfs.encode_symlink_data(target))
    digest = hashlib.sha256(block).digest()
    sink.put(digest, (block,))
    return Link(Cid(cid_version, "dag-pb", digest), len(block), 0)


def directory_node(
    children: list[tuple[bytes, Link]],
    cid_version: int,
    sink: BlockSink,
    sharding_threshold: int = HAMT_SHARDING_THRESHOLD,
) -> Link:
    """A UnixFS directory over named children: a plain node (links sorted by name bytes, like
    Go), or, from Kubo's size estimate up, a HAMT shard (tributa/store/hamt.py)."""
    children = sorted(children, key=lambda item: item[0])
    estimate = sum(len(name) + len(link.cid.to_bytes()) for name, link in children)
    if estimate >= sharding_threshold:
        return sharded_directory(children, cid_version, sink)
    links = [dagpb.encode_link(link.cid.to_bytes(), name, link.tsize) for name, link in children]
    block = dagpb.encode_node(links, unixfs.DIRECTORY_DATA)
    digest = hashlib.sha256(block).digest()
    sink.put(digest, (block,))
    return Link(
        Cid(cid_version, "dag-pb", digest),
        len(block) + sum(link.tsize for _, link in children),
        0,
    )
