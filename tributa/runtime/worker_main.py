"""The serving worker process: one base model on one device, batches of jobs over a socket.

Started by `tributa.runtime.worker.ModelWorker` as a fresh interpreter (`python -m
tributa.runtime.worker_main FD`), never forked from a process that may hold CUDA. It speaks JSON
only (never pickle), so a worker that a job subverted cannot run code in the agent by its replies.

    agent -> worker  {"op": "load", "kind", "base_dir", "device", "dtype", "max_adapters", "max_batch", "threads"}
    worker -> agent  {"op": "ready", "model_id", "device", "dtype", "pid", "load_s"}
                     or {"op": "failed", "message"}, and the worker exits
    agent -> worker  {"op": "run", "jobs": [job, ...]}       (see `_run_generate` / `_run_embed`)
    worker -> agent  {"op": "done", "results": [{"id", "ok": {...}} or {"id", "error", "message"}]}
    agent -> worker  {"op": "stats"}  ->  {"op": "stats", "rss_mb", "adapters", "gpu_peak_mb" on CUDA}
"""

from __future__ import annotations

import json
import os
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

from tributa.errors import TributaError

# A message larger than this is refused by the reader: neither side buffers unbounded data.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def send(conn: Connection, message: dict[str, Any]) -> None:
    conn.send_bytes(json.dumps(message, separators=(",", ":"), allow_nan=False).encode())


def receive(conn: Connection) -> dict[str, Any]:
    message = json.loads(conn.recv_bytes(MAX_MESSAGE_BYTES))
    if not isinstance(message, dict):
        raise ValueError("a worker message must be a JSON object")
    return message


def rss_mb() -> float:
    """This process's resident set size in MiB (VmRSS of /proc/self/status)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class _Serving:
    """The loaded model of this worker and how it runs a batch."""

    # By kind: a GenerationRunner, an EmbeddingRunner, or None (audit callables only); each
    # _run_<kind> uses its own.
    runner: Any
    dtype: str | None

    def __init__(self, load: dict[str, Any]) -> None:
        from tributa.ml.folder_check import check_model_folder

        if load.get("threads") and load["kind"] != "call":
            import torch

            torch.set_num_threads(int(load["threads"]))
        self.kind = load["kind"]
        started = time.perf_counter()
        if load.get("base_dir"):
            check_model_folder(load["base_dir"])  # again, inside the sandbox: the agent's check could be raced
        if self.kind == "generate":
            from tributa.runtime.generation import GenerationRunner

            self.runner = GenerationRunner(
                load["base_dir"], device=load["device"], max_adapters=int(load["max_adapters"]), dtype=load.get("dtype")
            )
            self.dtype = self.runner.dtype
        elif self.kind == "call":
            self.runner = None  # audit callables only: no model
            self.dtype = None
        elif self.kind == "embed":
            from pathlib import Path

            from tributa.runtime.embedding import EmbeddingRunner

            folder = Path(load["base_dir"]) if load.get("base_dir") else None
            self.runner = EmbeddingRunner(device=load["device"], folder=folder)
            self.dtype = "float32"
        else:
            raise ValueError(f"unknown worker kind {self.kind!r}")
        self.load_s = time.perf_counter() - started
        self.max_adapters = int(load.get("max_adapters", 1))
        self.max_batch = int(load.get("max_batch") or 32)  # rows per forward pass of an embedding batch
        self.test_hook = bool(load.get("test_hook"))

    def ready(self) -> dict[str, Any]:
        return {
            "op": "ready",
            "model_id": getattr(self.runner, "model_id", None),
            "device": getattr(self.runner, "device", "cpu"),
            "dtype": self.dtype,
            "dim": getattr(self.runner, "dim", None),  # embeddings: how large a reply may be
            "pid": os.getpid(),
            "load_s": round(self.load_s, 3),
        }

    def stats(self) -> dict[str, Any]:
        stats = {"op": "stats", "rss_mb": round(rss_mb(), 1), "adapters": list(getattr(self.runner, "adapters", ()))}
        if str(getattr(self.runner, "device", "cpu")).startswith("cuda"):
            import torch

            stats["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated(self.runner.device) / 2**20, 1)
        return stats

    def run(self, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.test_hook and jobs and "exec" in jobs[0]:
            return [_run_test_code(job) for job in jobs]
        if self.kind == "call":
            return [_run_call(job) for job in jobs]
        if self.kind == "generate":
            return self._run_generate(jobs)
        return self._run_embed(jobs)

    def _run_generate(self, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """job: {"id", "prompt", "adapter" (name or null), "adapter_path", "max_new_tokens", "chat"}.

        Adapters are loaded just in time into the runner's LRU cache; a batch that names more
        adapters than the cache holds runs in chunks that each fit."""
        from tributa.ml.folder_check import UnsafeModelFolder, check_model_folder
        from tributa.ml.models import ModelFolderError
        from tributa.runtime.errors import InferenceInputError
        from tributa.runtime.generation import GenerationRequest

        results: dict[int, dict[str, Any]] = {}
        chunk: list[dict[str, Any]] = []
        names: set[str] = set()

        def flush() -> None:
            requests = [
                GenerationRequest(j["prompt"], j.get("adapter"), j["max_new_tokens"], j.get("chat", False))
                for j in chunk
            ]
            for job, result in zip(chunk, self.runner.generate_batch(requests), strict=False):
                if isinstance(result, InferenceInputError):
                    results[job["id"]] = {"id": job["id"], "error": "input", "message": str(result)}
                else:
                    results[job["id"]] = {"id": job["id"], "ok": _generation_fields(result)}
            chunk.clear()
            names.clear()

        for job in jobs:
            name = job.get("adapter")
            if name is not None and name not in names and len(names) >= self.max_adapters:
                flush()
            if name is not None:
                try:
                    if name not in self.runner.adapters:
                        check_model_folder(job["adapter_path"])
                    self.runner.load_adapter(name, job["adapter_path"])
                except (ModelFolderError, InferenceInputError, UnsafeModelFolder) as exc:
                    results[job["id"]] = {"id": job["id"], "error": "spec", "message": str(exc)}
                    continue
                names.add(name)
            chunk.append(job)
        if chunk:
            flush()
        return [results[job["id"]] for job in jobs]

    def _run_embed(self, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """job: {"id", "texts"}. The batch's texts are embedded together, sorted by token length
        across jobs in chunks of max_batch (`EmbeddingRunner.embed_many`): a vector may then
        differ from its job alone in the last bits, which the acceptance rule allows (cosine
        >= min_cosine, `tributa.verification`). A job with bad input fails alone."""
        from tributa.runtime.errors import InferenceInputError

        results = self.runner.embed_many([job.get("texts") for job in jobs], chunk=self.max_batch)
        out = []
        for job, result in zip(jobs, results, strict=False):
            if isinstance(result, InferenceInputError):
                out.append({"id": job["id"], "error": "input", "message": str(result)})
            else:
                out.append(
                    {
                        "id": job["id"],
                        "ok": {
                            "model_id": result.model_id,
                            "dim": result.dim,
                            "vectors": result.vectors.tolist(),
                            "timings": result.timings,
                        },
                    }
                )
        return out


def _run_call(job: dict[str, Any]) -> dict[str, Any]:
    """A pickled (fn, args) from the agent (sandbox.run_callable): only the trusted side pickles;
    the result goes back as bytes or JSON, which the agent can read without running anything."""
    import base64
    import pickle

    try:
        fn, args = pickle.loads(base64.b64decode(job["call"]))
        result = fn(*args)
        if isinstance(result, (bytes, bytearray)):
            return {"id": job["id"], "ok": {"bytes": base64.b64encode(bytes(result)).decode()}}
        return {"id": job["id"], "ok": {"json": json.dumps(result)}}
    except Exception as exc:  # noqa: BLE001
        return {
            "id": job["id"],
            "error": "call",
            "type": type(exc).__name__,
            "message": f"{type(exc).__name__}: {exc}"[:2000],
        }


def _run_test_code(job: dict[str, Any]) -> dict[str, Any]:
    """Tests only (the agent never enables it): run attacker code inside the worker, as a job
    subverted through a model would, and return what it set as `result` or the error it hit."""
    scope: dict[str, Any] = {}
    try:
        exec(job["exec"], scope)
    except Exception as exc:  # noqa: BLE001
        return {"id": job["id"], "error": "exec", "message": f"{type(exc).__name__}: {exc}"}
    return {"id": job["id"], "ok": {"result": repr(scope.get("result"))}}


def _generation_fields(result: Any) -> dict[str, Any]:
    return {
        "text": result.text,
        "token_ids": list(result.token_ids),
        "prompt_tokens": result.prompt_tokens,
        "finish_reason": result.finish_reason,
        "model_id": result.model_id,
        "adapter": result.adapter,
        "timings": result.timings,
    }


def serve(conn: Connection, scratch: bool = False) -> None:
    """scratch: in a sandbox, each batch writes to a fresh place and leaves nothing behind."""
    try:
        serving = _Serving(receive(conn))
    except Exception as exc:  # a model that fails to load fails the worker's jobs with this reason  # noqa: BLE001
        send(conn, {"op": "failed", "message": f"{type(exc).__name__}: {exc}"[:2000]})
        return
    from tributa.runtime.scratch import Scratch

    space = Scratch() if scratch else None  # after the load: what loading wrote stays
    send(conn, serving.ready())
    while True:
        try:
            message = receive(conn)
        except EOFError:
            return  # the agent closed its end: nothing more to serve
        # Every reply names the message it answers: the agent drops a worker whose replies stray.
        seq = message.get("seq")
        if message.get("op") == "run":
            try:
                if space:
                    space.begin()
                results = serving.run(message["jobs"])
            except BaseException as exc:  # MemoryError above all: say why, then die; the agent  # noqa: BLE001
                # restarts the worker and re-runs the batch's jobs one by one to find the culprit.
                send(conn, {"op": "crashed", "seq": seq, "message": f"{type(exc).__name__}: {exc}"[:2000]})
                raise SystemExit(3) from None
            send(conn, {"op": "done", "seq": seq, "results": results})
            if space:
                space.end()
        elif message.get("op") == "stats":
            send(conn, {**serving.stats(), "seq": seq})
        else:
            send(conn, {"op": "error", "message": f"unknown op {message.get('op')!r}"})


def _apply_limits(argv: list[str]) -> None:
    # Before torch is imported: a model or job that maps past the memory limit gets MemoryError.
    # Soft and hard alike, so nothing in the worker can raise them again.
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # --max-threads stands in for a pids cgroup (counted per user namespace; not for host root).
    for flag, which, scale in (
        ("--memory-mb", resource.RLIMIT_AS, 2**20),
        ("--open-files", resource.RLIMIT_NOFILE, 1),
        ("--max-threads", resource.RLIMIT_NPROC, 1),
    ):
        if flag in argv:
            limit = int(argv[argv.index(flag) + 1]) * scale
            resource.setrlimit(which, (limit, limit))
    if "--cpu-seconds" in argv:
        # SIGXCPU at the limit raises CpuLimitExceeded in the job (reported like any failure);
        # the kernel's SIGKILL two seconds later stops code that never returns to Python.
        import signal

        limit = int(argv[argv.index("--cpu-seconds") + 1])
        signal.signal(signal.SIGXCPU, _cpu_limit_reached)
        resource.setrlimit(resource.RLIMIT_CPU, (limit, limit + 2))


class CpuLimitExceeded(TributaError):
    """The worker used up its CPU seconds (RLIMIT_CPU)."""


def _cpu_limit_reached(signum: int, frame: Any) -> None:
    raise CpuLimitExceeded("the worker used up its CPU time limit")


def main(argv: list[str]) -> None:
    _apply_limits(argv)
    if "--seccomp" in argv:  # no process, exec or namespace calls from here on (seccomp.py)
        from tributa.runtime import landlock, seccomp

        seccomp.install(seccomp.worker_filter())
        landlock.restrict_self()  # no ptrace-mode access (/proc/PID/mem) to anything outside
    fd = int(argv[1])
    conn = Connection(fd)
    try:
        serve(conn, scratch="--scratch" in argv)
    finally:
        conn.close()


if __name__ == "__main__":
    main(sys.argv)
