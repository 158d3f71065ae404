"""The oracle's attribution step: registered datasets -> indexes -> engine -> settlement weights.

Engine dataset ids are the datasets' content CIDs (an index is built before the registry
assigns a number); the settlement maps them to on-chain ids. The stored record wraps the
engine's record with that mapping, so anyone can re-run the engine and check both.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Callable

from oracle.attribution.engine import AttributionEngine
from oracle.attribution.index import AttributionIndex
from oracle.attribution.weights import fallback_weights
from oracle.db import Task
from oracle.settler import Attribution
from tributa.chain.contracts import Contracts
from tributa.config import Settings
from tributa.datasets import DatasetInfo, dataset_text, list_datasets
from tributa.registry import read_model
from tributa.store import cid as cidlib

log = logging.getLogger("tributa.oracle.attribution")

RECORD_VERSION = 1


class DatasetIndexes:
    """Attribution indexes on disk, one folder per dataset content CID."""

    def __init__(self, root: Path, tokenizer, embedder) -> None:
        self.root = Path(root)
        self.tokenizer = tokenizer
        self.embedder = embedder

    def path(self, content_cid: str) -> Path:
        return self.root / content_cid

    def has(self, content_cid: str) -> bool:
        return (self.path(content_cid) / "manifest.json").exists()

    def build(self, content_cid: str, text: str, progress=None) -> AttributionIndex:
        return AttributionIndex.build(content_cid, text, self.tokenizer, self.embedder, self.path(content_cid), progress)

    def ensure(self, content_cid: str, text_source: Callable[[], str], progress=None) -> AttributionIndex:
        if self.has(content_cid):
            return AttributionIndex.load(self.path(content_cid))
        log.info("indexing dataset %s", content_cid)
        return self.build(content_cid, text_source(), progress)


def default_indexes(settings: Settings) -> DatasetIndexes:
    from tributa.ml.embeddings import load_embedder
    from tributa.ml.tokenizer import load_tokenizer

    return DatasetIndexes(settings.data_dir / "attribution", load_tokenizer(), load_embedder())


class OracleAttributor:
    """Called by the settler for each verified task."""

    def __init__(self, contracts: Contracts, store, indexes: DatasetIndexes) -> None:
        self.contracts = contracts
        self.store = store
        self.indexes = indexes
        self._engine: AttributionEngine | None = None
        self._engine_key: tuple[str, ...] = ()
        self._cid_to_id: dict[str, int] = {}
        self._lock = threading.Lock()

    def _engine_for(self, datasets: list[DatasetInfo]) -> AttributionEngine | None:
        key = tuple(sorted(d.content_cid for d in datasets))
        if key != self._engine_key:
            loaded = [
                self.indexes.ensure(d.content_cid, lambda d=d: dataset_text(self.store, d.content_cid)) for d in datasets
            ]
            self._engine = AttributionEngine(loaded, self.indexes.tokenizer, self.indexes.embedder) if loaded else None
            self._engine_key = key
            self._cid_to_id = {d.content_cid: d.dataset_id for d in datasets}
        return self._engine

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
        engine = self._engine_for(datasets)
        if engine is None:
            return self._settle_with(task, None, "no_datasets")
        record = engine.attribute(output["text"]) if output.get("text") else None
        return self._settle_with(task, record, "engine")

    def _settle_with(self, task: Task, record, source: str) -> Attribution:
        weights = {self._cid_to_id[c]: bps for c, bps in (record.weights_bps.items() if record else ()) if c in self._cid_to_id}
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
            "record": record.to_dict() if record else None,
        }
        data = json.dumps(envelope, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
        record_cid = str(self.store.put_bytes(data))
        return Attribution(record_cid, cidlib.cid_to_digest(record_cid), ids, [weights[i] for i in ids])


def build_attributor(settings: Settings, contracts: Contracts, store) -> OracleAttributor:
    return OracleAttributor(contracts, store, default_indexes(settings))
