"""A worker process inside bubblewrap, started and stopped as one unit with everything in it.

bwrap is started blocked (`--block-fd`): it reports the pid of the sandbox's init (`--info-fd`,
the worker itself under `--as-pid-1`), the agent opens a pidfd on it and puts it in the worker's
cgroups (`cgroups.py`), and only then lets it run. Whatever the sandbox later starts is charged
to those groups. Stopping kills that init through its pidfd, which takes the whole pid namespace
down with it, then whatever the groups still hold, then bwrap: nothing of a sandbox outlives its
worker's teardown, however it treated bwrap. If the agent itself dies, bwrap dies with it
(`--die-with-parent`) and the worker with bwrap (its parent-death signal, which seccomp keeps it
from clearing).
"""

from __future__ import annotations  # noqa: I001

from typing import ClassVar

import heapq
import itertools
import json
import logging
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tributa.runtime import bwrap, landlock, seccomp
from tributa.runtime.cgroups import WorkerCgroup

log = logging.getLogger("tributa.agent.worker")

_INFO_TIMEOUT_S = 60.0
_landlock_checked = False


def pids_max() -> int:
    """Tasks (threads) a worker may have: torch's pools with room to spare, never thousands."""
    return 256 + 2 * (os.cpu_count() or 1)


def scratch_mb(memory_mb: int | None) -> int:
    """The size of a worker's /tmp: a quarter of its memory limit, within bounds."""
    return bwrap.SCRATCH_MB if not memory_mb else max(16, min(bwrap.SCRATCH_MB, memory_mb // 4))


def _warn_once_without_landlock() -> None:
    global _landlock_checked
    if _landlock_checked:
        return
    _landlock_checked = True
    if landlock.abi() is None:
        log.warning(
            "this kernel has no Landlock: a sandboxed worker's ptrace-scoping rests on bwrap --as-pid-1 and seccomp alone"
        )


def _memory_file(data: bytes) -> int:
    """An anonymous file holding `data`, read from its start (bwrap reads the filter from it)."""
    fd = os.memfd_create("tributa-seccomp")
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


class SandboxProcess:
    """bwrap running one worker: `process` is bwrap, `init_pid` the worker in the sandbox."""

    def __init__(
        self, process: subprocess.Popen, init_pid: int | None, pidfd: int | None, cgroup: WorkerCgroup
    ) -> None:
        self.process = process
        self.init_pid = init_pid
        self.cgroup = cgroup
        self.oom_killed = False  # set by release: its memory cgroup's limit killed it
        self._pidfd = pidfd

    @classmethod
    def spawn(
        cls,
        argv: list[str],
        pass_fds: list[int],
        env: dict[str, str],
        read_only: list[Path],
        mounted: list[tuple[Path, str]],
        cuda: bool,
        memory_mb: int | None,
    ) -> SandboxProcess:
        """Start `argv` (a worker_main command line) in a sandbox with its groups; a worker that
        must stand in for a missing pids cgroup is told to cap its threads itself."""
        _warn_once_without_landlock()
        cgroup = WorkerCgroup.create(memory_mb, pids_max())
        if "pids" not in cgroup.limits:
            argv = [*argv, "--max-threads", str(pids_max())]
        info_r, info_w = os.pipe()
        block_r, block_w = os.pipe()
        seccomp_fd = None
        process = None
        try:
            if seccomp.supported():
                seccomp_fd = _memory_file(seccomp.worker_filter(allow_exec=True))
            else:
                log.warning("no seccomp filter for %s: it is written for x86-64", os.uname().machine)
            command = bwrap.command(
                argv,
                read_only,
                env,
                seccomp_fd,
                cuda,
                mounted,
                scratch_mb=scratch_mb(memory_mb),
                info_fd=info_w,
                block_fd=block_r,
            )
            passed = [*pass_fds, info_w, block_r] + ([seccomp_fd] if seccomp_fd is not None else [])
            process = subprocess.Popen(
                command,
                pass_fds=passed,
                env={},
                stdin=subprocess.DEVNULL,
                # Never the agent's own stdout/stderr: through /proc/self/fd the worker could
                # reopen them and read or truncate the agent's log.
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # signals to the agent's group do not reach it
            )
        except BaseException:
            cgroup.remove()
            os.close(info_r)
            os.close(block_w)
            raise
        finally:
            for fd in (info_w, block_r, seccomp_fd):
                if fd is not None:
                    os.close(fd)
        sandbox = cls(process, None, None, cgroup)
        try:
            sandbox._place(_read_info(info_r, _INFO_TIMEOUT_S).get("child-pid"))
            os.write(block_w, b"1")  # run
        except BaseException:
            sandbox.kill()
            process.wait()
            sandbox.release()
            raise
        finally:
            os.close(info_r)
            os.close(block_w)
        return sandbox

    def _place(self, init_pid: object) -> None:
        if not isinstance(init_pid, int) or init_pid <= 1:
            return  # bwrap failed before it made the sandbox: it is exiting, saying why
        try:
            self._pidfd = os.pidfd_open(init_pid)
        except ProcessLookupError:
            return  # the sandbox already failed (a bind it could not make)
        self.init_pid = init_pid
        # Still blocked: nothing in the sandbox has run yet, so everything it starts is charged.
        self.cgroup.add(init_pid)

    def kill(self) -> None:
        """SIGKILL the sandbox's init (its whole pid namespace), what its groups hold, and bwrap."""
        if self._pidfd is not None:
            try:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.cgroup.kill()
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def release(self) -> None:
        """After bwrap is reaped: make sure the sandbox is empty, remove its groups."""
        if self._pidfd is not None:
            try:  # normally reaped already: bwrap waits for its child before it exits
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
            select.select([self._pidfd], [], [], 5.0)  # readable once it has exited
            os.close(self._pidfd)
            self._pidfd = None
        self.oom_killed = self.cgroup.oom_kills() > 0
        self.cgroup.remove()


def _read_info(fd: int, timeout_s: float) -> dict:
    """bwrap's --info-fd JSON, read until bwrap closes it (at once if it failed to start)."""
    data = b""
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError("bubblewrap did not report its sandbox")
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
        if len(data) > 65536:
            raise ValueError("bubblewrap's --info-fd output is too long")
    try:
        info = json.loads(data) if data.strip() else {}
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


class Watchdog:
    """Runs a callback when its deadline passes unless disarmed first; one thread for all."""

    _lock = threading.Condition()
    _heap: ClassVar[list[tuple[float, int, Callable[[], None]]]] = []  # one watchdog for the process
    _armed: ClassVar[set[int]] = set()
    _ids = itertools.count()
    _thread: threading.Thread | None = None

    @classmethod
    def arm(cls, seconds: float, action: Callable[[], None]) -> int:
        with cls._lock:
            token = next(cls._ids)
            heapq.heappush(cls._heap, (time.monotonic() + seconds, token, action))
            cls._armed.add(token)
            if cls._thread is None:
                cls._thread = threading.Thread(target=cls._run, name="worker-watchdog", daemon=True)
                cls._thread.start()
            cls._lock.notify()
            return token

    @classmethod
    def disarm(cls, token: int) -> None:
        with cls._lock:
            cls._armed.discard(token)

    @classmethod
    def _run(cls) -> None:
        while True:
            with cls._lock:
                while cls._heap and cls._heap[0][1] not in cls._armed:
                    heapq.heappop(cls._heap)
                if not cls._heap:
                    cls._lock.wait()
                    continue
                when, token, action = cls._heap[0]
                left = when - time.monotonic()
                if left > 0:
                    cls._lock.wait(left)
                    continue
                heapq.heappop(cls._heap)
                cls._armed.discard(token)
            try:
                action()
            except Exception:
                log.exception("worker watchdog action failed")
