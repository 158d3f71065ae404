"""The oracle's own run of a task, for spot checks and for tasks whose agents disagree."""

from __future__ import annotations

import logging
from pathlib import Path

from oracle.db import Task
from tributa.catalog import ModelCatalog
from tributa.chain.contracts import Contracts
from tributa.errors import TributaError
from tributa.registry import read_model
from tributa.runtime.executor import Executor, JobRunner
from tributa.store import cid as cidlib

log = logging.getLogger("tributa.oracle.reexecute")


class Reexecutor:
    """Runs a task on the oracle's copies of the registered models (found by digest)."""

    def __init__(self, contracts: Contracts, store, model_dirs: list[Path], executor: JobRunner | None = None) -> None:
        self.contracts = contracts
        self.store = store
        self.catalog = ModelCatalog(store)
        for path in model_dirs:
            self.catalog.add(path)
        self.executor = executor or Executor()

    def __call__(self, task: Task) -> bytes:
        model = read_model(self.contracts.registry, task.model_id)
        base = self.catalog.get(model.weights_digest)
        adapters = [self.catalog.get(d) for d in model.adapter_digests]
        if base is None or any(a is None for a in adapters):
            raise TributaError(f"the oracle holds no copy of model {task.model_id}; give it with --model-dir")
        input_cid = str(cidlib.digest_to_cid(bytes.fromhex(task.input_digest[2:])))
        log.info("re-executing task %s on model %s", task.task_id, task.model_id)
        return self.executor.run(base, adapters, self.store.get_bytes(input_cid))  # type: ignore[arg-type]
