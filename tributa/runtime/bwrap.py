"""The bubblewrap command line a serving worker runs under.

The worker sees, read-only, exactly: the system's /usr (and the /lib, /bin links into it), the
Python installation and virtual environment it runs on, this package's source, and the model
folders it serves; private, size-capped tmpfs mounts at /tmp and /dev/shm (the only writable
places); a fresh /proc of its own pid namespace; a read-only minimal /dev (plus /dev/nvidia* when
it runs on CUDA). It gets new mount, pid, net, ipc, uts, user and cgroup namespaces, a cleared
environment, no capabilities, a seccomp filter (seccomp.py), and dies with the agent. The worker
is the namespace's pid 1 (`--as-pid-1`): no bwrap reaper runs beside it, whose memory a job could
write through /proc/1/mem to get out of the worker's filter and limits. Keys, keystores and the
agent's data are simply not in its filesystem, and the worker clears what a batch leaves in its
tmpfs before the next (`scratch.py`). What a worker holds in memory is another matter: code
running inside it sees the later jobs of its base model.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # .../tributa
_PROC_KNOBS = ("sys", "sysrq-trigger", "mtrr", "irq", "bus", "acpi", "scsi", "fs", "driver")
# Host-wide files only root may read, which an agent started as root could: covered by /dev/null.
_PROC_ROOT_ONLY = (
    "keys",
    "key-users",
    "timer_list",
    "slabinfo",
    "vmallocinfo",
    "kallsyms",
    "config.gz",
    "kcore",
    "kpagecount",
    "kpageflags",
    "kpagecgroup",
    "sched_debug",
    "pagetypeinfo",
)
SCRATCH_MB = 512  # /tmp of a worker with no memory limit; /dev/shm gets at most SHM_MB
SHM_MB = 64


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def python_paths() -> list[Path]:
    """What the interpreter needs: its installation, the venv, and (by path) this package."""
    paths = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), Path(sys.executable).resolve().parent}
    return sorted(p for p in paths if p.exists() and not _under_usr(p))


def _under_usr(path: Path) -> bool:
    return path == Path("/usr") or Path("/usr") in path.parents


def command(
    argv: list[str],
    read_only: list[Path],
    env: dict[str, str],
    seccomp_fd: int | None,
    cuda: bool = False,
    mounted: Sequence[tuple[Path, str]] = (),
    scratch_mb: int = SCRATCH_MB,
    info_fd: int | None = None,
    block_fd: int | None = None,
) -> list[str]:
    """`bwrap … argv`, binding `read_only` (model folders) besides what Python needs, and each
    (source, destination) of `mounted` read-only at its destination. bwrap writes the sandbox's
    pid to `info_fd`, then waits to read a byte from `block_fd` before it runs `argv`
    (`sandbox_process` puts the sandbox in its cgroups in between)."""
    bwrap = bwrap_path()
    if bwrap is None:
        raise FileNotFoundError(
            "bubblewrap (bwrap) is not installed: apt-get install bubblewrap, or run with --no-sandbox"
        )
    args = [
        bwrap,
        "--unshare-all",  # user, ipc, pid, net, uts, cgroup namespaces
        "--uid",
        "65534",
        "--gid",
        "65534",  # nobody inside its user namespace
        "--die-with-parent",
        "--as-pid-1",
        "--new-session",
        "--chdir",
        "/",  # never the agent's cwd: `python -m` would import from it
        "--clearenv",
        "--cap-drop",
        "ALL",
        "--ro-bind",
        "/usr",
        "/usr",
        "--proc",
        "/proc",
    ]
    # An agent started as root maps to host root inside its user namespace, and owns what host
    # root owns in /proc: cover the kernel's knobs (sysctls, sysrq, mtrr) read-only.
    for knob in _PROC_KNOBS:
        if Path("/proc", knob).exists():
            args += ["--ro-bind", f"/proc/{knob}", f"/proc/{knob}"]
    for name in _PROC_ROOT_ONLY:
        if Path("/proc", name).exists():
            args += ["--ro-bind", "/dev/null", f"/proc/{name}"]
    # Unsized, each tmpfs could take half the host's RAM, and the pages a job writes there are
    # not in its address space (RLIMIT_AS); a memory cgroup, where there is one, charges them too.
    args += [
        "--dev",
        "/dev",
        "--size",
        str(min(SHM_MB, scratch_mb) * 2**20),
        "--tmpfs",
        "/dev/shm",
        "--size",
        str(scratch_mb * 2**20),
        "--tmpfs",
        "/tmp",
        "--dir",
        "/var/tmp",
    ]
    for link in ("lib", "lib64", "bin", "sbin"):
        if Path(f"/{link}").is_symlink():
            args += ["--symlink", f"usr/{link}", f"/{link}"]
        elif Path(f"/{link}").is_dir():
            args += ["--ro-bind", f"/{link}", f"/{link}"]
    for path in [*python_paths(), PACKAGE_ROOT, *read_only]:
        resolved = Path(path).resolve()
        args += ["--ro-bind", str(resolved), str(resolved)]
        if resolved != Path(path).absolute():  # a model folder reached by a symlink: bind that name too
            args += ["--ro-bind", str(resolved), str(Path(path).absolute())]
    for source, destination in mounted:
        args += ["--ro-bind", str(Path(source).resolve()), destination]
    if cuda:
        for node in sorted(Path("/dev").glob("nvidia*")):
            args += ["--dev-bind", str(node), str(node)]
    # After the device binds, which need their mount points made in it; submounts keep theirs.
    args += ["--remount-ro", "/dev", "--remount-ro", "/"]  # only /tmp and /dev/shm stay writable
    for name, value in sorted(env.items()):
        args += ["--setenv", name, value]
    if seccomp_fd is not None:
        args += ["--seccomp", str(seccomp_fd)]
    if info_fd is not None:
        args += ["--info-fd", str(info_fd)]
    if block_fd is not None:
        args += ["--block-fd", str(block_fd)]
    return [*args, "--", *argv]
