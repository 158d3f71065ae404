"""Small helpers shared by the content-store tests."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path

from tributa.store.base import Buffer
from tributa.store.cid import Cid
from tributa.store.embedded import EmbeddedStore
from tributa.store.packformat import PACK_MAGIC, RECORD_HEADER


def data(size: int, seed: int) -> bytes:
    """`size` deterministic pseudo-random bytes."""
    return random.Random(seed).randbytes(size)


def write(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


class MemorySink:
    """A BlockSink that keeps every block in a dict, to inspect what an import produced."""

    def __init__(self) -> None:
        self.blocks: dict[bytes, bytes] = {}

    def put(self, digest: bytes, parts: Sequence[Buffer]) -> None:
        self.blocks[digest] = b"".join(bytes(part) for part in parts)


def overwrite_block(store: EmbeddedStore, cid: Cid, at: int, new: bytes) -> None:
    """Damage a stored block: overwrite bytes at `at` inside it, in place in its pack file."""
    where = store.locate(cid)
    assert where is not None and at + len(new) <= where.length
    with open(where.path, "r+b") as pack:
        pack.seek(where.offset + at)
        pack.write(new)


def flip_byte(store: EmbeddedStore, cid: Cid, at: int) -> None:
    """Damage a stored block: invert one of its bytes, in place in its pack file."""
    where = store.locate(cid)
    assert where is not None
    with open(where.path, "rb") as pack:
        pack.seek(where.offset + at)
        byte = pack.read(1)[0]
    overwrite_block(store, cid, at, bytes([byte ^ 0xFF]))


def pack_files(store: EmbeddedStore) -> dict[str, int]:
    """Name -> size of every pack file."""
    return {path.name: path.stat().st_size for path in (store.root / "packs").iterdir()}


def pack_records(path: Path) -> Iterator[tuple[bytes, int, bytes]]:
    """(digest, offset of the block, block bytes) of every complete record in a pack, read
    back from the file alone (the format is self-describing)."""
    blob = path.read_bytes()
    assert blob.startswith(PACK_MAGIC)
    position = len(PACK_MAGIC)
    while position + RECORD_HEADER.size <= len(blob):
        digest, length = RECORD_HEADER.unpack_from(blob, position)
        start = position + RECORD_HEADER.size
        if start + length > len(blob):
            return  # a record cut short
        yield digest, start, blob[start : start + length]
        position = start + length
