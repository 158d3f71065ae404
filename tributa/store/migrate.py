"""Converting a store made before packs (blocks/<2 hex>/1220<hex>, one file per block).

Runs the first time such a store is opened, under the exclusive lock. Each shard's blocks are
fsynced and indexed before its files are deleted, so a crash at any point loses nothing and the
next open carries on (blocks already indexed are not written twice). A file that is not the
block its name says is moved to corrupt/.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from tributa.store.errors import StoreError
from tributa.store.files import MULTIHASH_PREFIX, rmdir_quietly, unlink_quietly
from tributa.store.packwriter import WriteBatch

if TYPE_CHECKING:
    from tributa.store.blockstore import Blockstore


def convert_old_layout(store: Blockstore) -> None:
    """Move the blocks under `store.root`/blocks into a pack, if there are any."""
    old = store.root / "blocks"
    if not old.is_dir():
        return
    try:
        with store.lock.exclusive():
            if not old.is_dir():
                return  # another process got there first
            with store.batch(sync=True) as batch:
                for shard in sorted(old.iterdir()):
                    files = sorted(shard.iterdir()) if shard.is_dir() else [shard]
                    for path in files:
                        _convert_file(batch, path, store.corrupt_dir)
                    batch.flush()
                    for path in files:
                        unlink_quietly(path)
                    rmdir_quietly(shard)
            rmdir_quietly(old)
            shutil.rmtree(store.root / "tmp", ignore_errors=True)
    except OSError as exc:
        raise StoreError(f"cannot move the blocks under {old} into a pack: {exc}") from None


def _convert_file(batch: WriteBatch, path: Path, corrupt_dir: Path) -> None:
    try:
        digest = bytes.fromhex(path.name.removeprefix(MULTIHASH_PREFIX))
    except ValueError:
        digest = b""
    data = path.read_bytes()
    named_right = len(digest) == 32 and path.name.startswith(MULTIHASH_PREFIX)
    if named_right and hashlib.sha256(data).digest() == digest:
        batch.put(digest, (data,))
        return
    corrupt_dir.mkdir(exist_ok=True)  # damaged, or not a block at all: set aside
    os.replace(path, corrupt_dir / path.name)
