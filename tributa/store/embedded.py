"""The embedded content store: Kubo-identical CIDs, blocks in a local data directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from tributa.store import dag
from tributa.store.base import Buffer, CidLike, GcStats, PathLike, Progress, VerifyReport
from tributa.store.blockstore import Blockstore
from tributa.store.cid import Cid, coerce_cid
from tributa.store.dagpb import may_have_links
from tributa.store.errors import IntegrityError, NotFound, StoreError
from tributa.store.importer import Importer, default_workers
from tributa.store.layout import HashOnly
from tributa.store.locking import StoreLock
from tributa.store.pins import PinSet


class EmbeddedStore:
    """Blocks under `root`/blocks, pins under `root`/pins. See tributa.store.base.Store."""

    def __init__(
        self, root: PathLike, *, workers: int | None = None, durable: bool = False
    ) -> None:
        self.root = Path(root)
        self._blocks = Blockstore(self.root, durable=durable)
        self._pins = PinSet(self.root)
        self._lock = StoreLock(self.root)
        self._workers = workers
        self._read_ahead = default_workers() if workers is None else workers

    def __repr__(self) -> str:
        return f"EmbeddedStore({str(self.root)!r})"

    # -- adding --------------------------------------------------------------------------------

    def _importer(
        self, progress: Progress | None, cid_version: int, store: bool = True
    ) -> Importer:
        sink = self._blocks if store else HashOnly()
        return Importer(sink, cid_version=cid_version, workers=self._workers, progress=progress)

    def put_bytes(self, data: Buffer, *, cid_version: int = 0) -> Cid:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise StoreError(f"put_bytes takes bytes, not {type(data).__name__}")
        with self._lock.shared():
            cid = self._importer(None, cid_version).add_bytes(data).cid
            self._pins.add(cid)
        return cid

    def put_file(
        self, path: PathLike, progress: Progress | None = None, *, cid_version: int = 0
    ) -> Cid:
        if Path(path).is_dir():
            raise StoreError(f"{os.fspath(path)} is a directory: add it with put_dir")
        with self._lock.shared():
            cid = self._importer(progress, cid_version).add_file(path).cid
            self._pins.add(cid)
        return cid

    def put_dir(
        self, path: PathLike, progress: Progress | None = None, *, cid_version: int = 0
    ) -> Cid:
        if not Path(path).exists():
            raise NotFound(f"no such file or directory: {os.fspath(path)}")
        if not Path(path).is_dir():
            raise StoreError(f"{os.fspath(path)} is not a directory: add it with put_file")
        with self._lock.shared():
            cid = self._importer(progress, cid_version).add_path(path).cid
            self._pins.add(cid)
        return cid

    def cid_of(self, data_or_path: Buffer | PathLike, *, cid_version: int = 0) -> Cid:
        importer = self._importer(None, cid_version, store=False)
        if isinstance(data_or_path, (bytes, bytearray, memoryview)):
            return importer.add_bytes(data_or_path).cid
        return importer.add_path(data_or_path).cid

    # -- reading -------------------------------------------------------------------------------

    def read(self, cid: Cid) -> bytes:
        """One verified block (the dag.BlockSource interface)."""
        return self._blocks.read(cid)

    def get(self, cid: CidLike) -> Iterator[bytes]:
        return dag.open_file(self, coerce_cid(cid), prefetch=self._read_ahead)

    def get_bytes(self, cid: CidLike) -> bytes:
        return b"".join(self.get(cid))

    def export(self, cid: CidLike, dest: PathLike) -> None:
        dag.export_tree(self, coerce_cid(cid), Path(dest), dag.write_file_atomically)

    def block_path(self, cid: CidLike) -> Path:
        """Where the block of `cid` lives on disk (whether or not it is there)."""
        return self._blocks.path_for(coerce_cid(cid).digest)

    def has(self, cid: CidLike) -> bool:
        return self._blocks.has(coerce_cid(cid).digest)

    def verify(self, cid: CidLike) -> VerifyReport:
        return dag.verify(self, coerce_cid(cid))

    # -- pins and gc ---------------------------------------------------------------------------

    def pin(self, cid: CidLike) -> None:
        root = coerce_cid(cid)
        if not self._blocks.has(root.digest):
            raise NotFound(f"{root} is not in the store: add the content before pinning it")
        with self._lock.shared():
            self._reachable(root)  # refuses to pin a DAG with missing or damaged inner blocks
            self._pins.add(root)

    def unpin(self, cid: CidLike) -> None:
        root = coerce_cid(cid)
        if not self._pins.remove(root):
            raise NotFound(f"{root} is not pinned (list pins with `tributa store pins`)")

    def pins(self) -> list[Cid]:
        return self._pins.list()

    def gc(self) -> GcStats:
        with self._lock.exclusive():
            keep: set[bytes] = set()
            for root in self._pins.list():
                try:
                    keep |= self._reachable(root)
                except (IntegrityError, NotFound) as exc:
                    raise IntegrityError(
                        f"gc stopped, nothing was deleted: pinned {root} cannot be fully "
                        f"walked ({exc}); re-add that content or unpin it, then run gc again"
                    ) from None
            removed_blocks = removed_bytes = kept = 0
            for digest, path in self._blocks.iter_blocks():
                if digest in keep:
                    kept += 1
                    continue
                freed = self._blocks.delete(path)
                removed_blocks += 1
                removed_bytes += freed
            self._blocks.clear_tmp()
        return GcStats(removed_blocks=removed_blocks, removed_bytes=removed_bytes, kept_blocks=kept)

    def _reachable(self, root: Cid) -> set[bytes]:
        """Digests of every block under `root`. Inner nodes are read and verified; leaves are
        only peeked at (canonical dag-pb puts links first, so a block starting with its Data
        field has none), which keeps gc from reading every byte of large files."""
        seen: set[bytes] = set()
        stack = [root]
        while stack:
            cid = stack.pop()
            if cid.digest in seen:
                continue
            seen.add(cid.digest)
            if cid.codec == "raw":
                if not self._blocks.has(cid.digest):
                    raise NotFound(f"block {cid} under {root} is missing")
                continue
            head = self._blocks.first_byte(cid.digest)
            if head is None:
                if not self._blocks.has(cid.digest):
                    raise NotFound(f"block {cid} under {root} is missing")
                continue  # an empty block: no links
            if cid is root or may_have_links(bytes((head,))):
                node = dag.decode(cid, self._blocks.read(cid))
                stack.extend(link.cid for link in node.links)
        return seen

    def close(self) -> None:
        return None
