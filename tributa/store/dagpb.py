"""The dag-pb block format (PBNode / PBLink), written by hand so the bytes match Kubo's exactly.

    message PBLink { optional bytes Hash = 1; optional string Name = 2; optional uint64 Tsize = 3; }
    message PBNode { repeated PBLink Links = 2; optional bytes Data = 1; }

Canonical dag-pb puts every Link before Data even though Data has the lower field number, and
Kubo always writes the Name field of a link (empty for file chunks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tributa.store.cid import Cid
from tributa.store.errors import StoreError
from tributa.store.varint import decode_uvarint, encode_uvarint

_TAG_LINK_HASH = b"\x0a"
_TAG_LINK_NAME = b"\x12"
_TAG_LINK_TSIZE = b"\x18"
_TAG_NODE_LINK = b"\x12"
_TAG_NODE_DATA = b"\x0a"


class DagPbError(StoreError, ValueError):
    """The bytes are not a well-formed dag-pb node."""


@dataclass(frozen=True, slots=True)
class PBLink:
    cid: Cid
    name: bytes
    tsize: int


@dataclass(frozen=True, slots=True)
class PBNode:
    links: list[PBLink]
    data: memoryview | None


def encode_link(cid_bytes: bytes, name: bytes, tsize: int) -> bytes:
    body = (
        _TAG_LINK_HASH
        + encode_uvarint(len(cid_bytes))
        + cid_bytes
        + _TAG_LINK_NAME
        + encode_uvarint(len(name))
        + name
        + _TAG_LINK_TSIZE
        + encode_uvarint(tsize)
    )
    return _TAG_NODE_LINK + encode_uvarint(len(body)) + body


def encode_node(encoded_links: Sequence[bytes], data: bytes | None) -> bytes:
    """Join links already encoded by `encode_link` (in order) with the node's Data."""
    parts = list(encoded_links)
    if data is not None:
        parts.append(_TAG_NODE_DATA + encode_uvarint(len(data)) + data)
    return b"".join(parts)


def data_field_prefix(data_len: int) -> bytes:
    """The bytes that precede a Data field of `data_len` bytes in a link-less node."""
    return _TAG_NODE_DATA + encode_uvarint(data_len)


def may_have_links(block: bytes | memoryview) -> bool:
    """False when a canonical dag-pb block provably has no links (it starts with Data)."""
    return len(block) > 0 and block[0] == _TAG_NODE_LINK[0]


def decode_node(block: bytes | memoryview) -> PBNode:
    """Decode a dag-pb block; raises DagPbError on anything malformed."""
    view = memoryview(block)
    links: list[PBLink] = []
    data: memoryview | None = None
    pos = 0
    end = len(view)
    try:
        while pos < end:
            tag = view[pos]
            pos += 1
            if tag == _TAG_NODE_LINK[0]:
                if data is not None:
                    raise DagPbError("a link follows the Data field (not canonical dag-pb)")
                length, pos = decode_uvarint(view, pos)
                if pos + length > end:
                    raise DagPbError("link runs past the end of the block")
                links.append(_decode_link(view[pos : pos + length]))
                pos += length
            elif tag == _TAG_NODE_DATA[0]:
                if data is not None:
                    raise DagPbError("duplicate Data field")
                length, pos = decode_uvarint(view, pos)
                if pos + length > end:
                    raise DagPbError("Data runs past the end of the block")
                data = view[pos : pos + length]
                pos += length
            else:
                raise DagPbError(f"unexpected field tag 0x{tag:02x}")
    except ValueError as exc:
        if isinstance(exc, DagPbError):
            raise
        raise DagPbError(str(exc)) from None
    return PBNode(links=links, data=data)


def _decode_link(view: memoryview) -> PBLink:
    cid_raw: bytes | None = None
    name = b""
    tsize = 0
    pos = 0
    end = len(view)
    while pos < end:
        tag = view[pos]
        pos += 1
        if tag in (_TAG_LINK_HASH[0], _TAG_LINK_NAME[0]):
            length, pos = decode_uvarint(view, pos)
            if pos + length > end:
                raise DagPbError("link field runs past the end of the link")
            value = bytes(view[pos : pos + length])
            pos += length
            if tag == _TAG_LINK_HASH[0]:
                cid_raw = value
            else:
                name = value
        elif tag == _TAG_LINK_TSIZE[0]:
            tsize, pos = decode_uvarint(view, pos)
        else:
            raise DagPbError(f"unexpected link field tag 0x{tag:02x}")
    if cid_raw is None:
        raise DagPbError("link without a Hash")
    try:
        cid = Cid.from_bytes(cid_raw)
    except ValueError as exc:
        raise DagPbError(f"link holds an unsupported CID ({exc})") from None
    return PBLink(cid=cid, name=name, tsize=tsize)
