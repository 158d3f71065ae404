"""The agent's side of one serving worker: a queue, a batcher, and a restart on crash or hang.

Jobs submitted from any thread wait in a queue; one dispatcher thread takes what has arrived (up
to `max_batch`, after lingering `batch_wait_s` for more) and sends it to the worker process as one
batch. If the worker dies or overruns `batch_timeout_s`, it is killed and started again, and the
jobs of that batch are re-run one by one: the job that kills the worker fails with the reason on
its second death; the others complete. No submitted job is ever dropped: each future ends in a
result or an exception.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from tributa.runtime import bwrap, seccomp
from tributa.runtime.worker_main import receive, send

log = logging.getLogger("tributa.agent.worker")

# What the worker inherits of the agent's environment: what Python, the locale, the model caches
# and CUDA need. The agent's own settings (its key, password, RPC credentials) stay out.
WORKER_ENV_PASSED = (
    "PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "VIRTUAL_ENV",
    "HF_HOME", "HF_HUB_CACHE", "TRANSFORMERS_CACHE", "TORCH_HOME", "XDG_CACHE_HOME", "TRIBUTA_CACHE_DIR",
    "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "CUDA_HOME", "LD_LIBRARY_PATH",
)
_OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def worker_environment(parent: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    env = {name: parent[name] for name in WORKER_ENV_PASSED if name in parent}
    env.update(_OFFLINE)
    # The worker imports this package by path, wherever the agent was started from.
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    return env


def _memory_file(data: bytes) -> int:
    """An anonymous file holding `data`, read from its start (bwrap reads the filter from it)."""
    fd = os.memfd_create("tributa-seccomp")
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


class _WorkerDied(Exception):
    """The worker said why it is exiting (a MemoryError, say) before it went."""


class WorkerError(RuntimeError):
    """The worker could not run the job; the message says why."""


class WorkerLoadError(WorkerError):
    """The worker's model failed to load: no job of this model can run on this agent."""


class WorkerCrashed(WorkerError):
    """The worker died (or hung) running this job, twice: the job fails, the worker restarts."""


@dataclass(frozen=True)
class WorkerConfig:
    """One worker: which model, on which device, and how it batches."""

    kind: str  # "generate", "embed", or "call" (no model: audit callables, sandbox.run_callable)
    base_dir: str | None
    device: str = "cpu"
    dtype: str | None = None  # None: fp32 on CPU, bf16/fp16 on GPU
    max_adapters: int = 8  # the LRU adapter cache of the worker
    threads: int | None = None  # torch threads in the worker (None: torch's default)
    max_batch: int = 32
    batch_wait_s: float = 0.005  # after the first job arrives, how long to wait for more
    load_timeout_s: float = 600.0
    batch_timeout_s: float = 600.0  # a batch running longer than this: the worker is hung
    max_attempts: int = 2  # a job whose worker died this many times under it fails
    isolation: str = "none"  # "bwrap": inside bubblewrap (bwrap.py) with the seccomp filter
    read_only: tuple[str, ...] = ()  # the folders the worker may read besides Python: its model's
    memory_mb: int | None = None  # RLIMIT_AS of the worker (None: no limit; not applied on CUDA)
    test_hook: bool = False  # tests only: the worker runs {"exec": code} jobs (attack tests)
    cpu_seconds: int | None = None  # RLIMIT_CPU (None: none)
    open_files: int | None = None  # RLIMIT_NOFILE (None: inherited)
    import_roots: tuple[str, ...] = ()  # folders put on sys.path (sandbox.run_callable: the callable's package)

    def __post_init__(self) -> None:
        if self.kind not in ("generate", "embed", "call"):
            raise ValueError(f"worker kind must be generate, embed or call, got {self.kind!r}")
        if self.isolation not in ("none", "bwrap"):
            raise ValueError(f"worker isolation must be none or bwrap, got {self.isolation!r}")
        for name in ("max_adapters", "max_batch", "max_attempts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class _Pending:
    job: dict[str, Any]
    future: Future = field(default_factory=Future)
    attempts: int = 0
    alone: bool = False  # re-running after a crash: in a batch of its own, to find the culprit


class ModelWorker:
    """One worker process for one base model, fed by a dispatcher thread; thread-safe."""

    def __init__(self, config: WorkerConfig, environ: dict[str, str] | None = None) -> None:
        self.config = config
        self._env = worker_environment(os.environ if environ is None else environ)
        self._queue: deque[_Pending] = deque()
        self._wake = threading.Condition()
        self._closed = False
        self._process: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._conn_lock = threading.Lock()  # the dispatcher and stats() share the socket
        self.info: dict[str, Any] = {}
        self.restarts = 0
        self.batches: list[int] = []  # the size of every batch sent, for tests and the bench
        self._thread = threading.Thread(target=self._dispatch, name=f"worker-{Path(config.base_dir or 'minilm').name}", daemon=True)
        self._thread.start()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    def start(self) -> dict[str, Any]:
        """Start the worker now (else at the first job); returns its ready message."""
        with self._conn_lock:
            self._ensure_started()
            return dict(self.info)

    def submit(self, job: dict[str, Any]) -> Future:
        """Queue one job; its future ends in the worker's result dict or a WorkerError."""
        pending = _Pending(dict(job))
        with self._wake:
            if self._closed:
                raise WorkerError("the worker is closed")
            self._queue.append(pending)
            self._wake.notify()
        return pending.future

    def run(self, job: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        return self.submit(job).result(timeout)

    def stats(self) -> dict[str, Any]:
        """The worker's resident memory (MiB) and loaded adapters."""
        with self._conn_lock:
            self._ensure_started()
            assert self._conn is not None
            send(self._conn, {"op": "stats"})
            return receive(self._conn)

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        self._thread.join(timeout=10)
        with self._conn_lock:
            self._stop_process()
        while self._queue:
            self._queue.popleft().future.set_exception(WorkerError("the worker was closed before the job ran"))

    def __enter__(self) -> ModelWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the dispatcher thread -------------------------------------------------------------

    def _dispatch(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._run_batch(batch)
            except BaseException as exc:  # never leave a future hanging, whatever went wrong
                log.exception("worker dispatcher error")
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(WorkerError(f"{type(exc).__name__}: {exc}"))

    def _next_batch(self) -> list[_Pending] | None:
        with self._wake:
            while not self._queue and not self._closed:
                self._wake.wait()
            if self._closed:
                return None
            if self._queue[0].alone:
                return [self._queue.popleft()]
            # Linger while jobs keep arriving (each arrival extends the wait by batch_wait_s, up
            # to 20 of them): jobs leased together reach the queue from their threads in a burst.
            give_up = time.monotonic() + 20 * self.config.batch_wait_s
            while len(self._queue) < self.config.max_batch and not self._closed:
                before = len(self._queue)
                left = min(self.config.batch_wait_s, give_up - time.monotonic())
                if left <= 0:
                    break
                self._wake.wait(left)
                if len(self._queue) == before:
                    break  # nothing came in batch_wait_s: the burst is over
            batch: list[_Pending] = []
            while self._queue and len(batch) < self.config.max_batch and not self._queue[0].alone:
                batch.append(self._queue.popleft())
            return batch

    def _run_batch(self, batch: list[_Pending]) -> None:
        with self._conn_lock:
            try:
                self._ensure_started()
            except WorkerLoadError as exc:
                for pending in batch:
                    pending.future.set_exception(exc)
                return
            self.batches.append(len(batch))
            jobs = [{**pending.job, "id": n} for n, pending in enumerate(batch)]
            try:
                assert self._conn is not None
                send(self._conn, {"op": "run", "jobs": jobs})
                if not self._conn.poll(self.config.batch_timeout_s):
                    raise TimeoutError(f"no answer within {self.config.batch_timeout_s:.0f}s")
                reply = receive(self._conn)
                if reply.get("op") == "crashed":
                    raise _WorkerDied(reply.get("message", "the worker failed"))
                results = {r["id"]: r for r in reply["results"]}
                missing = [n for n in range(len(batch)) if n not in results]
                if reply.get("op") != "done" or missing:
                    raise ValueError(f"malformed reply from the worker (missing jobs {missing})")
            except (EOFError, OSError, TimeoutError, ValueError, KeyError, TypeError, _WorkerDied) as exc:
                self._crashed(batch, exc)
                return
        for n, pending in enumerate(batch):
            pending.future.set_result(results[n])

    def _crashed(self, batch: list[_Pending], exc: BaseException) -> None:
        status = self._stop_process(grace_s=0.0 if isinstance(exc, TimeoutError) else 1.0)
        self.restarts += 1
        why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        log.warning("worker for %s died (%s, exit status %s); restarting", self.config.base_dir or f"{self.config.kind} jobs", why, status)
        retry: list[_Pending] = []
        for pending in batch:
            pending.attempts += 1
            if len(batch) == 1 and pending.attempts >= self.config.max_attempts:
                pending.future.set_exception(WorkerCrashed(
                    f"the serving worker died running this job {pending.attempts} times "
                    f"(last: {why}, exit status {status}); the job was not completed"
                ))
            else:
                pending.alone = True
                retry.append(pending)
        with self._wake:
            self._queue.extendleft(reversed(retry))
            self._wake.notify()

    # --- the process ----------------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        self._stop_process()
        parent, child = socket.socketpair()
        seccomp_fd = None
        try:
            argv = [sys.executable, "-m", "tributa.runtime.worker_main", str(child.fileno())]
            if self.config.isolation == "bwrap" and seccomp.supported():
                argv.append("--seccomp")
            if self.config.memory_mb and not self.config.device.startswith("cuda"):
                argv += ["--memory-mb", str(self.config.memory_mb)]
            if self.config.cpu_seconds:
                argv += ["--cpu-seconds", str(self.config.cpu_seconds)]
            if self.config.open_files:
                argv += ["--open-files", str(self.config.open_files)]
            passed = [child.fileno()]
            env = dict(self._env)
            sandboxed = self.config.isolation == "bwrap"
            # In bwrap, import roots are bound at fixed places: one under /tmp would hide its tmpfs.
            roots = {root: f"/opt/tributa-imports/{i}" if sandboxed else root for i, root in enumerate(self.config.import_roots)}
            if roots:
                env["PYTHONPATH"] = os.pathsep.join([*roots.values(), env["PYTHONPATH"]])
            if self.config.isolation == "bwrap":
                if seccomp.supported():
                    seccomp_fd = _memory_file(seccomp.worker_filter(allow_exec=True))
                    passed.append(seccomp_fd)
                else:
                    log.warning("no seccomp filter for %s: it is written for x86-64", os.uname().machine)
                read_only = [Path(p) for p in (self.config.base_dir, *self.config.read_only) if p]
                argv = bwrap.command(argv, read_only, {**env, "HOME": "/tmp"}, seccomp_fd, self.config.device.startswith("cuda"),
                                     mounted=[(Path(src), dest) for src, dest in roots.items()])
                env = {}
            self._process = subprocess.Popen(
                argv,
                pass_fds=passed,
                env=env,
                stdin=subprocess.DEVNULL,
                # A sandboxed worker never gets the agent's own stdout/stderr: through
                # /proc/self/fd it could reopen them and read or truncate the agent's log.
                stdout=subprocess.PIPE if sandboxed else None,
                stderr=subprocess.STDOUT if sandboxed else None,
                start_new_session=True,  # signals to the agent's group do not reach it
            )
            if sandboxed:
                threading.Thread(target=_forward_output, args=(self._process.stdout,), daemon=True,
                                 name="worker-output").start()
        finally:
            child.close()
            if seccomp_fd is not None:
                os.close(seccomp_fd)
        self._conn = Connection(parent.detach())
        try:  # a worker that failed to start (bwrap refusing a bind) has closed its end already
            send(self._conn, {
                "op": "load",
                "kind": self.config.kind,
                "base_dir": self.config.base_dir,
                "device": self.config.device,
                "dtype": self.config.dtype,
                "max_adapters": self.config.max_adapters,
                "threads": self.config.threads,
                "test_hook": self.config.test_hook,
            })
            if not self._conn.poll(self.config.load_timeout_s):
                raise TimeoutError(f"the model did not load within {self.config.load_timeout_s:.0f}s")
            ready = receive(self._conn)
        except (EOFError, OSError, TimeoutError, ValueError) as exc:
            status = self._stop_process()
            raise WorkerLoadError(f"the worker for {self.config.base_dir} died while loading ({exc or type(exc).__name__}, exit status {status})") from None
        if ready.get("op") != "ready":
            self._stop_process()
            raise WorkerLoadError(f"cannot load the model at {self.config.base_dir}: {ready.get('message', ready)}")
        self.info = ready
        log.info("worker pid %s serves %s on %s (%s), loaded in %.1fs", ready["pid"], self.config.base_dir, ready["device"], ready["dtype"], ready["load_s"])

    def _stop_process(self, grace_s: float = 0.0) -> int | None:
        """Kill and reap the worker process, if any; its exit status."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        process, self._process = self._process, None
        if process is None:
            return None
        try:  # a worker whose socket closed is usually exiting: let it say how (its exit status)
            return process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return process.wait()


_MAX_FORWARDED_LINE = 500


def _forward_output(stream) -> None:
    """Log a sandboxed worker's output lines (cut to a bounded length) until it exits."""
    with stream:
        for raw in iter(lambda: stream.readline(4096), b""):  # bounded: a line without end
            line = raw[:_MAX_FORWARDED_LINE].decode("utf-8", "replace").rstrip()
            if line:
                log.info("worker: %s", line)
