"""The one content-store interface every part of Tributa uses, and the values it returns.

Two implementations: EmbeddedStore (blocks in a local data directory, the default) and
KuboStore (a Kubo daemon over its RPC API). Both give the CIDs `ipfs add` gives.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from tributa.store.cid import Cid

Buffer = bytes | bytearray | memoryview
PathLike = str | os.PathLike[str]
CidLike = Cid | str

Progress = Callable[[int, int], None]
"""Called as progress(bytes_done, bytes_total) while content is added."""


@dataclass(frozen=True, slots=True)
class GcStats:
    removed_blocks: int
    removed_bytes: int
    kept_blocks: int


@dataclass(frozen=True, slots=True)
class VerifyReport:
    cid: Cid
    blocks: int  # blocks re-hashed
    bytes: int  # their total size


@runtime_checkable
class Store(Protocol):
    """Content-addressed storage. CIDs are accepted as `Cid` or as text everywhere.

    Adding pins the root (like `ipfs add`); `gc` removes whatever no pin reaches.
    `cid_version=1` gives CIDv1 with raw leaves, like `ipfs add --cid-version=1`.
    """

    def put_bytes(self, data: Buffer, *, cid_version: int = 0) -> Cid: ...

    def put_file(self, path: PathLike, progress: Progress | None = None, *, cid_version: int = 0) -> Cid: ...

    def put_dir(self, path: PathLike, progress: Progress | None = None, *, cid_version: int = 0) -> Cid: ...

    def put_blocks(self, root: CidLike, blocks: Iterable[tuple[Cid, Buffer]]) -> Cid:
        """Store ready-made blocks, e.g. a CAR upload (tributa.store.car.read_car), and pin
        `root`; returns it. Every block is re-hashed against its CID before any is stored
        (ContentIntegrityError names a mismatch). The DAG under `root` must then be complete (from
        these blocks and those already stored), else nothing is pinned: the embedded store
        raises ContentIntegrityError naming a missing block (Kubo's pin may look for it first)."""
        ...

    def get(self, cid: CidLike) -> Iterator[bytes]:
        """The file's bytes, streamed in chunks. Errors about the root are raised at once."""
        ...

    def get_bytes(self, cid: CidLike) -> bytes: ...

    def export(self, cid: CidLike, dest: PathLike) -> None:
        """Write a file or a whole directory tree to `dest` (which must not exist)."""
        ...

    def has(self, cid: CidLike) -> bool: ...

    def pin(self, cid: CidLike) -> None: ...

    def unpin(self, cid: CidLike) -> None: ...

    def pins(self) -> list[Cid]: ...

    def gc(self) -> GcStats: ...

    def cid_of(self, data_or_path: Buffer | PathLike, *, cid_version: int = 0) -> Cid:
        """The CID of bytes (bytes-like) or of a file/directory (str/PathLike); stores nothing."""
        ...

    def verify(self, cid: CidLike) -> VerifyReport:
        """Re-hash every block of the content; raises ContentIntegrityError on the first bad one."""
        ...

    def close(self) -> None: ...
