"""The oracle's own run of a task, for spot checks and for tasks whose agents disagree."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from oracle.db import Task
from tributa import private
from tributa.catalog import ModelCatalog
from tributa.chain.contracts import Contracts
from tributa.errors import TributaError
from tributa.registry import read_model
from tributa.runtime.executor import Executor, JobRunner
from tributa.runtime.jobs import RunnerRegistry, default_registry
from tributa.store import cid as cidlib
from tributa.verification import ClaimCheck
from tributa.verification.local import claim_checker

log = logging.getLogger("tributa.oracle.reexecute")


class Reexecutor:
    """Runs a task on the oracle's copies of the registered models (found by digest)."""

    def __init__(
        self,
        contracts: Contracts,
        store,
        model_dirs: list[Path],
        executor: JobRunner | None = None,
        oracle_key: bytes | None = None,
    ) -> None:
        self.contracts = contracts
        self.store = store
        # Opens private inputs (sealed to the oracle by the requester); without it they cannot be re-run.
        self.oracle_key = oracle_key
        self.where = private.Deployment(contracts.chain_id, contracts.escrow.address)
        self.catalog = ModelCatalog(store)
        for path in model_dirs:
            self.catalog.add(path)
        self.executor = executor or Executor()
        # A sandboxed executor rescores claims in a bwrap worker of its own (never a registered
        # model's loader next to the oracle's key); an in-process one, in this process.
        self._run_sandboxed = getattr(self.executor, "run_callable", None)
        self.registry: RunnerRegistry | None = (
            None if self._run_sandboxed else getattr(self.executor, "registry", None) or default_registry()
        )

    def __call__(self, task: Task) -> bytes:
        base, adapters = self._parts(task)
        log.info("re-executing task %s on model %s", task.task_id, task.model_id)
        return self.executor.run(base, adapters, self._input(task), self._token_limit(task))

    def claim_checker(self, task: Task, logit_margin: float) -> ClaimCheck | None:
        """Checks agents' claimed generations for `task` on the oracle's copy of its model (base +
        the adapter the input names), loaded on the first claim that needs it. None when the
        oracle holds no copy: then only equal generations agree."""
        try:
            self._parts(task)
        except TributaError:
            return None
        checker: list[ClaimCheck] = []

        def check(claim: dict[str, Any]) -> str | None:
            if not checker:
                checker.append(self._checker(task, logit_margin))
            return checker[0](claim)

        return check

    def _checker(self, task: Task, logit_margin: float) -> ClaimCheck:
        base, adapters = self._parts(task)
        return claim_checker(
            base,
            adapters,
            self._input(task),
            self._token_limit(task),
            logit_margin,
            run_callable=self._run_sandboxed,
            registry=self.registry,
        )

    def _token_limit(self, task: Task) -> int:
        """The model's registered max_new_tokens: it bounds the job, and is its default, as on the agents."""
        return read_model(self.contracts.registry, task.model_id).serving.max_new_tokens

    def _parts(self, task: Task) -> tuple[Any, list[Any]]:
        model = read_model(self.contracts.registry, task.model_id)
        base = self.catalog.get(model.weights_digest)
        adapters = [self.catalog.get(d) for d in model.adapter_digests]
        if base is None or any(a is None for a in adapters):
            raise TributaError(f"the oracle holds no copy of model {task.model_id}; give it with --model-dir")
        return base, adapters

    def _input(self, task: Task) -> bytes:
        input_cid = str(cidlib.digest_to_cid(bytes.fromhex(task.input_digest[2:])))
        data = self.store.get_bytes(input_cid)
        if not private.is_encrypted(data):
            return data
        if self.oracle_key is None:
            raise TributaError(f"task {task.task_id} is private and this re-executor has no oracle key to open it")
        return private.open_input(self.oracle_key, data, self.where, task.requester).input_bytes
