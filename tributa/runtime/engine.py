"""The serving engine: one long-lived worker process per base model, batching the jobs it is sent.

`ServingEngine.run` has the `JobRunner` signature, so the agent calls it once per job, from as
many threads as it has jobs in flight; the job's input is checked here, in the agent process, and
the job then waits in its base model's worker queue, where jobs that arrive together run as one
batch (generation: mixed adapters and the bare base in one forward pass). Outputs are the same
canonical bytes as the in-process `Executor`, and a job's tokens do not depend on its batch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from tributa.catalog import LocalModel
from tributa.runtime.executor import MAX_NEW_TOKENS, job_spec
from tributa.runtime.generation import GenerationResult
from tributa.runtime.jobs import (
    JobInputError,
    JobSpecError,
    embedding_output,
    embedding_texts,
    generation_output,
    generation_request,
    parse_input,
)
from tributa.runtime.worker import ModelWorker, WorkerConfig, WorkerError, WorkerLoadError


class ServingEngine:
    """Workers by base model folder, started on first use or by `preload`."""

    def __init__(self, config: WorkerConfig | None = None) -> None:
        # The template every worker starts from; kind and base_dir are set per model.
        self.template = config or WorkerConfig(kind="generate", base_dir=None)
        self._workers: dict[Path, ModelWorker] = {}
        self._lock = threading.Lock()

    def worker(self, base: LocalModel, adapters: Iterable[LocalModel] = ()) -> ModelWorker:
        """The worker of `base`, started with read access to `adapters` (in a sandbox, the only
        folders besides the base it can read: preload passes every adapter of every model)."""
        key = Path(base.path).resolve()
        with self._lock:
            worker = self._workers.get(key)
            if worker is None:
                readable = tuple(dict.fromkeys(str(Path(a.path).resolve()) for a in adapters))
                config = replace(self.template, kind=base.kind, base_dir=str(key), read_only=readable)
                worker = self._workers[key] = ModelWorker(config)
            return worker

    def preload(
        self, parts: Iterable[tuple[LocalModel, list[LocalModel]]], progress: Callable[[str], None] = print
    ) -> None:
        """Start every model's worker and load its adapters now, so a model this agent cannot
        serve (a folder that fails to load, an adapter of another base) is an error at start-up."""
        by_base: dict[Path, tuple[LocalModel, list[LocalModel]]] = {}
        for base, adapters in parts:  # models sharing a base share its worker: bind all adapters
            by_base.setdefault(Path(base.path).resolve(), (base, []))[1].extend(adapters)
        for base, adapters in by_base.values():
            info = self.worker(base, adapters).start()
            progress(
                f"worker pid {info['pid']}: {Path(base.path).name} on {info['device']} ({info['dtype']}), loaded in {info['load_s']:.1f}s"
            )
            for adapter in adapters if base.kind == "generate" else []:
                job = {
                    "kind": "generate",
                    "prompt": "a",
                    "adapter": adapter.cid,
                    "adapter_path": str(adapter.path),
                    "max_new_tokens": 1,
                }
                reply = self.worker(base).run(job)
                if "error" in reply:
                    raise JobSpecError(
                        f"model {Path(base.path).name} cannot serve adapter {adapter.path}: {reply['message']}"
                    )

    def run(
        self, base: LocalModel, adapters: list[LocalModel], input_bytes: bytes, max_new_tokens: int = MAX_NEW_TOKENS
    ) -> bytes:
        payload = parse_input(input_bytes)
        spec = job_spec(base, adapters, payload, max_new_tokens)
        if base.kind == "generate":
            request = generation_request(spec, payload)
            job: dict[str, Any] = {
                "prompt": request.prompt,
                "adapter": request.adapter,
                "adapter_path": spec.adapter_path,
                "max_new_tokens": request.max_new_tokens,
                "chat": request.chat,
            }
        else:
            job = {"texts": embedding_texts(payload)}
        try:
            reply = self.worker(base, adapters).run(job)
        except WorkerLoadError as exc:  # this agent's copy of the model does not load
            raise JobSpecError(str(exc)) from None
        if "error" in reply:
            # An adapter that does not fit its base fails on every agent: like bad input, the
            # task fails with the reason (and is refunded) instead of going round the agents.
            raise JobInputError(reply["message"])
        fields = reply["ok"]
        if base.kind == "generate":
            fields["token_ids"] = tuple(fields["token_ids"])
            return generation_output(GenerationResult(**fields)).output
        return embedding_output(fields["model_id"], fields["dim"], fields["vectors"], fields["timings"]).output

    def stats(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            workers = dict(self._workers)
        return {str(path): worker.stats() for path, worker in workers.items()}

    def close(self) -> None:
        with self._lock:
            workers, self._workers = list(self._workers.values()), {}
        for worker in workers:
            worker.close()

    def __enter__(self) -> ServingEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["ServingEngine", "WorkerConfig", "WorkerError"]
