"""The agent's side of one serving worker: a queue, a batcher, and a restart on crash or hang.

Jobs submitted from any thread wait in a queue; one dispatcher thread takes what has arrived (up
to `max_batch`, after lingering `batch_wait_s` for more) and sends it to the worker process as one
batch. If the worker dies or overruns `batch_timeout_s`, it is killed and started again, and the
jobs of that batch are re-run one by one: the job that kills the worker fails with the reason on
its second death; the others complete. No submitted job is ever dropped: each future ends in a
result or an exception.
"""

from __future__ import annotations

import json
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

from tributa.errors import TributaError
from tributa.json_input import depth_ok
from tributa.runtime import seccomp
from tributa.runtime.sandbox_process import SandboxProcess, Watchdog
from tributa.runtime.worker_main import MAX_MESSAGE_BYTES, send

log = logging.getLogger("tributa.agent.worker")

# What the worker inherits of the agent's environment: what Python, the locale, the model caches
# and CUDA need. The agent's own settings (its key, password, RPC credentials) stay out, and so
# does every TRIBUTA_* variable: workers get model folders by path, never a cache to build in.
WORKER_ENV_PASSED = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "VIRTUAL_ENV",
    "HF_HOME",
    "HF_HUB_CACHE",
    "TRANSFORMERS_CACHE",
    "TORCH_HOME",
    "XDG_CACHE_HOME",
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "CUDA_HOME",
    "LD_LIBRARY_PATH",
)
_OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def worker_environment(parent: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    env = {name: parent[name] for name in WORKER_ENV_PASSED if name in parent}
    env.update(_OFFLINE)
    # The worker imports this package by path, wherever the agent was started from.
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    return env


class _WorkerDied(TributaError):
    """The worker said why it is exiting (a MemoryError, say) before it went."""


class WorkerError(TributaError, RuntimeError):
    """The worker could not run the job; the message says why."""


class WorkerLoadError(WorkerError):
    """The worker's model failed to load: no job of this model can run on this agent."""


class WorkerCrashed(WorkerError):
    """The worker died (or hung) running this job, twice: the job fails, the worker restarts.
    `timed_out`: it was killed past the batch time limit (the job's wall-clock limit)."""

    def __init__(self, message: str, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


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
        self._sandbox: SandboxProcess | None = None  # with isolation="bwrap": the whole sandbox
        self._oom_killed = False  # the last worker stopped was killed by its memory cgroup
        self._seq = 0  # numbers each message to the worker; its reply must carry the number
        self._conn: Connection | None = None
        self._conn_lock = threading.Lock()  # the dispatcher and stats() share the socket
        self.info: dict[str, Any] = {}
        self.restarts = 0
        self.batches: list[int] = []  # the size of every batch sent, for tests and the bench
        self._thread = threading.Thread(
            target=self._dispatch, name=f"worker-{Path(config.base_dir or 'minilm').name}", daemon=True
        )
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
            self._ensure_idle()
            self._seq += 1
            token = Watchdog.arm(_STATS_TIMEOUT_S + 10, self._kill_now)
            try:
                assert self._conn is not None
                send(self._conn, {"op": "stats", "seq": self._seq})
                if not self._conn.poll(_STATS_TIMEOUT_S):
                    raise TimeoutError(f"no answer within {_STATS_TIMEOUT_S:.0f}s")
                reply = _receive(self._conn, _SMALL_REPLY)
                if not _answers(reply, self._seq) or reply.get("op") != "stats":
                    raise ValueError("a reply to another message")
            except Exception as exc:  # noqa: BLE001
                self._stop_process()
                self.restarts += 1
                raise WorkerError(
                    f"the worker's answer to stats was not one ({type(exc).__name__}: {exc}); it was stopped"
                ) from None
            finally:
                Watchdog.disarm(token)
            return reply

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
                self._ensure_idle()
            except WorkerLoadError as exc:
                for pending in batch:
                    pending.future.set_exception(exc)
                return
            self.batches.append(len(batch))
            self._seq += 1
            jobs = [{**pending.job, "id": n} for n, pending in enumerate(batch)]
            # A worker that stops reading, or sends half a frame, would hold this thread for
            # ever: past the batch timeout the watchdog kills it, which ends any wait on it.
            token = Watchdog.arm(self.config.batch_timeout_s + 10, self._kill_now)
            try:
                assert self._conn is not None
                send(self._conn, {"op": "run", "seq": self._seq, "jobs": jobs})
                if not self._conn.poll(self.config.batch_timeout_s):
                    raise TimeoutError(f"no answer within {self.config.batch_timeout_s:g}s")
                results = _results(_receive(self._conn, _reply_cap(jobs, self.info)), self._seq, len(batch))
            except Exception as exc:  # any reply but the expected one: this worker serves no more  # noqa: BLE001
                self._crashed(batch, exc)
                return
            finally:
                Watchdog.disarm(token)
        for n, pending in enumerate(batch):
            pending.future.set_result(results[n])

    def _crashed(self, batch: list[_Pending], exc: BaseException) -> None:
        status = self._stop_process(grace_s=0.0 if isinstance(exc, TimeoutError) else 1.0)
        self.restarts += 1
        why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if self._oom_killed:  # what counts tmpfs, shmem and threads' stacks too, not only mappings
            why += f"; killed past its memory limit ({self.config.memory_mb} MiB) by its memory cgroup"
        log.warning(
            "worker for %s died (%s, exit status %s); restarting",
            self.config.base_dir or f"{self.config.kind} jobs",
            why,
            status,
        )
        retry: list[_Pending] = []
        for pending in batch:
            pending.attempts += 1
            if len(batch) == 1 and pending.attempts >= self.config.max_attempts:
                # Short first: the oracle keeps 128 characters of a task's failure on-chain.
                pending.future.set_exception(
                    WorkerCrashed(
                        f"the job ran past its {self.config.batch_timeout_s:g}s time limit (tries: {pending.attempts}); not completed"
                        if isinstance(exc, TimeoutError)
                        else f"the serving worker died running this job {pending.attempts} times "
                        f"(last: {why}, exit status {status}); the job was not completed",
                        timed_out=isinstance(exc, TimeoutError),
                    )
                )
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
        try:
            # -P: nothing from the cwd on sys.path (a model folder's compiled Python, say).
            safe_path = ["-P"] if sys.version_info >= (3, 11) else []
            argv = [sys.executable, *safe_path, "-m", "tributa.runtime.worker_main", str(child.fileno())]
            if self.config.isolation == "bwrap":
                argv.append("--scratch")  # its tmpfs is its own: cleared after each batch
                if seccomp.supported():
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
            roots = {
                root: f"/opt/tributa-imports/{i}" if sandboxed else root
                for i, root in enumerate(self.config.import_roots)
            }
            if roots:
                env["PYTHONPATH"] = os.pathsep.join([*roots.values(), env["PYTHONPATH"]])
            if sandboxed:  # bwrap.py, seccomp.py, cgroups.py; its output is logged, never inherited
                read_only = [Path(p) for p in (self.config.base_dir, *self.config.read_only) if p]
                try:
                    self._sandbox = SandboxProcess.spawn(
                        argv,
                        passed,
                        {**env, "HOME": "/tmp"},
                        read_only,
                        [(Path(src), dest) for src, dest in roots.items()],
                        self.config.device.startswith("cuda"),
                        self.config.memory_mb,
                    )
                except (OSError, ValueError) as exc:
                    parent.close()
                    raise WorkerLoadError(f"cannot start the sandbox for {self.config.base_dir}: {exc}") from None
                self._process = self._sandbox.process
                threading.Thread(
                    target=_forward_output, args=(self._process.stdout,), daemon=True, name="worker-output"
                ).start()
            else:
                self._process = subprocess.Popen(
                    argv,
                    pass_fds=passed,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # signals to the agent's group do not reach it
                )
        finally:
            child.close()
        self._conn = Connection(parent.detach())
        try:  # a worker that failed to start (bwrap refusing a bind) has closed its end already
            send(
                self._conn,
                {
                    "op": "load",
                    "kind": self.config.kind,
                    "base_dir": self.config.base_dir,
                    "device": self.config.device,
                    "dtype": self.config.dtype,
                    "max_adapters": self.config.max_adapters,
                    "max_batch": self.config.max_batch,
                    "threads": self.config.threads,
                    "test_hook": self.config.test_hook,
                },
            )
            if not self._conn.poll(self.config.load_timeout_s):
                raise TimeoutError(f"the model did not load within {self.config.load_timeout_s:.0f}s")
            ready = _receive(self._conn, _SMALL_REPLY)
        except Exception as exc:  # noqa: BLE001
            status = self._stop_process()
            raise WorkerLoadError(
                f"the worker for {self.config.base_dir} died while loading ({exc or type(exc).__name__}, exit status {status})"
            ) from None
        if ready.get("op") != "ready":
            self._stop_process()
            raise WorkerLoadError(
                f"cannot load the model at {self.config.base_dir}: {str(ready.get('message', ready))[:2000]}"
            )
        if self._sandbox is not None and self._sandbox.init_pid:
            ready["pid"] = self._sandbox.init_pid  # the host's pid of it (inside, it is pid 1)
        self.info = ready
        log.info(
            "worker pid %s serves %s on %s (%s), loaded in %.1fs",
            ready.get("pid"),
            self.config.base_dir,
            ready.get("device"),
            ready.get("dtype"),
            float(ready.get("load_s") or 0),
        )

    def _stop_process(self, grace_s: float = 0.0) -> int | None:
        """Kill and reap the worker process, if any; its exit status."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        process, self._process = self._process, None
        sandbox, self._sandbox = self._sandbox, None
        if process is None:
            return None
        self._oom_killed = False
        try:  # a worker whose socket closed is usually exiting: let it say how (its exit status)
            status = process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            _kill(process, sandbox)
            status = process.wait()
        if sandbox is not None:
            sandbox.release()  # whatever bwrap left running dies, and its cgroups go
            self._oom_killed = sandbox.oom_killed
        return status

    def _kill_now(self) -> None:
        """From the watchdog, without the lock its stuck holder keeps: kill the worker now."""
        process, sandbox = self._process, self._sandbox
        if process is not None:
            _kill(process, sandbox)

    def _ensure_idle(self) -> None:
        """A started worker with nothing to say: between messages it has none to send, so one
        waiting now (or its end of the socket closed) is stale, forged or dying. It is replaced
        before it can answer anything; the jobs about to be sent are not blamed."""
        self._ensure_started()
        assert self._conn is not None
        if self._conn.poll(0):
            status = self._stop_process()
            self.restarts += 1
            log.warning(
                "worker for %s sent what nobody asked for, or exited (exit status %s); restarting",
                self.config.base_dir or f"{self.config.kind} jobs",
                status,
            )
            self._ensure_started()


def _kill(process: subprocess.Popen, sandbox: SandboxProcess | None) -> None:
    if sandbox is not None:
        sandbox.kill()  # the sandbox's init and everything else in it, then bwrap
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# Caps on a reply's frame, from what the batch it answers can legitimately hold: a reply past
# its cap is never read, let alone parsed (JSON of tiny containers takes ~20x its size).
_SMALL_REPLY = 64 * 1024  # ready, stats
_REPLY_PER_JOB = 8 * 1024  # id, model id, adapter, timings, or an error message (cut at 2000)
_REPLY_PER_TOKEN = 256  # a token's id and its text, JSON-escaped
_REPLY_PER_FLOAT = 26  # one embedding value as JSON
_REPLY_PER_TEST_JOB = 2**20  # test_hook jobs only
_STATS_TIMEOUT_S = 30.0


def _reply_cap(jobs: list[dict[str, Any]], info: dict[str, Any]) -> int:
    dim = info.get("dim")
    dim = dim if type(dim) is int and 0 < dim <= 65536 else 4096
    cap = _SMALL_REPLY
    for job in jobs:
        if "call" in job:  # run_callable: what the audited function returns, to the protocol's limit
            return MAX_MESSAGE_BYTES
        if "exec" in job:
            cap += _REPLY_PER_TEST_JOB
        elif "texts" in job:
            texts = job["texts"]
            cap += len(texts) * (64 + dim * _REPLY_PER_FLOAT) if isinstance(texts, list) else 0
        else:
            tokens = job.get("max_new_tokens")
            cap += _REPLY_PER_TOKEN * tokens if type(tokens) is int and tokens > 0 else 0
        cap += _REPLY_PER_JOB
    return min(cap, MAX_MESSAGE_BYTES)


def _receive(conn: Connection, cap: int) -> dict[str, Any]:
    try:
        data = conn.recv_bytes(cap)
    except OSError as exc:
        if exc.args == ("bad message length",):
            raise ValueError(f"a reply over its cap of {cap} bytes") from None
        raise
    if not depth_ok(data, _MAX_DEPTH):
        raise ValueError(f"a reply nested deeper than {_MAX_DEPTH}")
    message = json.loads(data)
    if not isinstance(message, dict):
        raise ValueError("a worker message must be a JSON object")
    return message


# json.loads recurses in C once per level of nesting, up to the recursion limit, which py_ecc
# (under eth-account) raises to 100000 in the agent: deep enough nesting overflows the thread's
# stack and kills the agent. No reply nests past 6 levels.
_MAX_DEPTH = 16


def _answers(reply: dict[str, Any], seq: int) -> bool:
    return type(reply.get("seq")) is int and reply["seq"] == seq


def _results(reply: dict[str, Any], seq: int, n: int) -> dict[int, dict[str, Any]]:
    """The batch's results by job id, from a reply that must answer exactly this batch."""
    if not _answers(reply, seq):
        raise ValueError(f"a reply to another message (seq {str(reply.get('seq'))[:40]}, expected {seq})")
    if reply.get("op") == "crashed":
        raise _WorkerDied(str(reply.get("message", "the worker failed"))[:2000])
    results = reply.get("results")
    if reply.get("op") != "done" or not isinstance(results, list) or len(results) != n:
        raise ValueError("malformed reply from the worker (not one result per job)")
    by_id: dict[int, dict[str, Any]] = {}
    for result in results:
        if not (
            isinstance(result, dict)
            and type(result.get("id")) is int
            and 0 <= result["id"] < n
            and result["id"] not in by_id
            and (
                isinstance(result.get("ok"), dict)
                or (isinstance(result.get("error"), str) and isinstance(result.get("message"), str))
            )
        ):
            raise ValueError("malformed reply from the worker (a result that is not one)")
        by_id[result["id"]] = result
    return by_id


_MAX_FORWARDED_LINE = 500
# What one worker may put in the agent's log per window; the rest is read, counted and dropped.
_OUTPUT_WINDOW_S = 60.0
_OUTPUT_LINES = 200
_OUTPUT_BYTES = 64 * 1024


def _forward_output(stream) -> None:
    """Log a sandboxed worker's output lines, cut, escaped and within a budget, until it exits."""
    window_ends, lines, size, dropped, dropped_bytes = 0.0, 0, 0, 0, 0

    def report() -> None:
        if dropped:
            log.warning(
                "worker: %d more lines (%d bytes) of output dropped, over its budget of %d lines or %d bytes in %.0fs",
                dropped,
                dropped_bytes,
                _OUTPUT_LINES,
                _OUTPUT_BYTES,
                _OUTPUT_WINDOW_S,
            )

    with stream:
        for raw in iter(lambda: stream.readline(4096), b""):  # bounded: a line without end
            now = time.monotonic()
            if now >= window_ends:
                report()
                window_ends, lines, size, dropped, dropped_bytes = now + _OUTPUT_WINDOW_S, 0, 0, 0, 0
            line = _printable(raw[:_MAX_FORWARDED_LINE].decode("utf-8", "replace").rstrip())
            if not line:
                continue
            if lines >= _OUTPUT_LINES or size + len(line) > _OUTPUT_BYTES:
                dropped, dropped_bytes = dropped + 1, dropped_bytes + len(raw)
                continue
            lines, size = lines + 1, size + len(line)
            log.info("worker: %s", line)
    report()


def _printable(text: str) -> str:
    """`text` with control and other unprintable characters (terminal escapes, carriage
    returns, bidi overrides) written as escapes: no worker line can pass for another."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}" for c in text)
