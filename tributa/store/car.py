"""CAR v1 files (content addressed archives): how content travels in network uploads.

An upload sends a whole DAG in one stream, so it travels as the CARv1 file that Kubo's
`ipfs dag export` writes and `ipfs dag import` reads: content added with Kubo uploads as is,
and a CAR written here imports into Kubo. A CARv1 is a varint-length-prefixed dag-cbor header
{"roots": [CID], "version": 1}, then one section per block: varint(len(CID) + len(block)),
the binary CID, the block.

Only what the store holds is accepted: one root, sha2-256 dag-pb or raw CIDs. read_car is the
network boundary, so it checks every length, limit and hash before it returns a block.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

from tributa.store import dag, dagpb
from tributa.store.base import Buffer, CidLike
from tributa.store.cid import SHA2_256, Cid, coerce_cid
from tributa.store.errors import CidError, ContentIntegrityError, StoreError
from tributa.store.varint import decode_uvarint, encode_uvarint

MAX_BLOCKS = 1 << 20  # sections in one CAR: 256 GiB of 256 KiB chunks
MAX_BLOCK_BYTES = 2 << 20  # well above the importer's largest (256 KiB chunks; folders shard at 256 KiB)

# The dag-cbor header for one root, around the root's byte string. dag-cbor sorts map keys
# length first, so "roots" comes before "version"; a CID is tag 42 over 0x00 + its bytes.
_ROOTS = b"\xa2\x65roots\x81\xd8\x2a"  # map(2), text(5) "roots", array(1), tag(42)
_VERSION = b"\x67version\x01"  # text(7) "version", unsigned(1)
_CID_PREFIX = b"\x00"  # the multibase "identity" prefix dag-cbor puts before a binary CID
_NOT_SINGLE_ROOT_V1 = (
    "the CAR header is not {roots: [one CID], version: 1}: only single-root CARv1 is accepted "
    "(`ipfs dag export CID` writes one)"
)


class CarError(StoreError, ValueError):
    """A CAR file that is malformed, truncated, over a limit, or holds a block that does not
    hash to its CID."""


# -- writing -----------------------------------------------------------------------------------


def _cbor_bytes(payload: bytes) -> bytes:
    """A CBOR byte string (major type 2); a CID's payload is always 24 to 255 bytes."""
    return bytes((0x58, len(payload))) + payload


def _header_of(raw_cid: bytes) -> bytes:
    return _ROOTS + _cbor_bytes(_CID_PREFIX + raw_cid) + _VERSION


def car_header(root: Cid) -> bytes:
    """The CARv1 header for one root, byte for byte as go-car (and so Kubo) writes it."""
    body = _header_of(coerce_cid(root).to_bytes())
    return encode_uvarint(len(body)) + body


def _section(cid: Cid, block: bytes) -> bytes:
    raw = cid.to_bytes()
    return encode_uvarint(len(raw) + len(block)) + raw + block


def _links(cid: Cid, block: bytes) -> list[Cid]:
    """The CIDs a block links to, in order: codec-level, so any dag-pb node goes (as in go-car)."""
    if cid.codec == "raw":
        return []
    try:
        return [link.cid for link in dagpb.decode_node(block).links]
    except ValueError as exc:
        raise ContentIntegrityError(f"block {cid} is not a valid dag-pb node ({exc})") from None


def _unique_blocks(source: dag.BlockSource, root: Cid) -> Iterator[tuple[Cid, bytes]]:
    """Every block under `root` once, depth first with links in order (as `ipfs dag export`);
    a block seen before is skipped with everything under it, so repeated subtrees cost nothing."""
    seen: set[Cid] = set()
    stack = [root]
    while stack:
        cid = stack.pop()
        if cid in seen:
            continue
        seen.add(cid)
        block = source.read(cid) if cid == root else dag._read_child(source, cid, root)
        yield cid, block
        stack.extend(reversed(_links(cid, block)))


def iter_car(source: dag.BlockSource, root: Cid) -> Iterator[bytes]:
    """The CARv1 file of the DAG under `root`: the header, then one section per block (each
    read, and so re-hashed, from `source`). CIDs are written as the links give them."""
    root = coerce_cid(root)
    yield car_header(root)
    for cid, block in _unique_blocks(source, root):
        yield _section(cid, block)


# -- reading -----------------------------------------------------------------------------------


def hashes_to(cid: Cid, block: Buffer) -> bool:
    """Whether `block`'s sha2-256 is the digest `cid` names."""
    return hashlib.sha256(block).digest() == cid.digest


def verified_blocks(blocks: Iterable[tuple[CidLike, Buffer]]) -> list[tuple[Cid, Buffer]]:
    """The blocks as a list, each re-hashed against its CID: a store calls this before it
    writes any of them. ContentIntegrityError names the first block that does not match."""
    checked = []
    for cid, block in blocks:
        cid = coerce_cid(cid)
        if not hashes_to(cid, block):
            raise ContentIntegrityError(
                f"block {cid} does not hash to its CID: nothing was stored; send the content again"
            )
        checked.append((cid, block))
    return checked


def _varint(view: memoryview, pos: int, what: str) -> tuple[int, int]:
    try:
        return decode_uvarint(view, pos)
    except ValueError as exc:
        raise CarError(f"malformed CAR: {what} at byte {pos} is not a valid varint ({exc})") from None


def _span(view: memoryview, pos: int, what: str) -> tuple[int, int]:
    """(start, end) of the length-prefixed `what` at `pos`."""
    length, start = _varint(view, pos, f"the length of {what}")
    if length > len(view) - start:
        raise CarError(f"truncated CAR: {what} needs {length} bytes at byte {start}, only {len(view) - start} are left")
    return start, start + length


def _header_root(body: bytes) -> Cid:
    start, stop = len(_ROOTS) + 3, len(body) - len(_VERSION)  # 3: 0x58, length, 0x00
    raw = body[start:stop]
    # The one dag-cbor encoding of that header (a byte string under 24 bytes has a shorter head).
    if not (23 <= len(raw) < 255 and body == _header_of(raw)):
        raise CarError(_NOT_SINGLE_ROOT_V1)
    try:
        return Cid.from_bytes(raw)
    except CidError as exc:
        raise CarError(f"the CAR's root is not a CID this store holds: {exc}") from None


def _cid_length(raw: memoryview) -> int:
    """How many bytes the binary CID at the start of `raw` takes. Raises ValueError."""
    if len(raw) and raw[0] == SHA2_256:  # CIDv0: a bare sha2-256 multihash
        return 34
    pos = 0
    for _ in range(3):  # version, codec, hash function
        _, pos = decode_uvarint(raw, pos)
    size, pos = decode_uvarint(raw, pos)
    return pos + size


def _section_cid(section: memoryview, number: int) -> tuple[Cid, int]:
    """The CID at the start of section `number`, and its length."""
    try:
        length = _cid_length(section)
        if length > len(section):
            raise ValueError("cut short")
        return Cid.from_bytes(bytes(section[:length])), length
    except CidError as exc:
        raise CarError(f"section {number} of the CAR names an unsupported CID: {exc}") from None
    except ValueError:
        raise CarError(f"malformed CAR: section {number} ends inside its CID") from None


def _read_section(view: memoryview, pos: int, number: int, max_block_bytes: int) -> tuple[Cid, bytes, int]:
    """(cid, block, position after the section) of section `number` at `pos`, its hash checked."""
    start, end = _span(view, pos, f"section {number}")
    cid, length = _section_cid(view[start:end], number)
    size = end - start - length
    if size > max_block_bytes:
        raise CarError(f"block {cid} in the CAR is {size} bytes, over the limit of {max_block_bytes} for one block")
    block = bytes(view[start + length : end])
    if not hashes_to(cid, block):
        raise CarError(f"block {cid} in the CAR does not hash to its CID: the CAR is corrupt")
    return cid, block, end


def read_car(
    data: bytes | memoryview,
    *,
    max_blocks: int = MAX_BLOCKS,
    max_block_bytes: int = MAX_BLOCK_BYTES,
) -> tuple[Cid, list[tuple[Cid, bytes]]]:
    """(root, [(cid, block), ...]) of a single-root CARv1, each block hashed against its CID,
    in the CAR's order; a block given twice is returned once. Whether the blocks make up the
    whole DAG is left to the store (put_blocks refuses to pin an incomplete one).

    CarError (a ValueError) for anything else: a truncated or malformed file, another header,
    an unsupported CID, a block over `max_block_bytes`, more than `max_blocks` sections."""
    view = memoryview(data).cast("B")
    start, pos = _span(view, 0, "the header")
    root = _header_root(bytes(view[start:pos]))
    blocks: dict[Cid, bytes] = {}
    number = 0
    while pos < len(view):
        number += 1
        if number > max_blocks:
            raise CarError(f"the CAR holds more than {max_blocks} blocks: send the content in parts")
        cid, block, pos = _read_section(view, pos, number, max_block_bytes)
        blocks.setdefault(cid, block)
    return root, list(blocks.items())
