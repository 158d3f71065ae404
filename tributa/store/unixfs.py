"""UnixFS v1 `Data` messages, the payload of dag-pb nodes that describe files and directories.

    message Data {
      required DataType Type = 1;   // Raw=0 Directory=1 File=2 Metadata=3 Symlink=4 HAMTShard=5
      optional bytes Data = 2;
      optional uint64 filesize = 3;
      repeated uint64 blocksizes = 4;
      optional uint64 hashType = 5;
      optional uint64 fanout = 6;
      optional uint32 mode = 7;
      optional UnixTime mtime = 8;
    }

Fields are written in field-number order, as Go's protobuf marshaller (used by Kubo) does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum

from tributa.store.errors import StoreError
from tributa.store.varint import decode_uvarint, encode_uvarint


class DataType(IntEnum):
    RAW = 0
    DIRECTORY = 1
    FILE = 2
    METADATA = 3
    SYMLINK = 4
    HAMT_SHARD = 5


class UnixFsError(StoreError, ValueError):
    """The bytes are not a well-formed UnixFS Data message."""


@dataclass(slots=True)
class UnixFsData:
    type: DataType
    data: memoryview | None = None
    filesize: int | None = None
    blocksizes: list[int] = field(default_factory=list)
    fanout: int | None = None


def file_leaf_frame(chunk_len: int) -> tuple[bytes, bytes]:
    """(prefix, suffix) such that prefix + chunk + suffix is the whole dag-pb leaf block.

    A leaf is PBNode{Data: UnixFS{Type: File, Data: chunk, filesize: len(chunk)}}; framing the
    chunk instead of copying it lets the caller hash and write the chunk in place.
    """
    length = encode_uvarint(chunk_len)
    inner_prefix = b"\x08\x02\x12" + length
    suffix = b"\x18" + length
    inner_len = len(inner_prefix) + chunk_len + len(suffix)
    return b"\x0a" + encode_uvarint(inner_len) + inner_prefix, suffix


# The empty file: a File node with no Data field and filesize 0 (Kubo leaves Data out).
EMPTY_FILE_DATA = b"\x08\x02\x18\x00"


def encode_file_node_data(filesize: int, blocksizes: Iterable[int]) -> bytes:
    out = bytearray(b"\x08\x02\x18")
    out += encode_uvarint(filesize)
    for size in blocksizes:
        out += b"\x20"
        out += encode_uvarint(size)
    return bytes(out)


DIRECTORY_DATA = b"\x08\x01"


def encode_symlink_data(target: bytes) -> bytes:
    return b"\x08\x04\x12" + encode_uvarint(len(target)) + target


def decode_data(buf: bytes | memoryview) -> UnixFsData:
    view = memoryview(buf)
    pos = 0
    end = len(view)
    kind: int | None = None
    result = UnixFsData(type=DataType.RAW)
    try:
        while pos < end:
            key, pos = decode_uvarint(view, pos)
            number, wire = key >> 3, key & 7
            if wire == 0:
                value, pos = decode_uvarint(view, pos)
                if number == 1:
                    kind = value
                elif number == 3:
                    result.filesize = value
                elif number == 4:
                    result.blocksizes.append(value)
                elif number == 6:
                    result.fanout = value
            elif wire == 2:
                length, pos = decode_uvarint(view, pos)
                if pos + length > end:
                    raise UnixFsError("field runs past the end of the message")
                chunk = view[pos : pos + length]
                pos += length
                if number == 2:
                    result.data = chunk
                elif number == 4:  # packed blocksizes, accepted for robustness
                    inner = 0
                    while inner < length:
                        value, inner = decode_uvarint(chunk, inner)
                        result.blocksizes.append(value)
            elif wire == 5:
                pos += 4
            elif wire == 1:
                pos += 8
            else:
                raise UnixFsError(f"unsupported protobuf wire type {wire}")
    except ValueError as exc:
        if isinstance(exc, UnixFsError):
            raise
        raise UnixFsError(str(exc)) from None
    if pos != end:
        raise UnixFsError("message truncated")
    if kind is None:
        raise UnixFsError("missing Type")
    try:
        result.type = DataType(kind)
    except ValueError:
        raise UnixFsError(f"unknown UnixFS type {kind}") from None
    return result
