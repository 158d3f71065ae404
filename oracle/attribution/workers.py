"""A few threads beside the caller's for the compiled kernels, which release the GIL: the chunk
screen is split over the cores. (Searching spans on one while the output is embedded gained
nothing measurable: torch's own threads hold the cores then.)"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def cores() -> int:
    """Threads worth running at once: the cores this process may use (at most 4)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 1
    return max(1, min(4, usable))


def _executor() -> ThreadPoolExecutor | None:
    global _pool
    if cores() == 1:
        return None
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=cores() - 1, thread_name_prefix="attribution")
        return _pool


def submit(fn: Callable[..., R], *args: Any) -> Future[R]:
    """fn(*args) on a pool thread (in this one, at once, on a single core)."""
    pool = _executor()
    if pool is not None:
        return pool.submit(fn, *args)
    done: Future[R] = Future()
    try:
        done.set_result(fn(*args))
    except BaseException as exc:  # noqa: BLE001 - handed to the caller by result()
        done.set_exception(exc)
    return done


def run_split(jobs: Sequence[T], run: Callable[[T], R]) -> list[R]:
    """run(job) for every job, spread over this thread and the pool's; results in job order."""
    ways = min(cores(), len(jobs))
    if ways <= 1:
        return [run(job) for job in jobs]
    groups = [list(jobs[w::ways]) for w in range(ways)]
    futures = [submit(lambda g=g: [run(job) for job in g]) for g in groups[1:]]
    results = [[run(job) for job in groups[0]]] + [f.result() for f in futures]
    ordered: list[Any] = [None] * len(jobs)
    for w, part in enumerate(results):
        ordered[w::ways] = part
    return ordered
