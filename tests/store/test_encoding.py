"""dag-pb and UnixFS bytes, and the balanced layout's tree shape, checked against Kubo's rules."""

from __future__ import annotations

import hashlib
from typing import Union

import pytest

from tests.store.helpers import MemorySink
from tributa.store import dagpb, unixfs
from tributa.store.cid import Cid
from tributa.store.importer import Importer
from tributa.store.layout import BalancedLayout, HashOnly, Link, directory_node

Tree = Union[int, list["Tree"]]  # noqa: UP007


def test_empty_file__is_kubos_well_known_node() -> None:
    sink = MemorySink()
    link = Importer(sink).add_bytes(b"")
    assert str(link.cid) == "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
    assert sink.blocks[link.cid.digest] == bytes.fromhex("0a0408021800")
    assert link.tsize == 6


def test_single_chunk_file__root_is_the_leaf_with_type_data_and_filesize() -> None:
    sink = MemorySink()
    link = Importer(sink).add_bytes(b"hello world")
    block = sink.blocks[link.cid.digest]
    # PBNode{Data: UnixFS{Type: File, Data: "hello world", filesize: 11}}
    assert block == bytes.fromhex("0a110802120b") + b"hello world" + bytes.fromhex("180b")
    assert str(link.cid) == "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD"
    assert len(sink.blocks) == 1


def test_two_chunk_file__root_links_come_before_data_with_tsize_and_blocksizes() -> None:
    sink = MemorySink()
    payload = bytes(262144) + b"x"
    link = Importer(sink, workers=0).add_bytes(payload)
    root = sink.blocks[link.cid.digest]
    assert root[0] == 0x12, "canonical dag-pb: Links (field 2) are written before Data"
    node = dagpb.decode_node(root)
    assert [entry.name for entry in node.links] == [b"", b""]
    leaf_sizes = [len(sink.blocks[entry.cid.digest]) for entry in node.links]
    assert [entry.tsize for entry in node.links] == leaf_sizes
    assert node.data is not None
    fs = unixfs.decode_data(node.data)
    assert (fs.type, fs.filesize, fs.blocksizes) == (unixfs.DataType.FILE, 262145, [262144, 1])
    assert fs.data is None
    assert link.tsize == len(root) + sum(leaf_sizes)


def test_empty_directory__is_kubos_well_known_node() -> None:
    sink = MemorySink()
    link = directory_node([], 0, sink)
    assert sink.blocks[link.cid.digest] == bytes.fromhex("0a020801")
    assert str(link.cid) == "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"


def test_decode_node__rejects_links_after_data_and_truncation() -> None:
    good = dagpb.encode_node([dagpb.encode_link(Cid(0, "dag-pb", bytes(32)).to_bytes(), b"a", 1)], b"\x08\x01")
    assert dagpb.decode_node(good).links[0].name == b"a"
    reordered = good[good.index(b"\x0a\x02\x08\x01") :] + good[: good.index(b"\x0a\x02\x08\x01")]
    with pytest.raises(dagpb.DagPbError, match="follows the Data"):
        dagpb.decode_node(reordered)
    with pytest.raises(dagpb.DagPbError, match="past the end"):
        dagpb.decode_node(good[:-1])


def test_unixfs_decode__missing_type__is_rejected() -> None:
    with pytest.raises(unixfs.UnixFsError, match="missing Type"):
        unixfs.decode_data(b"\x18\x00")


# -- the balanced layout -----------------------------------------------------------------------


def boxo_balanced_shape(leaves: int, max_links: int) -> Tree:
    """boxo's balanced.Layout / fillNodeRec, transliterated: the reference tree shape."""
    source = iter(range(leaves))
    upcoming = [next(source, None)]

    def done() -> bool:
        return upcoming[0] is None

    def take() -> int:
        value = upcoming[0]
        upcoming[0] = next(source, None)
        assert value is not None
        return value

    def fill(node: list[Tree], depth: int) -> list[Tree]:
        while len(node) < max_links and not done():
            node.append(take() if depth == 1 else fill([], depth - 1))
        return node

    root: Tree = take()
    depth = 1
    while not done():
        root = fill([root], depth)
        depth += 1
    return root


def built_shape(leaves: int, max_links: int) -> Tree:
    sink = MemorySink()
    layout = BalancedLayout(sink, cid_version=1, max_links=max_links)
    leaf_index: dict[bytes, int] = {}
    for index in range(leaves):
        digest = hashlib.sha256(index.to_bytes(4, "big")).digest()
        leaf_index[digest] = index
        layout.add_leaf(Link(Cid(1, "raw", digest), 10, 10))
    root = layout.finish()

    def shape(cid: Cid) -> Tree:
        if cid.codec == "raw":
            return leaf_index[cid.digest]
        node = dagpb.decode_node(sink.blocks[cid.digest])
        assert node.data is not None
        children = [shape(entry.cid) for entry in node.links]
        assert unixfs.decode_data(node.data).blocksizes == [10 * count_leaves(c) for c in children]
        return children

    return shape(root.cid)


def count_leaves(tree: Tree) -> int:
    return 1 if isinstance(tree, int) else sum(count_leaves(child) for child in tree)


@pytest.mark.parametrize("max_links,depth", [(2, 5), (3, 4), (4, 3)])
def test_balanced_layout__small_fanout__matches_boxos_tree_for_every_leaf_count(max_links: int, depth: int) -> None:
    # Every count from one leaf to one past a full tree of `depth` levels: each depth change.
    for leaves in range(1, max_links**depth + 2):
        assert built_shape(leaves, max_links) == boxo_balanced_shape(leaves, max_links), leaves


def test_hash_only_and_threaded_imports__give_the_same_cid_as_inline() -> None:
    payload = bytes(range(256)) * 5000  # 5 chunks
    inline = Importer(HashOnly(), workers=0).add_bytes(payload)
    threaded = Importer(HashOnly(), workers=3).add_bytes(payload)
    assert inline == threaded
