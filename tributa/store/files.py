"""File-system steps several store modules take: quiet removal, directory fsync, and the name a
block gets as a file of its own."""

from __future__ import annotations

import os
from pathlib import Path

MULTIHASH_PREFIX = "1220"  # sha2-256, 32 bytes


def block_file_name(digest: bytes) -> str:
    """A block's name as a file of its own (corrupt/, and the one-file-per-block layout of old
    stores): its multihash in hex."""
    return MULTIHASH_PREFIX + digest.hex()


def fsync_file(path: Path) -> None:
    _fsync(path, 0)


def fsync_dir(path: Path) -> None:
    """Make the creation, renaming or removal of entries in `path` durable."""
    _fsync(path, os.O_DIRECTORY)


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unlink_quietly(path: str | Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def rmdir_quietly(path: Path) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass
