"""The oracle's attribution step: registered datasets -> indexes -> engine -> settlement weights.

Engine dataset ids are the datasets' content CIDs (an index is built before the registry
assigns a number); the settlement maps them to on-chain ids. The stored record wraps the
engine's record with that mapping, so anyone can re-run the engine and check both.

Indexes are built by the indexer (indexer.py) when a dataset is registered, never here: a task
is attributed against the datasets indexed by then, and its record names the registered ones
left out ("unindexed", with a reason each), so one missing dataset does not stop the others.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from oracle.attribution.engine import AttributionEngine
from oracle.attribution.index import AttributionIndex
from oracle.attribution.indexer import NOT_YET_INDEXED, DatasetIndexer, IndexingStopped
from oracle.attribution.segments import SpanSegments
from oracle.attribution.shared_models import serialized
from oracle.attribution.weights import fallback_weights
from oracle.db import Task
from oracle.settler import Attribution
from tributa.chain.contracts import Contracts
from tributa.config import Settings
from tributa.datasets import DatasetInfo, list_datasets
from tributa.registry import read_model
from tributa.store import cid as cidlib

log = logging.getLogger("tributa.oracle.attribution")

RECORD_VERSION = 2  # 2: "unindexed" and "unindexed_reasons"
INDEX_UNREADABLE = "index_unreadable"


class DatasetIndexes:
    """Attribution indexes on disk, one folder per dataset content CID, and the span segments
    (segments.py) that cover them with a few suffix arrays."""

    def __init__(self, root: Path, tokenizer, embedder) -> None:
        self.root = Path(root)
        # The indexer's thread and the settler's share these: each call takes one lock.
        self.tokenizer, self.embedder = serialized(tokenizer, embedder)
        self.segments = SpanSegments(self.root)
        self._built_with: dict[str, tuple[int, object]] = {}  # content CID -> (manifest mtime, its embedder id)

    def path(self, content_cid: str) -> Path:
        return self.root / content_cid

    def has(self, content_cid: str) -> bool:
        """Whether this content's index is on disk and usable with this embedder."""
        return (self.path(content_cid) / "manifest.json").exists() and self.stale(content_cid) is None

    def stale(self, content_cid: str) -> str | None:
        """The embedder an index on disk was built with when it is another than this one's (its
        chunk vectors cannot be compared with this embedder's queries, so the indexer rebuilds
        it: e.g. float32 MiniLM's after the switch to the quantized one); else None."""
        if self.embedder is None:
            return None
        file = self.path(content_cid) / "manifest.json"
        try:
            stamp = file.stat().st_mtime_ns
            cached = self._built_with.get(content_cid)
            if cached is None or cached[0] != stamp:
                cached = (stamp, json.loads(file.read_text()).get("embedder_id"))
                self._built_with[content_cid] = cached
        except (OSError, ValueError, AttributeError):  # missing, or unreadable: the loader says which
            return None
        built_with = cached[1]
        return built_with if isinstance(built_with, str) and built_with != self.embedder.model_id else None

    def build(self, content_cid: str, text: str, progress=None) -> AttributionIndex:
        index = AttributionIndex.build(
            content_cid, text, self.tokenizer, self.embedder, self.path(content_cid), progress
        )
        try:
            self.segments.add(index, progress)
        except IndexingStopped:
            raise
        except Exception as exc:  # the index stands; attribution searches it on its own until a later add
            log.warning(
                "dataset %s is indexed, but the span segments were not updated (%s): attribution searches "
                "its own index",
                content_cid,
                exc,
                exc_info=not isinstance(exc, OSError),
            )
        return index


def default_indexes(settings: Settings) -> DatasetIndexes:
    """The oracle's indexes: the project's tokenizer, and the quantized MiniLM (quantized.py) for
    chunk and query vectors alike, on the CPU."""
    from oracle.attribution.quantized import load_quantized_embedder
    from tributa.ml.tokenizer import load_tokenizer

    return DatasetIndexes(settings.data_dir / "attribution", load_tokenizer(), load_quantized_embedder())


class OracleAttributor:
    """Called by the settler for each verified task."""

    def __init__(
        self, contracts: Contracts, store, indexes: DatasetIndexes, indexer: DatasetIndexer | None = None
    ) -> None:
        self.contracts = contracts
        self.store = store
        self.indexes = indexes
        self.indexer = indexer  # started and stopped by the oracle's service (oracle/service.py)
        self._engine: AttributionEngine | None = None
        self._engine_key: tuple = ()
        self._cid_to_id: dict[str, int] = {}
        self._unreadable: set[str] = set()  # content CIDs whose index would not load (said once)
        self._lock = threading.Lock()

    def _engine_for(self, datasets: list[DatasetInfo]) -> tuple[AttributionEngine | None, dict[int, str]]:
        """The engine over the datasets indexed now, and {dataset id: reason} for the others."""
        unindexed = {}
        for d in datasets:
            if d.content_cid in self._unreadable:
                unindexed[d.dataset_id] = INDEX_UNREADABLE
            elif not self.indexes.has(d.content_cid):
                reason = self.indexer.reason(d.content_cid) if self.indexer is not None else None
                unindexed[d.dataset_id] = reason or NOT_YET_INDEXED
        ready = [d for d in datasets if d.dataset_id not in unindexed]
        generation = self.indexes.segments.generation()  # a merge changes which corpora to search
        key = (tuple(sorted(d.content_cid for d in ready)), generation)
        if key != self._engine_key:
            loaded = {}
            for d in ready:
                try:
                    loaded[d.content_cid] = AttributionIndex.load(self.indexes.path(d.content_cid))
                except (OSError, ValueError) as exc:  # a damaged index leaves out its dataset alone
                    log.warning(
                        "the attribution index of dataset %d (%s) does not load, so attribution leaves "
                        "it out: %s; delete %s and restart the oracle to rebuild it",
                        d.dataset_id,
                        d.content_cid,
                        exc,
                        self.indexes.path(d.content_cid),
                    )
                    self._unreadable.add(d.content_cid)
                    unindexed[d.dataset_id] = INDEX_UNREADABLE
            indexes = list(loaded.values())
            corpora = self.indexes.segments.corpora()[1] if indexes else []
            self._engine = (
                AttributionEngine(indexes, self.indexes.tokenizer, self.indexes.embedder, corpora=corpora)
                if indexes
                else None
            )
            self._engine_key = (
                tuple(sorted(loaded)),
                generation,
            )  # an unreadable one is left out of `ready` from now on
            self._cid_to_id = {d.content_cid: d.dataset_id for d in ready if d.content_cid in loaded}
        return self._engine, unindexed

    def __call__(self, task: Task) -> Attribution:
        with self._lock:
            try:
                return self._attribute(task)
            except Exception:  # attribution must never block payment: fall back, and say so in the log
                log.exception("attribution of task %s failed; falling back to the model's datasets", task.task_id)
                return self._settle_with(task, None, "engine_error")

    def _attribute(self, task: Task) -> Attribution:
        if task.private:
            # A private output is not in the store, and verbatim spans would publish it: the data
            # share follows the model's registered training datasets instead.
            return self._settle_with(task, None, "private_task")
        output = json.loads(self.store.get_bytes(task.result_cid))
        if output.get("kind") != "generate":
            return self._settle_with(task, None, "not_generation")
        datasets = [d for d in list_datasets(self.contracts) if d.active]
        engine, unindexed = self._engine_for(datasets)
        if engine is None:
            return self._settle_with(task, None, "no_datasets", unindexed)
        record = engine.attribute(output["text"]) if output.get("text") else None
        return self._settle_with(task, record, "engine", unindexed)

    def _settle_with(self, task: Task, record, source: str, unindexed: dict[int, str] | None = None) -> Attribution:
        unindexed = unindexed or {}
        weights = {
            self._cid_to_id[c]: bps for c, bps in (record.weights_bps.items() if record else ()) if c in self._cid_to_id
        }
        if not weights:
            model = read_model(self.contracts.registry, task.model_id)
            fallback = fallback_weights([str(i) for i in model.dataset_ids], model.dataset_weights_bps)
            weights = {int(i): bps for i, bps in fallback.items()}
            source = "model_training_datasets" if weights else "refund_requester"
        ids = sorted(weights)
        envelope = {
            "version": RECORD_VERSION,
            "task_id": task.task_id,
            "result_cid": task.result_cid,
            "settlement": {"source": source, "dataset_ids": ids, "weights_bps": [weights[i] for i in ids]},
            "datasets": {cid: self._cid_to_id[cid] for cid in sorted(self._cid_to_id)},
            # Registered datasets the engine did not see (content not in the store yet, index building…).
            "unindexed": sorted(unindexed),
            "unindexed_reasons": {str(i): unindexed[i] for i in sorted(unindexed)},
            "record": record.to_dict() if record else None,
        }
        data = json.dumps(envelope, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
        record_cid = str(self.store.put_bytes(data))
        return Attribution(record_cid, cidlib.cid_to_digest(record_cid), ids, [weights[i] for i in ids])


def build_attributor(settings: Settings, contracts: Contracts, store) -> OracleAttributor:
    """The attributor with its indexer (`attributor.indexer`), which the oracle's service runs."""
    indexes = default_indexes(settings)
    return OracleAttributor(contracts, store, indexes, DatasetIndexer(contracts, store, indexes))
