"""The embedded content store: Kubo-identical CIDs, blocks in a local data directory."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from tributa.store import dag
from tributa.store.base import Buffer, CidLike, GcStats, PathLike, Progress, VerifyReport
from tributa.store.blockstore import BlockLocation, Blockstore, RebuildReport
from tributa.store.car import verified_blocks
from tributa.store.cid import Cid, coerce_cid
from tributa.store.dagpb import may_have_links
from tributa.store.errors import ContentIntegrityError, NotFound, StoreError
from tributa.store.importer import Importer, cid_of_bytes, default_workers
from tributa.store.layout import BlockSink, HashOnly, Link
from tributa.store.pins import PinSet

_PUT_CHUNK = 512  # blocks per put_many: one index lookup and one pwritev each


class EmbeddedStore:
    """Blocks in pack files under `root` (see blockstore.py), pins under `root`/pins.
    See tributa.store.base.Store."""

    def __init__(
        self,
        root: PathLike,
        *,
        workers: int | None = None,
        durable: bool = False,
        check_index: bool = True,
    ) -> None:
        """Opening rebuilds a missing or damaged index from the packs (logging a warning);
        `check_index=False` leaves that to a rebuild_index() call that follows."""
        self.root = Path(root)
        self._blocks = Blockstore(self.root, durable=durable, check_index=check_index)
        self._pins = PinSet(self.root)
        self._lock = self._blocks.lock
        self._workers = workers
        self._read_ahead = default_workers() if workers is None else workers

    def __repr__(self) -> str:
        return f"EmbeddedStore({str(self.root)!r})"

    # -- adding --------------------------------------------------------------------------------

    def _importer(self, sink: BlockSink, progress: Progress | None, cid_version: int) -> Importer:
        return Importer(sink, cid_version=cid_version, workers=self._workers, progress=progress)

    def _add(self, build: Callable[[Importer], Link], progress: Progress | None, cid_version: int) -> Cid:
        """Run one add into a write batch and pin its root. The shared lock spans both, so gc
        cannot collect the new blocks before the pin exists; the pin is written after the
        batch has indexed them, so a process that sees the pin finds the blocks."""
        with self._lock.shared():
            with self._blocks.writing() as batch:
                cid = build(self._importer(batch, progress, cid_version)).cid
            self._pins.add(cid)
        return cid

    def put_bytes(self, data: Buffer, *, cid_version: int = 0) -> Cid:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise StoreError(f"put_bytes takes bytes, not {type(data).__name__}")
        return self._add(lambda importer: importer.add_bytes(data), None, cid_version)

    def put_file(self, path: PathLike, progress: Progress | None = None, *, cid_version: int = 0) -> Cid:
        if Path(path).is_dir():
            raise StoreError(f"{os.fspath(path)} is a directory: add it with put_dir")
        return self._add(lambda importer: importer.add_file(path), progress, cid_version)

    def put_dir(self, path: PathLike, progress: Progress | None = None, *, cid_version: int = 0) -> Cid:
        if not Path(path).exists():
            raise NotFound(f"no such file or directory: {os.fspath(path)}")
        if not Path(path).is_dir():
            raise StoreError(f"{os.fspath(path)} is not a directory: add it with put_file")
        return self._add(lambda importer: importer.add_path(path), progress, cid_version)

    def put_blocks(self, root: CidLike, blocks: Iterable[tuple[Cid, Buffer]]) -> Cid:
        """Store ready-made blocks (a CAR upload, car.read_car) and pin `root`. Every block is
        re-hashed before any is written; under one shared lock (as in _add) they go in one
        write batch, then the DAG under `root` is walked and pinned. An incomplete DAG is
        ContentIntegrityError and is not pinned; its blocks stay until gc collects them."""
        root = coerce_cid(root)
        records = [(cid.digest, (block,)) for cid, block in verified_blocks(blocks)]
        with self._lock.shared():
            with self._blocks.writing() as batch:
                for start in range(0, len(records), _PUT_CHUNK):
                    batch.put_many(records[start : start + _PUT_CHUNK])
            try:
                self._reachable(root)
            except NotFound as exc:
                raise ContentIntegrityError(
                    f"the upload of {root} is incomplete: {exc}; send every block under it"
                ) from None
            self._pins.add(root)
        return root

    def cid_of(self, data_or_path: Buffer | PathLike, *, cid_version: int = 0) -> Cid:
        if isinstance(data_or_path, (bytes, bytearray, memoryview)):
            return cid_of_bytes(data_or_path, cid_version)
        return self._importer(HashOnly(), None, cid_version).add_path(data_or_path).cid

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

    def locate(self, cid: CidLike) -> BlockLocation | None:
        """Where the bytes of `cid`'s block are on disk (None if it is not stored)."""
        return self._blocks.locate(coerce_cid(cid).digest)

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
                except (ContentIntegrityError, NotFound) as exc:
                    raise ContentIntegrityError(
                        f"gc stopped, nothing was deleted: pinned {root} cannot be fully "
                        f"walked ({exc}); re-add that content or unpin it, then run gc again"
                    ) from None
            removed, removed_bytes, kept = self._blocks.collect(keep)
        return GcStats(removed_blocks=removed, removed_bytes=removed_bytes, kept_blocks=kept)

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

    def rebuild_index(self, progress: Progress | None = None) -> RebuildReport:
        """Rebuild the block index from the pack files alone (`tributa store repair`): every
        record is re-hashed, intact ones are indexed, damaged ones and cut-short tails are
        skipped and reported. Pins are files of their own and are left as they are.
        progress(bytes scanned, bytes in all packs) is called as it goes."""
        return self._blocks.rebuild_index(progress)

    def close(self) -> None:
        """Closes the index connection and pack handles (reopened if the store is used again)."""
        self._blocks.close()
