"""Blocks on disk, one file per block, named by the block's sha2-256 multihash.

Layout under the store root:
    blocks/<first two hex digits of the digest>/1220<digest hex>   the block bytes
    tmp/                                                           blocks being written
    corrupt/                                                       blocks that failed a re-hash

Every write goes to tmp/ first and is moved into place with os.replace, so a crash or a full
disk never leaves half a block under blocks/. Every read re-hashes the block; a block whose
bytes no longer match is moved to corrupt/ (so re-adding the content repairs it) and reported.
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from pathlib import Path
from typing import Iterator, Sequence

from tributa.store.base import Buffer
from tributa.store.cid import Cid
from tributa.store.errors import IntegrityError, NotFound, StoreError, StoreFull

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_MULTIHASH_PREFIX = "1220"


class Blockstore:
    """A directory of content-addressed blocks. Safe to use from several threads."""

    def __init__(self, root: Path, *, durable: bool = False) -> None:
        self.root = root
        self.blocks_dir = root / "blocks"
        self.tmp_dir = root / "tmp"
        self.corrupt_dir = root / "corrupt"
        # fsync each block before it is moved into place: survives power loss, costs speed.
        self._durable = durable
        try:
            if not self.blocks_dir.is_dir():
                self.blocks_dir.mkdir(parents=True, exist_ok=True)
                for shard in range(256):  # made once, so writes never wait on a mkdir
                    (self.blocks_dir / f"{shard:02x}").mkdir(exist_ok=True)
            self.tmp_dir.mkdir(exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the store under {root}: {exc.strerror}") from None

    def path_for(self, digest: bytes) -> Path:
        hexed = digest.hex()
        return self.blocks_dir / hexed[:2] / (_MULTIHASH_PREFIX + hexed)

    # -- writing -------------------------------------------------------------------------------

    def put(self, digest: bytes, parts: Sequence[Buffer]) -> None:
        final = self.path_for(digest)
        if final.exists():
            return  # content-addressed: same name, same bytes
        tmp = self.tmp_dir / f"{digest.hex()}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                _write_all(fd, parts)
                if self._durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.replace(tmp, final)
            except FileNotFoundError:
                final.parent.mkdir(exist_ok=True)
                os.replace(tmp, final)
        except OSError as exc:
            _unlink_quietly(tmp)
            if exc.errno in _FULL_ERRNOS:
                raise StoreFull(
                    f"disk full while writing to {self.root}: free some space (or run "
                    "`tributa store gc`) and retry; blocks already stored are intact"
                ) from None
            raise StoreError(f"cannot write a block under {self.root}: {exc.strerror}") from None

    # -- reading -------------------------------------------------------------------------------

    def has(self, digest: bytes) -> bool:
        return self.path_for(digest).exists()

    def read(self, cid: Cid) -> bytes:
        """The verified bytes of a block; NotFound if absent, IntegrityError if damaged."""
        path = self.path_for(cid.digest)
        try:
            with open(path, "rb", buffering=0) as handle:
                data = handle.read()
        except FileNotFoundError:
            raise NotFound(f"{cid} is not in the store: add it first, or check the CID") from None
        except OSError as exc:
            raise StoreError(f"cannot read block {cid}: {exc.strerror}") from None
        if hashlib.sha256(data).digest() != cid.digest:
            moved = self._quarantine(path)
            raise IntegrityError(
                f"block {cid} is corrupted or truncated ({len(data)} bytes no longer hash to "
                f"its CID); moved it to {moved}: re-add the original content to repair it"
            )
        return data

    def first_byte(self, digest: bytes) -> int | None:
        """The first byte of a block (None if absent or empty); lets gc skip reading leaves."""
        try:
            with open(self.path_for(digest), "rb", buffering=0) as handle:
                head = handle.read(1)
        except FileNotFoundError:
            return None
        return head[0] if head else None

    def _quarantine(self, path: Path) -> Path:
        self.corrupt_dir.mkdir(exist_ok=True)
        target = self.corrupt_dir / path.name
        try:
            os.replace(path, target)
        except OSError:
            return path
        return target

    # -- listing and deleting ------------------------------------------------------------------

    def iter_blocks(self) -> Iterator[tuple[bytes, Path]]:
        """(digest, path) of every stored block."""
        for shard in sorted(self.blocks_dir.iterdir()):
            if not shard.is_dir():
                continue
            for entry in os.scandir(shard):
                name = entry.name
                if len(name) == 68 and name.startswith(_MULTIHASH_PREFIX):
                    try:
                        yield bytes.fromhex(name[4:]), Path(entry.path)
                    except ValueError:
                        continue

    def delete(self, path: Path) -> int:
        """Remove one block file; returns the bytes freed."""
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return 0
        return size

    def clear_tmp(self) -> int:
        """Remove leftovers of interrupted writes. Call only while no write is running."""
        removed = 0
        for entry in os.scandir(self.tmp_dir):
            _unlink_quietly(Path(entry.path))
            removed += 1
        return removed


def _write_all(fd: int, parts: Sequence[Buffer]) -> None:
    views = [memoryview(part).cast("B") for part in parts if len(part)]
    while views:
        written = os.writev(fd, views)
        if written <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if written:
            views[0] = views[0][written:]


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
