"""Indexes each registered dataset for attribution as soon as the chain shows it.

It runs in its own thread beside the oracle's worker loop, so a build (about 75 s for a large
dataset) holds back neither ingestion nor settlement. Until a dataset is indexed, attribution
uses the datasets that are, and its record names the rest with `reason` (see service.py).
A dataset's content is fixed at registration, so an index, once built, never goes stale, unless
the oracle's embedder changes: an index of another embedder's chunk vectors is built again.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from oracle.attribution.progress import LogProgress
from oracle.rpc import describe
from tributa.datasets import DatasetInfo, dataset_text, read_dataset
from tributa.errors import TributaError
from tributa.store import NotFound, StoreError

log = logging.getLogger("tributa.oracle.attribution")

# Why a registered dataset is not (yet) in attribution; recorded in attribution records.
NOT_YET_INDEXED = "not_yet_indexed"
INDEXING = "indexing"
CONTENT_NOT_IN_STORE = "content_not_in_store"
STORE_UNAVAILABLE = "store_unavailable"
INDEX_FAILED = "index_failed"  # the content cannot be indexed (not text, empty): never retried
# A dataset's content reaches the oracle by upload just after its registration: until this long
# after the indexer first saw it, a missing copy is looked for on every pass, without a warning.
UPLOAD_GRACE_S = 120.0


class IndexingStopped(TributaError):
    """The oracle is stopping: the build in progress is dropped (the next start builds it)."""


@dataclass
class _Pending:
    info: DatasetInfo
    reason: str = NOT_YET_INDEXED
    retry_at: float = 0.0
    warned: set[str] = field(default_factory=set)  # reasons already logged: each is said once
    seen_at: float = field(default_factory=time.monotonic)


class DatasetIndexer:
    """`step()` is one pass (tests call it); `start()` runs passes in a thread until `stop()`."""

    def __init__(
        self,
        contracts,
        store,
        indexes,
        interval_s: float = 2.0,
        retry_s: float = 10.0,
        upload_grace_s: float = UPLOAD_GRACE_S,
    ) -> None:
        self.contracts = contracts
        self.store = store
        self.indexes = indexes
        self.interval_s = interval_s
        self.retry_s = retry_s  # how often a dataset whose content is missing is looked for again
        self.upload_grace_s = upload_grace_s
        self._seen = 0  # registry ids 1.._seen have been read
        self._pending: dict[int, _Pending] = {}
        self._indexed: set[int] = set()
        self._lock = threading.Lock()  # the attributor reads reasons from the settler's thread
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._trouble: str | None = None

    # -- what the attributor and status read ---------------------------------------------------

    def reason(self, content_cid: str) -> str | None:
        """Why this dataset is not indexed, or None when the indexer has not seen it pending."""
        with self._lock:
            return next((p.reason for p in self._pending.values() if p.info.content_cid == content_cid), None)

    def counts(self) -> dict[str, int]:
        """Active registered datasets: indexed, and pending by reason."""
        with self._lock:
            counts = {"indexed": len(self._indexed)}
            for p in self._pending.values():
                counts[p.reason] = counts.get(p.reason, 0) + 1
            return counts

    # -- one pass --------------------------------------------------------------------------------

    def step(self) -> int:
        """Read new registrations, then build every index that can be built now; returns how many."""
        self._read_registrations()
        built = 0
        for dataset_id in sorted(self._pending):
            if self._stop.is_set():
                break
            built += self._try_index(self._pending[dataset_id])
        return built

    def _read_registrations(self) -> None:
        count = self.contracts.registry.functions.dataset_count().call()
        while self._seen < count:
            info = read_dataset(self.contracts, self._seen + 1)
            with self._lock:
                if info.active and self.indexes.has(info.content_cid):
                    self._indexed.add(info.dataset_id)
                elif info.active:  # a deactivated dataset is never attributed again
                    self._pending[info.dataset_id] = _Pending(info)
                self._seen += 1

    def _try_index(self, p: _Pending) -> bool:
        if p.reason == INDEX_FAILED or time.monotonic() < p.retry_at:
            return False
        info, cid = p.info, p.info.content_cid
        if not self.indexes.has(cid):  # else built beside the oracle (`dataset register` on its data dir)
            try:
                self._build(p)
            except IndexingStopped:
                self._set(p, NOT_YET_INDEXED)
                return False
            except NotFound:
                if time.monotonic() - p.seen_at < self.upload_grace_s:  # its owner uploads it right after registering
                    self._set(p, CONTENT_NOT_IN_STORE)
                    return False
                self._wait(
                    p,
                    CONTENT_NOT_IN_STORE,
                    (
                        f"dataset {info.dataset_id} (content {cid}) is not in the oracle's content store, so attribution "
                        "leaves it out until it arrives: upload it to the oracle's content API (`tributa dataset register` "
                        "does), or run `tributa --data-dir <the oracle's data dir> store add <path>` on the oracle's "
                        f"machine; looking again every {self.retry_s:.0f}s"
                    ),
                )
                return False
            except (StoreError, OSError) as exc:  # the store or the disk is away: try again later
                self._wait(
                    p,
                    STORE_UNAVAILABLE,
                    f"dataset {info.dataset_id} ({cid}) cannot be indexed now: "
                    f"{describe(exc)}; retrying every {self.retry_s:.0f}s",
                )
                return False
            except Exception as exc:  # the content itself (not UTF-8 text, empty): it will not change
                self._set(p, INDEX_FAILED)
                log.warning(
                    "dataset %d (%s) cannot be indexed and is left out of attribution: %s",
                    info.dataset_id,
                    cid,
                    describe(exc),
                    exc_info=not isinstance(exc, ValueError),
                )
                return False
        with self._lock:
            del self._pending[info.dataset_id]
            self._indexed.add(info.dataset_id)
        return True

    def _build(self, p: _Pending) -> None:
        info, cid = p.info, p.info.content_cid
        if not self.store.has(cid):  # checked first: a missing root costs no read, nor a traceback
            raise NotFound(cid)
        text = dataset_text(self.store, cid)
        self._set(p, INDEXING)
        began = time.monotonic()
        arrived = " (its content arrived)" if CONTENT_NOT_IN_STORE in p.warned else ""
        stale = self.indexes.stale(cid)
        if stale is not None:
            arrived += f" (again: its index holds {stale} chunk vectors, the oracle embeds with {self.indexes.embedder.model_id})"
        log.info(
            "indexing dataset %d (%s) for attribution%s: %d characters",
            info.dataset_id,
            cid,
            arrived,
            len(text),
            extra={"fields": {"dataset_id": info.dataset_id, "content_cid": cid, "chars": len(text)}},
        )
        index = self.indexes.build(cid, text, self._progress(cid))
        seconds = time.monotonic() - began
        log.info(
            "indexed dataset %d (%s): %d tokens, %d chunks in %.1fs",
            info.dataset_id,
            cid,
            index.token_count,
            index.manifest.chunk_count,
            seconds,
            extra={
                "fields": {
                    "dataset_id": info.dataset_id,
                    "content_cid": cid,
                    "tokens": index.token_count,
                    "seconds": round(seconds, 3),
                }
            },
        )

    def _progress(self, cid: str):
        report = LogProgress(cid)

        def progress(stage: str, done: int, total: int) -> None:
            if self._stop.is_set():  # builds call this often: the way a shutdown reaches one
                raise IndexingStopped()
            report(stage, done, total)

        return progress

    def _set(self, p: _Pending, reason: str) -> None:
        with self._lock:
            p.reason = reason

    def _wait(self, p: _Pending, reason: str, message: str) -> None:
        self._set(p, reason)
        p.retry_at = time.monotonic() + self.retry_s
        if reason not in p.warned:
            p.warned.add(reason)
            log.warning(
                message,
                extra={
                    "fields": {"dataset_id": p.info.dataset_id, "content_cid": p.info.content_cid, "reason": reason}
                },
            )

    # -- the thread ------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dataset-indexer", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 3.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
                if self._trouble is not None:
                    log.info("dataset indexer: passes complete again")
                    self._trouble = None
            except Exception as exc:  # the chain or a bug: one line per kind of trouble, then retry  # noqa: BLE001
                what = describe(exc)
                if what != self._trouble:
                    log.warning("dataset indexer pass failed: %s; retrying every %.0fs, quiet", what, self.interval_s)
                    self._trouble = what
            self._stop.wait(self.interval_s)
