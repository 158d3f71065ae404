"""Per-job sandbox: every job runs in its own forked process, without network, under hard limits.

How a job runs
    agent process --socketpair--> zygote (a fork server: torch, transformers, the runtime and the
    models are imported and loaded once, never run) --fork per job--> job process, which
      1. moves into its own process group and closes every inherited descriptor but its result
         pipe (so it cannot talk to the zygote or reuse the agent's sockets);
      2. unshares the network: a fresh namespace holds only a `lo` that is down, so every address,
         127.0.0.1 included, is unreachable from Python or native code;
      3. drops every capability (bounding set included) and sets no_new_privs, so it can neither
         setns() back into the host's network nor raise its own hard limits;
      4. sets RLIMIT_AS, RLIMIT_CPU, RLIMIT_NOFILE (and RLIMIT_CORE=0);
      5. installs an audit hook that refuses socket connect/bind/send and name lookups, process
         creation, signals and rlimit changes: any attempt fails the job, even one it caught;
      6. runs the job, writes one result to the pipe, closes it and exits.
    The zygote reads the result against a wall-clock deadline and SIGKILLs the job's process group
    on overrun. At start it unshares a pid namespace and becomes its pid 1: jobs live in it, where
    the agent has no pid and the zygote, as init, ignores every signal it has no handler for, so a
    job can signal neither. The agent process talks only to the zygote, and restarts it if it dies.

Isolation modes (`SandboxedExecutor.isolation`, logged when the zygote starts)
    "netns"   pid and network namespaces as root (or with CAP_SYS_ADMIN).
    "userns"  the same inside a user namespace the zygote creates (unprivileged; needs user
              namespaces enabled); the zygote keeps its uid/gid there.
    "audit"   fallback when neither works: no namespaces; the audit hook of step 5 is the only
              network and signal block, and also refuses ctypes loading. It is Python-level
              enforcement: native code that opens sockets itself is NOT stopped.
    `network="auto"` picks the first that works, probed once per zygote start.

Limits (`SandboxLimits`)
    memory_mb: RLIMIT_AS counts address space, and the zygote image (torch + the demo models is
        ~1.1 GB measured) is already mapped into every job process, shared copy-on-write. A total
        cap would mostly measure torch's reservations, so the job process sets its limit to its
        own size at fork plus `memory_mb`: it is what one job may add. Measured: a demo generation
        or embedding job adds under 1 MB; the largest embedding job (256 texts, the 64 KB input
        cap) ~180 MB of address space and ~17 s of CPU on one core.
    cpu_seconds: RLIMIT_CPU: SIGXCPU at the limit, SIGKILL one second later.
    open_files: RLIMIT_NOFILE: the highest descriptor number + 1 the job may hold; 0-2 and the
        result pipe (3) count.
    wall_seconds: enforced by the zygote, which kills the whole process group.

Not isolated: the filesystem (a job can read what the agent's user can read) and the CPU share of
a running job. CUDA does not survive fork, so the zygote runs models on CPU even where a GPU is
present; outputs equal the in-process `Executor` on CPU. Linux only (unshare, pidfd, prctl).
"""

from __future__ import annotations

import ctypes
import errno
import faulthandler
import gc
import json
import logging
import os
import pickle
import resource
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal, NoReturn

from tributa.catalog import LocalModel
from tributa.registry import DEFAULT_MAX_NEW_TOKENS

log = logging.getLogger("tributa.agent.sandbox")

__all__ = [
    "JobFailed",
    "JobLimitExceeded",
    "NetworkMode",
    "SandboxError",
    "SandboxLimits",
    "SandboxViolation",
    "SandboxedExecutor",
]

NetworkMode = Literal["auto", "netns", "userns", "audit"]
_NETWORK_MODES: tuple[str, ...] = ("auto", "netns", "userns", "audit")

# A result larger than this is refused: the zygote must not be made to buffer unbounded data.
MAX_RESULT_BYTES = 64 * 1024 * 1024
_MESSAGE_CHARS = 2000

_CLONE_NEWNET = 0x40000000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_PR_SET_PDEATHSIG = 1
_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_CHILD_FAILED = 70  # exit status of a job process that could not even write its result

# Thread pools do not survive fork (a forked OpenMP pool can hang), so the zygote keeps one thread;
# the offline flags keep transformers from ever trying a hub.
_ZYGOTE_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


# What the zygote (and so every job) inherits of the agent's environment: only what Python, the
# locale and the model caches need. Everything else, the agent's TRIBUTA_* settings (a key, its
# password, RPC credentials) above all, stays out of reach of job code.
_ZYGOTE_ENV_PASSED = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "VIRTUAL_ENV",
                      "HF_HOME", "HF_HUB_CACHE", "TRANSFORMERS_CACHE", "TORCH_HOME", "XDG_CACHE_HOME",
                      "TRIBUTA_CACHE_DIR")


def zygote_environment(parent: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """The zygote's environment: the allowlisted variables of `parent` plus the zygote's flags."""
    env = {name: parent[name] for name in _ZYGOTE_ENV_PASSED if name in parent}
    env.update(_ZYGOTE_ENV)
    return env


class SandboxError(RuntimeError):
    """The sandbox could not run the job (fork server down, sandbox setup failed)."""


class JobLimitExceeded(SandboxError):
    """The job hit one of its limits and was stopped; `limit` says which."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit  # "memory", "cpu", "wall", "open_files" or "output"


class SandboxViolation(SandboxError):
    """The job tried something the sandbox forbids; `operation` says what."""

    def __init__(self, kind: str, operation: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind  # "network", "process", "signal", "limits" or "ctypes"
        self.operation = operation


class JobFailed(SandboxError):
    """The job raised an unexpected exception or its process died without a result."""

    def __init__(self, message: str, remote_type: str | None = None) -> None:
        super().__init__(message)
        self.remote_type = remote_type


@dataclass(frozen=True)
class SandboxLimits:
    """Per-job limits. Defaults fit the demo models with wide margins (see the module docstring)."""

    memory_mb: int = 1024  # address space a job may add to the preloaded zygote image
    cpu_seconds: int = 60  # the largest embedding job (64 KB of input) took ~17 s of one core
    open_files: int = 64  # inference opens no files; imports open one at a time
    wall_seconds: float = 120.0  # CPU limit plus room for a loaded machine

    def __post_init__(self) -> None:
        for name, low in (("memory_mb", 16), ("cpu_seconds", 1), ("open_files", 8)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"SandboxLimits.{name} must be an integer >= {low}, got {value!r}")
        wall = self.wall_seconds
        if isinstance(wall, bool) or not isinstance(wall, (int, float)) or not wall > 0:
            raise ValueError(f"SandboxLimits.wall_seconds must be a number > 0, got {wall!r}")


# --------------------------------------------------------------------------------------------
# The agent's side
# --------------------------------------------------------------------------------------------


@dataclass
class _ZygoteHandle:
    proc: subprocess.Popen[bytes]
    conn: Connection
    started: float
    isolation: str | None = None

    def stop(self, timeout: float = 5.0) -> None:
        self.conn.close()  # the zygote exits when its end reads EOF
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # its job process dies with it (PR_SET_PDEATHSIG)
            self.proc.wait()


class SandboxedExecutor:
    """Drop-in for `tributa.runtime.executor.Executor` that runs each job in a sandboxed process.

    `run()` gives the same bytes as `Executor.run()` and raises JobInputError / JobSpecError /
    JobError as it would; sandbox outcomes raise JobLimitExceeded, SandboxViolation, JobFailed or
    SandboxError (all RuntimeError). Jobs run one at a time per executor.

    The zygote starts at construction (importing torch takes seconds) and is awaited on first use.
    `preload` lists (base, adapters) the zygote loads at start; others load on their first job.
    `import_runtime=False` starts a zygote without torch (for `run_callable` only, or to defer it).
    """

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        network: NetworkMode = "auto",
        preload: Sequence[tuple[LocalModel, Sequence[LocalModel]]] = (),
        import_runtime: bool = True,
        startup_timeout: float = 600.0,
    ) -> None:
        if network not in _NETWORK_MODES:
            raise ValueError(f"network must be one of {', '.join(_NETWORK_MODES)}, got {network!r}")
        self.limits = limits or SandboxLimits()
        self.network: NetworkMode = network
        self._preload = [(base, list(adapters)) for base, adapters in preload]
        self._import_runtime = import_runtime
        self._startup_timeout = startup_timeout
        self._lock = threading.Lock()
        self._zygote: _ZygoteHandle | None = None
        self._closed = False
        with self._lock:
            self._zygote = self._spawn()

    @property
    def isolation(self) -> str:
        """The isolation in force: "netns", "userns" or "audit" (waits for the zygote to start)."""
        with self._lock:
            isolation = self._ready().isolation
        assert isolation is not None
        return isolation

    @property
    def zygote_pid(self) -> int | None:
        """Pid of the zygote process this executor started; None after close(). (With namespaces
        the fork server proper is its only child, pid 1 of the jobs' pid namespace.)"""
        zygote = self._zygote
        return zygote.proc.pid if zygote is not None else None

    def run(
        self, base: LocalModel, adapters: list[LocalModel], input_bytes: bytes, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    ) -> bytes:
        """Run one job in the sandbox; the same output bytes as `Executor.run`.

        A private job arrives here already opened by the agent: no key ever enters the sandbox.
        """
        reply = self._request(
            {"op": "job", "base": base, "adapters": list(adapters), "input": bytes(input_bytes), "max_new_tokens": max_new_tokens},
            self.limits,
        )
        return reply["body"]

    def run_callable(self, fn: Callable[..., Any], *args: Any, limits: SandboxLimits | None = None) -> Any:
        """Run `fn(*args)` in a job process, through the same sandbox code as `run()`.

        For tests and audits of the sandbox. `fn` and `args` must be picklable (a module-level
        function); the result comes back as bytes if `fn` returned bytes, else as JSON, never
        pickle, because the job process is untrusted.
        """
        payload = pickle.dumps((fn, args))
        reply = self._request({"op": "call", "payload": payload}, limits or self.limits)
        return reply["body"] if reply["body_kind"] == "bytes" else json.loads(reply["body"])

    def close(self) -> None:
        """Stop the zygote; later calls raise SandboxError."""
        with self._lock:
            self._closed = True
            if self._zygote is not None:
                self._zygote.stop()
                self._zygote = None

    def __enter__(self) -> SandboxedExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- zygote lifecycle (callers hold self._lock) --

    def _spawn(self) -> _ZygoteHandle:
        ours, theirs = socket.socketpair()
        env = zygote_environment(os.environ)
        # The zygote (and the job processes that unpickle run_callable functions) must import
        # whatever this process can.
        env["PYTHONPATH"] = os.pathsep.join(p for p in [os.getcwd(), *sys.path] if p)
        proc = subprocess.Popen(
            [sys.executable, "-c", "import sys, tributa.runtime.sandbox as s; s._zygote_main(int(sys.argv[1]))",
             str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=sys.stderr.fileno(),  # library prints land in the agent's log, not a pipe
            env=env,
            start_new_session=True,  # a Ctrl-C at the agent's terminal must not kill a job midway
        )
        theirs.close()
        conn = Connection(ours.detach())
        conn.send({"network": self.network, "import_runtime": self._import_runtime, "preload": self._preload})
        return _ZygoteHandle(proc, conn, time.monotonic())

    def _ready(self) -> _ZygoteHandle:
        if self._closed:
            raise SandboxError("this SandboxedExecutor is closed; create a new one")
        zygote = self._zygote
        if zygote is not None and zygote.isolation is None and zygote.proc.poll() is None:
            self._await_ready(zygote)
        elif zygote is None or zygote.proc.poll() is not None:
            if zygote is not None:
                log.warning("sandbox zygote (pid %d) exited with status %s; restarting it",
                            zygote.proc.pid, zygote.proc.returncode)
                self._discard(zygote)
            zygote = self._zygote = self._spawn()
            self._await_ready(zygote)
        assert zygote is not None
        return zygote

    def _await_ready(self, zygote: _ZygoteHandle) -> None:
        try:
            if not zygote.conn.poll(self._startup_timeout):
                self._discard(zygote)
                raise SandboxError(
                    f"the sandbox zygote did not start within {self._startup_timeout:g} s; raise "
                    "startup_timeout on a slow machine"
                )
            message = zygote.conn.recv()
        except (EOFError, OSError) as exc:
            status = zygote.proc.wait()
            self._discard(zygote)
            raise SandboxError(
                f"the sandbox zygote exited with status {status} while starting ({exc!r}); its "
                "traceback is in the agent's stderr"
            ) from None
        if not message.get("ok"):
            self._discard(zygote)
            raise SandboxError(message["message"])
        zygote.isolation = message["isolation"]
        seconds = time.monotonic() - zygote.started
        if zygote.isolation == "audit":
            log.warning(
                "sandbox zygote pid=%d ready in %.1fs: isolation=audit (%s); the network is blocked "
                "by Python audit hooks only, which native code can bypass",
                zygote.proc.pid, seconds, message["reason"],
            )
        else:
            log.info("sandbox zygote pid=%d ready in %.1fs: isolation=%s",
                     zygote.proc.pid, seconds, zygote.isolation)

    def _discard(self, zygote: _ZygoteHandle) -> None:
        zygote.stop(timeout=1.0)
        if self._zygote is zygote:
            self._zygote = None

    def _request(self, message: dict[str, Any], limits: SandboxLimits) -> dict[str, Any]:
        message = dict(message, limits=limits)
        with self._lock:
            zygote = self._ready()
            try:
                zygote.conn.send(message)
            except OSError:
                # It died between jobs; nothing ran yet, so one retry on a fresh zygote is safe.
                self._discard(zygote)
                zygote = self._ready()
                zygote.conn.send(message)
            # The zygote enforces the wall clock itself; this bound only catches a wedged zygote
            # (a model load that hangs), with the startup timeout as room for loading models.
            timeout = limits.wall_seconds + self._startup_timeout
            try:
                if not zygote.conn.poll(timeout):
                    self._discard(zygote)
                    raise SandboxError(
                        f"the sandbox zygote did not answer within {timeout:g} s; it was killed "
                        "and restarts for the next job"
                    )
                reply = zygote.conn.recv()
            except (EOFError, OSError):
                status = zygote.proc.wait()
                self._discard(zygote)
                # No automatic retry: a job that kills the zygote would otherwise do it again.
                raise SandboxError(
                    f"the sandbox zygote exited with status {status} during the job; it restarts "
                    "for the next job, so retry this one"
                ) from None
            isolation = zygote.isolation or "?"
        log.debug("sandbox job: %s", {k: v for k, v in reply.items() if k != "body"})
        if reply["ok"]:
            return reply
        _raise_for(reply, limits, isolation)
        raise AssertionError("unreachable")


def _raise_for(reply: dict[str, Any], limits: SandboxLimits, isolation: str) -> NoReturn:
    """Turn a failed reply into the exception the caller expects."""
    error = reply["error"]
    detail = reply.get("message", "")
    if error in ("input", "spec", "job"):
        # Imported here: the runtime pulls in torch, which a callable-only caller may not need.
        from tributa.runtime.jobs import JobError, JobInputError, JobSpecError

        raise {"input": JobInputError, "spec": JobSpecError, "job": JobError}[error](detail)
    if error == "limit":
        limit = reply["limit"]
        texts = {
            "memory": f"the job exceeded its memory limit ({limits.memory_mb} MB beyond the "
            f"preloaded models): {detail}; raise SandboxLimits.memory_mb if the model needs more",
            "cpu": f"the job exceeded its CPU-time limit of {limits.cpu_seconds} s and was killed; "
            "raise SandboxLimits.cpu_seconds for longer jobs",
            "wall": f"the job exceeded its wall-clock limit of {limits.wall_seconds:g} s and was "
            "killed; raise SandboxLimits.wall_seconds for longer jobs",
            "open_files": f"the job exceeded its open-files limit of {limits.open_files}: {detail}; "
            "raise SandboxLimits.open_files if the model must open more files",
            "output": f"the job's result exceeded {MAX_RESULT_BYTES} bytes and was discarded",
        }
        raise JobLimitExceeded(limit, texts[limit])
    if error == "violation":
        kind = reply["kind"]
        what = {
            "network": "use the network",
            "process": "start a process",
            "signal": "send a signal",
            "limits": "change its resource limits",
            "ctypes": "load native code through ctypes",
        }[kind]
        raise SandboxViolation(
            kind, detail,
            f"the job tried to {what} ({detail}), which the sandbox (isolation={isolation}) "
            "forbids; jobs get everything they need from their input and model folders",
        )
    if error == "exception":
        raise JobFailed(f"{reply['type']}: {detail}", remote_type=reply["type"])
    if error == "died":
        usage = f"cpu {reply['cpu_s']:.2f} s, peak RSS {reply['max_rss_mb']:.0f} MB"
        if "signal" in reply:
            raise JobFailed(
                f"the job process was killed by {reply['signal']} without a result ({usage}): a "
                "crash in native code, or an allocation refused under the memory limit of "
                f"{limits.memory_mb} MB beyond the preloaded models"
            )
        raise JobFailed(
            f"the job process exited with status {reply['exit_status']} without a result "
            f"({usage}): jobs must return, not exit or close their result pipe"
        )
    raise SandboxError(f"the sandbox could not run the job: {detail}")


# --------------------------------------------------------------------------------------------
# The zygote (fork server)
# --------------------------------------------------------------------------------------------


def _zygote_main(fd: int) -> None:
    """Entry point of the zygote process: configure, report ready, then serve until EOF."""
    conn = Connection(fd)
    config = conn.recv()
    try:
        # First, while single-threaded (CLONE_NEWUSER requires it) and before torch is imported.
        pid_namespace, failures = _enter_pid_namespace(config["network"])
        if pid_namespace:
            _become_namespace_init(conn)
        zygote = _Zygote(
            config["network"], pid_namespace, failures, config["import_runtime"], config["preload"]
        )
    except _SetupError as exc:
        conn.send({"ok": False, "message": str(exc)})
        return
    conn.send({"ok": True, "isolation": zygote.isolation, "reason": zygote.reason})
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the agent closed us or died
        try:
            reply = zygote.handle(message)
        except Exception as exc:  # a zygote bug must fail one job, not the fork server
            reply = {"ok": False, "error": "zygote", "message": f"{type(exc).__name__}: {exc}"}
        conn.send(reply)


class _SetupError(Exception):
    pass


def _enter_pid_namespace(network: str) -> tuple[str | None, list[str]]:
    """unshare a pid namespace (in a user namespace when not root): ("netns" | "userns" | None, why
    not). Jobs, forked later, live in it; this process's next child becomes its pid 1."""
    if network == "audit":
        return None, ["audit requested"]
    libc = ctypes.CDLL(None, use_errno=True)
    candidates = {"netns": _CLONE_NEWPID, "userns": _CLONE_NEWUSER | _CLONE_NEWPID}
    failures = []
    for mode, flags in candidates.items():
        if network not in ("auto", mode):
            continue
        if libc.unshare(flags) == 0:
            if mode == "userns":
                _map_own_ids()
            return mode, failures
        failures.append(f"{mode}: unshare: {os.strerror(ctypes.get_errno())}")
    if network != "auto":
        raise _SetupError(_mode_unavailable(network, failures))
    return None, failures


def _mode_unavailable(network: str, failures: list[str]) -> str:
    return (
        f"network={network!r} was requested but does not work here ({'; '.join(failures)}); run "
        "the agent as root, enable user namespaces (sysctl user.max_user_namespaces), or pass "
        "network='auto' to fall back to audit hooks"
    )


def _map_own_ids() -> None:
    # Keep our uid/gid inside the user namespace (else they read as 65534 to the libraries).
    # Best effort: the kernel refuses to map uid 0 from inside (only root would try, in tests).
    uid, gid = os.geteuid(), os.getegid()
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        try:
            Path("/proc/self", name).write_text(text)
        except PermissionError:
            pass


def _become_namespace_init(conn: Connection) -> None:
    """Fork the zygote proper as pid 1 of the new pid namespace; this process only waits for it.

    As that namespace's init, the zygote cannot be killed from inside it (the kernel drops signals
    to an init that has no handler for them), and the agent has no pid there at all.
    """
    pid = os.fork()
    if pid == 0:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        return
    conn.close()  # only the zygote talks to the agent, so its death reads as EOF there
    _, status = os.waitpid(pid, 0)
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


class _Zygote:
    def __init__(
        self,
        network: str,
        pid_namespace: str | None,
        failures: list[str],
        import_runtime: bool,
        preload: list[tuple[LocalModel, list[LocalModel]]],
    ) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.last_cap = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
        # Only as init of our own pid namespace may we SIGKILL everything we see after a job.
        self.namespace_init = pid_namespace is not None and os.getpid() == 1
        # Jobs may signal handled signals to the init; Python handles SIGINT, nothing else.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        faulthandler.disable()
        self.isolation, self.reason = self._choose_isolation(network, pid_namespace, failures)
        self._registry: Any = None
        self._executor: Any = None
        if import_runtime or preload:
            self._runtime()
        for base, adapters in preload:
            self._warm(base, adapters)

    def _choose_isolation(
        self, network: str, pid_namespace: str | None, failures: list[str]
    ) -> tuple[str, str]:
        if pid_namespace is not None:
            problem = self._probe()
            if problem is None:
                return pid_namespace, "probed"
            failures = [*failures, f"{pid_namespace}: {problem}"]
            if network != "auto":
                raise _SetupError(_mode_unavailable(network, failures))
        return "audit", "; ".join(failures)

    def _probe(self) -> str | None:
        """Try a job's namespace steps in a throwaway child: None if they work, else why not."""
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(r)
                _enter_namespace(self.libc, "netns")
                _drop_privileges(self.libc, self.last_cap)
                code = 0
            except OSError as exc:
                os.write(w, str(exc).encode()[:500])
                code = 1
            except BaseException:
                code = _CHILD_FAILED
            os._exit(code)
        os.close(w)
        with os.fdopen(r, "rb") as fh:
            why = fh.read().decode(errors="replace")
        _, status = os.waitpid(pid, 0)
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            return None
        return why or f"probe exited with status {status}"

    def _runtime(self) -> Any:
        if self._registry is None:
            import torch

            # Before any torch op: with one thread no OpenMP pool exists to be broken by fork.
            torch.set_num_threads(1)
            try:
                torch.set_num_interop_threads(1)
            except RuntimeError:
                pass  # already fixed by an earlier torch user in this process; intra-op is what matters
            import tributa.crypto  # noqa: F401 - loaded here, so job processes never load native code
            from tributa.runtime.executor import Executor
            from tributa.runtime.jobs import RunnerRegistry

            # CPU even where CUDA exists: a CUDA context does not survive fork.
            self._registry = RunnerRegistry(device="cpu")
            self._executor = Executor(self._registry)
        return self._registry

    def _warm(self, base: LocalModel, adapters: list[LocalModel]) -> None:
        """Load the job's models here, once, so every forked job shares them (no inference)."""
        registry = self._runtime()
        try:
            if base.kind == "generate":
                runner = registry.generation(Path(base.path))
                for adapter in adapters:  # named by CID, as Executor asks for them
                    runner.load_adapter(adapter.cid, Path(adapter.path))
            elif base.kind == "embed":
                registry.embedding(Path(base.path))
        except Exception as exc:
            # The job process repeats the load and reports the error with the runtime's message.
            log.warning("sandbox zygote: preloading %s failed: %s", base.path, exc)

    def handle(self, message: dict[str, Any]) -> dict[str, Any]:
        limits: SandboxLimits = message["limits"]
        if message["op"] == "job":
            base, adapters, input_bytes = message["base"], message["adapters"], message["input"]
            limit = message.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
            self._warm(base, adapters)
            executor = self._executor

            def work() -> tuple[str, bytes]:
                return "bytes", executor.run(base, adapters, input_bytes, limit)
        elif message["op"] == "call":
            payload: bytes = message["payload"]

            def work() -> tuple[str, bytes]:
                return _call(payload)
        else:
            return {"ok": False, "error": "zygote", "message": f"unknown op {message['op']!r}"}
        return self._fork(work, limits)

    def _fork(self, work: Callable[[], tuple[str, bytes]], limits: SandboxLimits) -> dict[str, Any]:
        self._reap()
        r, w = os.pipe()
        started = time.perf_counter()
        zygote_pid = os.getpid()
        gc.freeze()  # the job's collector then leaves the zygote's objects (and their pages) alone
        pid = os.fork()
        if pid == 0:
            os.close(r)
            _job_process(work, w, limits, self.isolation, self.libc, self.last_cap, zygote_pid)
        gc.unfreeze()  # frozen objects are never collected; the zygote must keep collecting
        os.close(w)
        try:
            os.setpgid(pid, pid)  # also done in the child: whichever runs first wins the race
        except OSError:
            pass
        data, state = _collect(pid, r, limits.wall_seconds)
        # A timed-out job, or anything it forked; the unreaped leader still pins its pgid.
        _kill_group(pid)
        header = _parse_result(data) if state in ("closed", "exited") else None
        if header is not None:
            reply = header  # reaped before the next job: no need to wait for its teardown
        else:
            _, status, usage = os.wait4(pid, 0)
            reply = _verdict(state, status, usage, limits)
            reply.update(cpu_s=usage.ru_utime + usage.ru_stime, max_rss_mb=usage.ru_maxrss / 1024)
        reply["sandbox_ms"] = (time.perf_counter() - started) * 1e3
        return reply

    def _reap(self) -> None:
        """Collect finished jobs; as namespace init, also orphans and any process left behind."""
        if self.namespace_init:
            try:
                os.kill(-1, signal.SIGKILL)  # as pid 1 of our namespace: everything in it but us
            except ProcessLookupError:
                pass  # nothing left behind
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return


def _call(payload: bytes) -> tuple[str, bytes]:
    fn, args = pickle.loads(payload)
    result = fn(*args)
    if isinstance(result, (bytes, bytearray)):
        return "bytes", bytes(result)
    try:
        return "json", json.dumps(result, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"run_callable: {getattr(fn, '__name__', fn)!r} returned {type(result).__name__}, "
            "which is not JSON; return bytes or JSON-compatible values"
        ) from exc


def _collect(pid: int, r: int, wall_seconds: float) -> tuple[bytes, str]:
    """Read the job's result. State: "closed" (pipe closed after a whole result), "exited",
    "wall" or "output" (the job must be killed)."""
    deadline = time.monotonic() + wall_seconds
    pidfd = os.pidfd_open(pid)
    chunks: list[bytes] = []
    size = 0
    reading = True

    def take(chunk: bytes) -> bool:
        nonlocal size
        size += len(chunk)
        chunks.append(chunk)
        return size <= MAX_RESULT_BYTES

    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return b"".join(chunks), "wall"
            ready, _, _ = select.select([pidfd, r] if reading else [pidfd], [], [], remaining)
            if r in ready:
                chunk = os.read(r, 1 << 16)
                if not chunk:
                    reading = False
                    if _parse_result(b"".join(chunks)) is not None:
                        return b"".join(chunks), "closed"
                    # Closed without a result: wait for the exit status to say why.
                elif not take(chunk):
                    return b"", "output"
            if pidfd in ready:
                # Gone: what it wrote is buffered. Drain without waiting for EOF, since a process
                # it forked may still hold the pipe open.
                while reading and select.select([r], [], [], 0)[0]:
                    chunk = os.read(r, 1 << 16)
                    if not chunk:
                        break
                    if not take(chunk):
                        return b"", "output"
                return b"".join(chunks), "exited"
    finally:
        os.close(pidfd)
        os.close(r)


def _parse_result(data: bytes) -> dict[str, Any] | None:
    """A job's result (JSON header line + body) as a reply, or None if there is no whole one."""
    head, sep, body = data.partition(b"\n")
    if not sep:
        return None
    try:
        header = json.loads(head)
    except ValueError:
        return None
    if not isinstance(header, dict) or not isinstance(header.get("ok"), bool):
        return None
    header["body"] = body
    return header


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the job and everything it started are gone
    except PermissionError:
        os.kill(pid, signal.SIGKILL)  # the child had not yet made its own group


def _verdict(state: str, status: int, usage: Any, limits: SandboxLimits) -> dict[str, Any]:
    """Why a job has no result, from how it ended."""
    if state in ("wall", "output"):
        return {"ok": False, "error": "limit", "limit": state}
    cpu = usage.ru_utime + usage.ru_stime
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        # SIGKILL we did not send is RLIMIT_CPU's hard limit (a job that ignored SIGXCPU) when the
        # job used about that much: the kernel checks tick-sampled time, which can run ~10% ahead
        # of rusage's precise time on a busy machine. Otherwise the OOM killer or an operator.
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu >= 0.8 * limits.cpu_seconds):
            return {"ok": False, "error": "limit", "limit": "cpu"}
        return {"ok": False, "error": "died", "signal": signal.Signals(sig).name}
    return {"ok": False, "error": "died", "exit_status": os.WEXITSTATUS(status)}


# --------------------------------------------------------------------------------------------
# The job process (a fork of the zygote); everything below runs there
# --------------------------------------------------------------------------------------------


def _job_process(
    work: Callable[[], tuple[str, bytes]],
    w: int,
    limits: SandboxLimits,
    isolation: str,
    libc: ctypes.CDLL,
    last_cap: int,
    zygote_pid: int,
) -> NoReturn:
    code = _CHILD_FAILED
    try:
        os.setpgid(0, 0)
        fd = _keep_only_result_fd(w)
        try:
            _enter_namespace(libc, isolation)
            _drop_privileges(libc, last_cap)
            _die_with_parent(libc, zygote_pid)  # after capset, which clears the setting
            _apply_limits(limits)
        except OSError as exc:
            header: dict[str, Any] = {
                "ok": False, "error": "setup", "message": f"sandbox setup failed: {exc}"
            }
            body = b""
        else:
            guard = _Guard(block_ctypes=isolation == "audit")
            sys.addaudithook(guard)
            header, body = _run_guarded(work, guard)
        _write_all(fd, json.dumps(header).encode() + b"\n" + body)
        os.close(fd)  # the zygote answers now, not after this address space is torn down
        code = 0
    except BaseException:
        code = _CHILD_FAILED
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass  # a job that closed or broke its stdio must still exit
        os._exit(code)


def _die_with_parent(libc: ctypes.CDLL, parent: int) -> None:
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the zygote died before the signal was armed
        os._exit(_CHILD_FAILED)


def _keep_only_result_fd(w: int) -> int:
    """Close every inherited descriptor except stdio and the result pipe, moved to fd 3."""
    if w != 3:
        os.dup2(w, 3)
        os.close(w)
    os.closerange(4, max(os.sysconf("SC_OPEN_MAX"), 4))  # no descriptor is open above the soft limit
    return 3


def _enter_namespace(libc: ctypes.CDLL, isolation: str) -> None:
    # In "userns" mode the zygote already lives in its own user namespace, which owns the new one.
    if isolation == "audit":
        return
    if libc.unshare(_CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")


def _drop_privileges(libc: ctypes.CDLL, last_cap: int) -> None:
    """No capabilities now or after exec: no setns() back out, no raising hard limits."""
    for cap in range(last_cap + 1):
        libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)  # EPERM without CAP_SETPCAP: nothing to drop then
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable x 2 words, all zero
    if libc.capset(ctypes.byref(header), ctypes.byref(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(err)}")


def _apply_limits(limits: SandboxLimits) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # SIGXCPU at the limit; SIGKILL a second later if the job handles or ignores SIGXCPU.
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
    vm_bytes = _vm_size_bytes()
    cap = vm_bytes + limits.memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def _vm_size_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise OSError(errno.ENOENT, "no VmSize in /proc/self/status")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class _Guard:
    """Audit hook of the job process: refuses and records forbidden operations."""

    _KINDS = {
        **dict.fromkeys(
            ("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
             "socket.gethostbyname", "socket.gethostbyaddr", "socket.getnameinfo"),
            "network",
        ),
        **dict.fromkeys(
            ("os.system", "os.exec", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn",
             "subprocess.Popen", "pty.spawn"),
            "process",
        ),
        **dict.fromkeys(("os.kill", "os.killpg", "signal.pthread_kill"), "signal"),
        **dict.fromkeys(("resource.setrlimit", "resource.prlimit"), "limits"),
    }
    # Without a namespace, ctypes would reach libc's connect() past the hook.
    _CTYPES = dict.fromkeys(("ctypes.dlopen", "ctypes.dlsym", "ctypes.dlsym/handle"), "ctypes")

    def __init__(self, block_ctypes: bool) -> None:
        self.kinds = {**self._KINDS, **(self._CTYPES if block_ctypes else {})}
        self.violations: list[tuple[str, str]] = []

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        kind = self.kinds.get(event)
        if kind is None:
            return
        operation = f"{event}{_describe(event, args)}"[:300]
        self.violations.append((kind, operation))
        raise PermissionError(errno.EPERM, f"blocked by the job sandbox: {operation}")


def _describe(event: str, args: tuple[Any, ...]) -> str:
    if event in ("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg") and len(args) > 1:
        return f"({args[1]!r})"
    if event == "socket.getaddrinfo":
        return f"({args[0]!r}, {args[1]!r})"
    if event == "subprocess.Popen" and len(args) > 1:
        return f"({args[1]!r})"
    return f"({', '.join(repr(a) for a in args[:2])})"


def _run_guarded(work: Callable[[], tuple[str, bytes]], guard: _Guard) -> tuple[dict[str, Any], bytes]:
    try:
        body_kind, body = work()
    except BaseException as exc:  # the job's own SystemExit too: it must not skip the report
        header = _classify(exc)
        body = b""
    else:
        header = {"ok": True, "body_kind": body_kind}
    if guard.violations:  # even if the job caught the error and finished anyway
        kind, operation = guard.violations[0]
        return {"ok": False, "error": "violation", "kind": kind, "message": operation}, b""
    return header, body


_NETWORK_ERRNOS = (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN)


def _classify(exc: BaseException) -> dict[str, Any]:
    """A job's exception -> the header that names its cause."""
    message = f"{type(exc).__name__}: {exc}"[:_MESSAGE_CHARS]
    for link in _chain(exc):
        text = str(link)
        if isinstance(link, MemoryError) or (
            isinstance(link, RuntimeError) and "can't allocate memory" in text
        ):
            return {"ok": False, "error": "limit", "limit": "memory", "message": message}
        if isinstance(link, OSError) and link.errno in (errno.EMFILE, errno.ENFILE):
            return {"ok": False, "error": "limit", "limit": "open_files", "message": message}
        if isinstance(link, OSError) and link.errno in _NETWORK_ERRNOS:
            # Native code got past the hook and hit the empty namespace.
            return {"ok": False, "error": "violation", "kind": "network", "message": message}
    names = {f"{c.__module__}.{c.__qualname__}" for c in type(exc).__mro__}
    for name, error in (
        ("tributa.runtime.jobs.JobInputError", "input"),
        ("tributa.runtime.jobs.JobSpecError", "spec"),
        ("tributa.runtime.jobs.JobError", "job"),
    ):
        if name in names:
            return {"ok": False, "error": error, "message": str(exc)[:_MESSAGE_CHARS]}
    return {"ok": False, "error": "exception", "type": type(exc).__name__,
            "message": str(exc)[:_MESSAGE_CHARS]}


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and link not in seen and len(seen) < 16:
        seen.append(link)
        link = link.__cause__ or link.__context__
    return seen
