"""`tributa oracle run`'s first process: it runs the oracle's worker in a child, and starts a new
one when a signal kills it.

A signal is how a process dies of what no Python code can catch: SIGBUS when SQLite's `-shm`
mapping faults (the data dir made immutable between the storage check and the write; see
tributa/writable.py), SIGSEGV in native code, the OOM killer's SIGKILL. The worker keeps every
fact in its database before acting on it (it is kill -9 safe by design), so starting it again
is always sound. A worker that exits by itself (a bad key, a missing deployment) would only do
so again: its exit code is the oracle's. This process holds nothing but the child's pid.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess

log = logging.getLogger("tributa.oracle")

# A worker (or the worker's job API) killed by a signal is started again, at most this many times in this window.
RESTARTS_PER_WINDOW = 5
RESTART_WINDOW_S = 60.0
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def exit_status(code: int | None) -> str:
    """`killed by SIGBUS` or `exit code 1`, for a multiprocessing exit code."""
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def supervise(run: Callable[[], None], what: str = "oracle worker") -> int:
    """Run `run` in a forked child until it ends; start it again when a signal kills it. SIGTERM
    and SIGINT go on to the child, which then stops as usual. Returns the child's exit code."""
    stopping = False
    child: BaseProcess | None = None

    def forward(signum, _frame) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.pid is not None and child.is_alive():
            os.kill(child.pid, signum)

    _prctl(_PR_SET_CHILD_SUBREAPER, 1)  # the worker's own children (the job API) come back to us
    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    restarts: list[float] = []
    try:
        while True:
            child = multiprocessing.get_context("fork").Process(target=_child, args=(run, previous), name=what)
            child.start()
            if stopping and child.pid is not None:  # a stop signal that came while the last one was being replaced
                os.kill(child.pid, signal.SIGTERM)
            child.join()
            code = child.exitcode
            _reap_orphans()  # its job API holds the port until it is gone
            if stopping:  # asked to stop: however the child ended, that was the point
                return 0 if code is None or code < 0 else code
            if code is None or code >= 0:
                return code or 0
            restarts = [t for t in restarts if time.monotonic() - t < RESTART_WINDOW_S]
            if len(restarts) >= RESTARTS_PER_WINDOW:
                log.error(
                    "the %s died (%s), %d times in %.0fs: not starting it again",
                    what,
                    exit_status(code),
                    len(restarts) + 1,
                    RESTART_WINDOW_S,
                )
                return 1
            restarts.append(time.monotonic())
            log.warning("the %s died (%s); starting a new one (it resumes from its database)", what, exit_status(code))
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _prctl(option: int, value: int) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(option, value)
    except (OSError, AttributeError):
        pass  # not Linux: the process group's signals (how the oracle is stopped) still reach all


def _reap_orphans(grace_s: float = 10.0) -> None:
    """Wait for the dead worker's children (given to this subreaper; they got SIGTERM when it
    died) to exit, then SIGKILL what is left after `grace_s`."""
    deadline = time.monotonic() + grace_s
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return  # none left
        if pid:
            continue
        if time.monotonic() > deadline:
            for orphan in _children():
                try:
                    os.kill(orphan, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            deadline = float("inf")
        time.sleep(0.05)


def _children() -> list[int]:
    me = os.getpid()
    try:
        return [int(pid) for pid in open(f"/proc/{me}/task/{me}/children").read().split()]
    except OSError:
        return []


STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _child(run: Callable[[], None], handlers: dict) -> None:
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # die with the supervisor, even by SIGKILL
    # Stop signals wait (blocked, kept pending) until the worker has installed its handlers and
    # calls `accept_stop_signals`: Ctrl-C mid-start-up would otherwise be a KeyboardInterrupt
    # traceback wherever it lands, for what is only a stop.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    for signum, handler in handlers.items():  # not the supervisor's forwarding ones: its own
        signal.signal(signum, handler)  # children (the job API) would inherit those
    run()


def accept_stop_signals() -> None:
    """Deliver the stop signals held back during start-up (a no-op outside a supervised child)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
