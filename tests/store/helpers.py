"""Small helpers shared by the content-store tests."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from tributa.store.base import Buffer


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
