"""A memory and a pids cgroup per sandboxed worker, where the host lets the agent make them.

RLIMIT_AS caps address space only: pages a job writes into a tmpfs or shared memory are never
mapped, and threads are host tasks that no rlimit counts for an agent running as root (the
kernel exempts uid 0 from RLIMIT_NPROC). A memory cgroup charges tmpfs, shmem and page cache, and
a pids cgroup counts threads. Each worker's groups are made under the agent's own group of each
controller (cgroup v2 where it holds the controller, else v1), are given the whole sandbox before
it runs anything (`sandbox_process`), and are removed when the worker is gone.

Where a controller cannot be used (not in the kernel, not mounted, not writable, not delegated),
workers run without it and one warning says what is missing and what stands in for it.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("tributa.agent.cgroups")

CONTROLLERS = ("memory", "pids")
_PREFIX = "tributa-worker-"
_counter = itertools.count(1)
_state_lock = threading.Lock()
_bases: dict[str, tuple[int, Path]] | None = None  # controller -> (cgroup version, the agent's own group)
_missing: dict[str, str] = {}  # controller -> why it cannot be used
_warned = False


def kernel_has(controller: str) -> bool:
    """Whether this kernel has `controller` at all (compiled in and not disabled at boot)."""
    try:
        lines = Path("/proc/cgroups").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(line.split()[0] == controller and line.split()[-1] == "1" for line in lines if line.strip())


def _mountinfo() -> list[tuple[str, str, str, set[str]]]:
    """(mount point, root inside the hierarchy, fs type, super options) of each cgroup mount."""
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if tail and tail[0] in ("cgroup", "cgroup2"):
            mounts.append(
                (
                    _unescape(fields[4]),
                    _unescape(fields[3]),
                    tail[0],
                    set(tail[2].split(",")) if len(tail) > 2 else set(),
                )
            )
    return mounts


def _unescape(path: str) -> str:
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def _own_group(mount: str, root: str, path: str) -> Path | None:
    """This process's group `path` (from /proc/self/cgroup) as a directory under `mount`."""
    relative = os.path.relpath(path, root)
    if relative.startswith(".."):
        return None
    return Path(mount) / ("" if relative == "." else relative)


def _locate() -> tuple[dict[str, tuple[int, Path]], dict[str, str]]:
    found: dict[str, tuple[int, Path]] = {}
    missing: dict[str, str] = {}
    own_v1: dict[str, str] = {}
    own_v2: str | None = None
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if names == "":
            own_v2 = path
        for name in names.split(","):
            own_v1[name] = path
    mounts = _mountinfo()
    for controller in CONTROLLERS:
        if not kernel_has(controller):
            missing[controller] = "not in this kernel"
            continue
        why = "not mounted"
        for mount, root, fstype, options in mounts:
            if fstype == "cgroup2" and own_v2 is not None:
                group = _own_group(mount, root, own_v2)
                if group is None:
                    continue
                unusable = _usable_v2(group, controller)
                if unusable is None:
                    found[controller] = (2, group)
                    break
                why = unusable
            elif fstype == "cgroup" and controller in options and controller in own_v1:
                group = _own_group(mount, root, own_v1[controller])
                if group is None:
                    continue
                if os.access(group, os.W_OK):
                    found[controller] = (1, group)
                    break
                why = f"{group} is not writable"
        if controller not in found:
            missing[controller] = why
    return found, missing


def _usable_v2(group: Path, controller: str) -> str | None:
    """None if a child of `group` can get `controller` (enabling it for the subtree if need be)."""
    try:
        if controller not in (group / "cgroup.controllers").read_text().split():
            return f"cgroup v2 {group} does not hold it"
        if controller not in (group / "cgroup.subtree_control").read_text().split():
            # Refused (EBUSY) when the group has processes of its own and is not the root.
            (group / "cgroup.subtree_control").write_text(f"+{controller}")
    except OSError as exc:
        return f"cannot enable it for the subtree of {group} ({exc.strerror or exc})"
    return None


def _bases_now() -> dict[str, tuple[int, Path]]:
    global _bases
    with _state_lock:
        if _bases is None:
            try:
                _bases, located = _locate()
            except OSError as exc:
                _bases, located = {}, {c: f"cannot read the cgroup setup ({exc})" for c in CONTROLLERS}
            _missing.update(located)
        return _bases


def sweep() -> None:
    """Remove the empty groups that agents which died left behind (done at each worker start)."""
    for _, base in _bases_now().values():
        _sweep(base)


def _sweep(base: Path) -> None:
    """Remove the empty groups of agents that died before they could."""
    for stale in base.glob(f"{_PREFIX}*"):
        try:
            owner = int(stale.name[len(_PREFIX) :].split("-")[0])
            if owner != os.getpid() and not Path(f"/proc/{owner}").exists():
                stale.rmdir()
        except (ValueError, OSError):
            pass


def missing() -> dict[str, str]:
    """The controllers workers run without, each with why."""
    _bases_now()
    return dict(_missing)


def summary() -> str:
    """One line: which limits cgroups give workers on this host."""
    bases = _bases_now()
    used = [f"{c} (cgroup v{bases[c][0]})" for c in CONTROLLERS if c in bases]
    lacking = [f"{c}: {why}" for c, why in _missing.items()]
    return "worker cgroups: " + (", ".join(used) or "none") + (f"; without {'; '.join(lacking)}" if lacking else "")


def _warn_once() -> None:
    global _warned
    with _state_lock:
        if _warned or not _missing:
            return
        _warned = True
    stand_ins = []
    if "memory" in _missing:
        stand_ins.append("memory is capped by RLIMIT_AS (not on CUDA), sized tmpfs mounts and no memfd")
    if "pids" in _missing:
        stand_ins.append("threads by RLIMIT_NPROC (which the kernel does not apply to an agent running as root)")
    log.warning(
        "workers run without a %s cgroup (%s): %s",
        " or ".join(_missing),
        "; ".join(f"{c}: {why}" for c, why in _missing.items()),
        "; ".join(stand_ins),
    )


@dataclass
class WorkerCgroup:
    """The groups of one worker; `add` the sandbox's first process before it runs anything."""

    dirs: dict[str, Path] = field(default_factory=dict)  # controller -> its group

    @classmethod
    def create(cls, memory_mb: int | None, pids_max: int) -> WorkerCgroup:
        """Groups for what the host allows (none at all is a valid result: see `missing`)."""
        bases = _bases_now()
        name = f"{_PREFIX}{os.getpid()}-{next(_counter)}"
        group = cls()
        for controller, (version, base) in list(bases.items()):
            _sweep(base)
            path = base / name
            try:
                path.mkdir()
                group.dirs[controller] = path
                if controller == "memory" and memory_mb:
                    group._limit_memory(version, path, memory_mb * 2**20)
                elif controller == "pids":
                    (path / "pids.max").write_text(str(pids_max))
            except OSError as exc:
                with _state_lock:
                    _missing[controller] = f"cannot set up {path} ({exc.strerror or exc})"
                    bases.pop(controller, None)
                group.dirs.pop(controller, None)
                _rmdir(path)
        _warn_once()
        return group

    @staticmethod
    def _limit_memory(version: int, path: Path, limit: int) -> None:
        if version == 2:
            (path / "memory.max").write_text(str(limit))
            if (path / "memory.swap.max").exists():
                (path / "memory.swap.max").write_text("0")
        else:
            (path / "memory.limit_in_bytes").write_text(str(limit))
            if (path / "memory.memsw.limit_in_bytes").exists():  # swap accounting on: no swap beyond it
                (path / "memory.memsw.limit_in_bytes").write_text(str(limit))

    @property
    def limits(self) -> tuple[str, ...]:
        return tuple(self.dirs)

    def add(self, pid: int) -> None:
        for path in self.dirs.values():
            (path / "cgroup.procs").write_text(str(pid))

    def pids(self) -> set[int]:
        found: set[int] = set()
        for path in self.dirs.values():
            try:
                found.update(int(p) for p in (path / "cgroup.procs").read_text().split())
            except OSError:
                pass
        return found

    def oom_kills(self) -> int:
        """How many of its processes the memory group's limit has had the kernel kill."""
        path = self.dirs.get("memory")
        for name in ("memory.events", "memory.oom_control"):  # v2, v1
            try:
                for line in (path / name).read_text().splitlines() if path else ():
                    if line.startswith("oom_kill "):
                        return int(line.split()[1])
            except (OSError, ValueError):
                pass
        return 0

    def kill(self) -> None:
        """SIGKILL every process in the groups (fork is refused in a sandbox: none can slip out)."""
        for path in self.dirs.values():
            if (path / "cgroup.kill").exists():
                try:
                    (path / "cgroup.kill").write_text("1")
                except OSError:
                    pass
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def remove(self, timeout_s: float = 2.0) -> None:
        """Kill what is left, then remove the groups (an empty one left behind is swept later)."""
        deadline = time.monotonic() + timeout_s
        while self.pids() and time.monotonic() < deadline:
            self.kill()
            time.sleep(0.01)
        for path in self.dirs.values():
            _rmdir(path)
        self.dirs = {}


def _rmdir(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass
