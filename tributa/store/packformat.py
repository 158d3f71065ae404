"""The pack file format in one place: what packwriter.py writes and what a scan reads back.

A pack is an 8-byte magic, then one record per block: digest (32 bytes) | length (u32 LE) |
block bytes. Each record carries its block's digest, so a pack describes itself: PackScan finds
every intact record from the file alone, which is how a lost or damaged index is rebuilt.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from tributa.store.packindex import Row

PACK_MAGIC = b"TRBPACK1"
RECORD_HEADER = struct.Struct("<32sI")  # digest, block length
_READ_PIECE = 1 << 20  # a scan hashes a record this much at a time: memory stays flat


def pack_size(blocks: int, block_bytes: int) -> int:
    """The size of a pack holding exactly these records."""
    return len(PACK_MAGIC) + blocks * RECORD_HEADER.size + block_bytes


@dataclass
class PackScan:
    """One pack read back from the file alone. records() yields its intact records and notes
    what it had to pass over: it never raises for what it finds in the file.

    A record whose bytes no longer hash to its digest is skipped and the scan goes on at the next
    record (every record it yields is re-hashed, so going on can never index wrong bytes). A
    record running past the end of the file or a hole of zeros (a crash or a full disk in the
    middle of an add) ends the scan, as does a file without the pack magic or one that cannot be
    read."""

    path: Path
    damaged: list[int] = field(default_factory=list)  # offsets of the records skipped
    torn_at: int | None = None  # offset of the record cut short, if one was
    unreadable: str | None = None  # why the file could not be read to its end, if it could not

    def records(self) -> Iterator[Row]:
        """(digest, pack name, offset, length) of every intact record, in file order."""
        position = 0
        try:
            with open(self.path, "rb") as pack:
                size = os.fstat(pack.fileno()).st_size
                magic = pack.read(len(PACK_MAGIC))
                if magic != PACK_MAGIC:
                    if PACK_MAGIC.startswith(magic):  # cut short as it was being created
                        self.torn_at = 0
                    else:
                        self.unreadable = "it does not start with the pack magic"
                    return
                position = len(PACK_MAGIC)
                while position < size:
                    header = pack.read(RECORD_HEADER.size)
                    start = position + RECORD_HEADER.size
                    if len(header) < RECORD_HEADER.size or not any(header):
                        # Cut short, or a hole: a write that never happened, past which the
                        # threads of an add that was killed had written (records no index had).
                        self.torn_at = position
                        return
                    digest, length = RECORD_HEADER.unpack(header)
                    found = _sha256(pack, length) if start + length <= size else None
                    if found is None:
                        self.torn_at = position
                        return
                    if found == digest:
                        yield digest, self.path.name, start, length
                    else:
                        self.damaged.append(position)
                    position = start + length
        except OSError as exc:
            self.unreadable = f"reading it failed at byte {position}: {exc.strerror or exc}"

    def problems(self) -> list[str]:
        """One line per thing the scan passed over."""
        where = f"pack {self.path}"
        lines = [f"{where}: record at byte {at} does not hash to its digest" for at in self.damaged]
        if self.torn_at is not None:
            lines.append(f"{where}: record at byte {self.torn_at} is cut short")
        if self.unreadable is not None:
            lines.append(f"{where}: {self.unreadable}")
        return lines


def _sha256(source: BinaryIO, length: int) -> bytes | None:
    """The sha256 of the next `length` bytes of `source`; None if it ends first."""
    hasher = hashlib.sha256()
    left = length
    while left:
        piece = source.read(min(left, _READ_PIECE))
        if not piece:
            return None
        hasher.update(piece)
        left -= len(piece)
    return hasher.digest()
