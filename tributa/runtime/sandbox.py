"""`SandboxedExecutor`: jobs, and code under audit, inside bubblewrap workers.

Every job runs in a serving worker under bubblewrap (`bwrap.py`: new user/pid/net/ipc/uts/cgroup
namespaces as nobody, the worker its pid namespace's only process, read-only binds of Python,
this package and the model folders only, a private size-capped /tmp, a fresh /proc, a cleared
environment, no capabilities) with the seccomp filter of `seccomp.py` (no fork, exec, ptrace,
new namespaces, memfd or socket but AF_UNIX), a Landlock domain, and per-worker memory and pids
cgroups where the host allows (`cgroups.py`). This is the code path agents serve
through (`ServingEngine` with `isolation="bwrap"`) and the oracle re-executes through.

`run_callable(fn, *args)` runs `fn` in a fresh sandboxed worker of its own, under `SandboxLimits`
(memory: address space, and where the host has one a memory cgroup that also counts its tmpfs;
CPU seconds, open files, wall clock), for tests and audits of the sandbox. `fn`
must be importable by reference (a module-level function); its module's folder is bound
read-only so the worker can import it. The result comes back as bytes (if `fn` returned bytes)
or as JSON, never unpickled by the caller.
"""

from __future__ import annotations

import base64
import json
import logging
import pickle
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tributa.catalog import LocalModel
from tributa.errors import TributaError
from tributa.runtime.worker import ModelWorker, WorkerConfig, WorkerCrashed, WorkerError

# torch, transformers and web3 are imported only where jobs run: a run_callable worker imports
# the caller's module, and this one, and should start in a second, not ten.

log = logging.getLogger("tributa.agent.sandbox")

__all__ = ["JobFailed", "JobLimitExceeded", "SandboxError", "SandboxLimits", "SandboxedExecutor", "run_callable"]


class SandboxError(TributaError, RuntimeError):
    """The sandbox could not run the job."""


class JobLimitExceeded(SandboxError):
    """The job hit one of its limits and was stopped; `limit` says which."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit  # "memory", "cpu", "wall" or "open_files"


class JobFailed(SandboxError):
    """The job raised, or its process died; `remote_type` names the exception it raised."""

    def __init__(self, message: str, remote_type: str | None = None) -> None:
        super().__init__(message)
        self.remote_type = remote_type


@dataclass(frozen=True)
class SandboxLimits:
    memory_mb: int = 16384  # address space (RLIMIT_AS); torch maps far more than it touches
    cpu_seconds: int = 600  # RLIMIT_CPU of a run_callable worker
    open_files: int = 256  # RLIMIT_NOFILE of a run_callable worker
    wall_seconds: float = 600.0

    def __post_init__(self) -> None:
        for name in ("memory_mb", "cpu_seconds", "open_files", "wall_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"SandboxLimits.{name} must be a positive number, got {value!r}")


class SandboxedExecutor:
    """A `JobRunner` whose workers run in bubblewrap; also runs audit callables there."""

    isolation = "bwrap"

    def __init__(
        self,
        limits: SandboxLimits = SandboxLimits(),
        preload: Iterable[tuple[LocalModel, list[LocalModel]]] | None = None,
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        from tributa.runtime.engine import ServingEngine

        self.limits = limits
        self.engine = ServingEngine(
            WorkerConfig(
                kind="generate",
                base_dir=None,
                device=device,
                threads=threads,
                isolation="bwrap",
                memory_mb=limits.memory_mb,
                batch_timeout_s=limits.wall_seconds,
            )
        )
        if preload:
            self.engine.preload(preload, progress=log.info)

    def run(
        self, base: LocalModel, adapters: list[LocalModel], input_bytes: bytes, max_new_tokens: int | None = None
    ) -> bytes:
        """`Executor.run` in a bwrap worker (max_new_tokens None: the registry's default)."""
        if max_new_tokens is None:
            return self.engine.run(base, adapters, input_bytes)
        return self.engine.run(base, adapters, input_bytes, max_new_tokens)

    def run_callable(
        self, fn: Callable[..., Any], *args: Any, limits: SandboxLimits | None = None, read_only: Iterable[Path] = ()
    ) -> Any:
        """`fn(*args)` in a fresh worker under this executor's limits unless given others."""
        return run_callable(fn, *args, limits=limits or self.limits, read_only=read_only)

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> SandboxedExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_callable(
    fn: Callable[..., Any], *args: Any, limits: SandboxLimits = SandboxLimits(), read_only: Iterable[Path] = ()
) -> Any:
    """`fn(*args)` in a fresh bwrap worker of its own; `read_only`: folders it may read (model folders)."""
    module = sys.modules.get(getattr(fn, "__module__", ""), None)
    config = WorkerConfig(
        kind="call",
        base_dir=None,
        isolation="bwrap",
        memory_mb=limits.memory_mb,
        batch_timeout_s=limits.wall_seconds,
        max_attempts=1,
        cpu_seconds=limits.cpu_seconds,
        open_files=limits.open_files,
        import_roots=_import_roots(module),
        read_only=tuple(str(p) for p in read_only),
    )
    call = base64.b64encode(pickle.dumps((fn, args))).decode()
    with ModelWorker(config) as worker:
        try:
            reply = worker.run({"call": call})
        except WorkerCrashed as exc:
            raise _limit_or_failure(str(exc), limits, timed_out=exc.timed_out) from None
        except WorkerError as exc:
            raise SandboxError(str(exc)) from None
    if "error" in reply:
        raise _limit_or_failure(reply["message"], limits, reply.get("type"))
    ok = reply["ok"]
    return base64.b64decode(ok["bytes"]) if "bytes" in ok else json.loads(ok["json"])


def _import_roots(module: Any) -> tuple[str, ...]:
    """The folder to put on sys.path inside the sandbox so that `module` imports there: its own
    folder for a top-level module, the folder above its top package for a package module. A
    module under this package's root (tributa.*) needs none: the package is bound already."""
    path = Path(getattr(module, "__file__", "") or "")
    name = getattr(module, "__name__", "")
    if not path.is_file() or name.split(".")[0] == "tributa":
        return ()
    root = path.parent
    for _ in range(name.count(".")):
        root = root.parent
    return (str(root),)


def _limit_or_failure(
    message: str, limits: SandboxLimits, remote_type: str | None = None, timed_out: bool = False
) -> SandboxError:
    if "MemoryError" in message or remote_type == "MemoryError" or "by its memory cgroup" in message:
        return JobLimitExceeded("memory", f"the job hit its memory limit ({limits.memory_mb} MiB): {message}")
    if timed_out:
        return JobLimitExceeded("wall", f"the job ran past its wall-clock limit ({limits.wall_seconds:g}s)")
    if remote_type == "CpuLimitExceeded" or "CpuLimitExceeded" in message or "exit status -24" in message:
        return JobLimitExceeded("cpu", f"the job ran past its CPU limit ({limits.cpu_seconds}s)")
    if remote_type == "OSError" and "Too many open files" in message:
        return JobLimitExceeded("open_files", f"the job hit its open-files limit ({limits.open_files})")
    return JobFailed(message, remote_type)
