"""A seccomp filter for serving workers, as the classic BPF program `bwrap --seccomp FD` loads.

A worker computes; it never needs a new process, a new namespace, another process's memory, or
the kernel's administrative calls. The filter (x86-64) makes those fail with EPERM:
- fork, vfork, execve, execveat, and clone without CLONE_THREAD (threads still start: glibc's
  pthread_create falls back from clone3, which gets ENOSYS, to clone with CLONE_THREAD).
  bwrap loads its filter just before it execs the worker, so that one allows execve; the worker
  stacks the full filter on itself first thing (`install`), before it reads a model;
- ptrace, process_vm_readv/writev, unshare, setns, mount, umount2, pivot_root, chroot;
- bpf, perf_event_open, userfaultfd, keyctl, add_key, request_key, open_by_handle_at,
  name_to_handle_at, module and kexec calls, reboot, swapon/off, acct, iopl/ioperm, sethostname;
- io_uring, the new mount API (open_tree, move_mount, fs*), mount_setattr, pidfd_getfd;
- memfd_create, memfd_secret and shmget (memory outside any rlimit), fanotify_init, io_setup,
  and prctl(PR_SET_PDEATHSIG) (the worker must die with bwrap).
socket and socketpair fail with EAFNOSUPPORT for any family but AF_UNIX (AF_VSOCK, for one,
ignores the network namespace). Any call of another architecture's ABI (x32, i386) kills the
process: its numbers differ.
"""

from __future__ import annotations

import errno
import platform
import struct

_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_BIT = 0x40000000
_CLONE_THREAD = 0x00010000

# struct seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6]
_NR, _ARCH, _ARG0_LOW = 0, 4, 16

_BPF_LD_W_ABS = 0x20
_BPF_JEQ_K = 0x15
_BPF_JGE_K = 0x35
_BPF_JSET_K = 0x45
_BPF_RET_K = 0x06
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_RET_KILL_PROCESS = 0x80000000

DENIED_X86_64 = {
    "fork": 57,
    "vfork": 58,
    "execve": 59,
    "ptrace": 101,
    "chroot": 161,
    "acct": 163,
    "mount": 165,
    "umount2": 166,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "sethostname": 170,
    "setdomainname": 171,
    "iopl": 172,
    "ioperm": 173,
    "init_module": 175,
    "delete_module": 176,
    "pivot_root": 155,
    "kexec_load": 246,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "unshare": 272,
    "perf_event_open": 298,
    "name_to_handle_at": 303,
    "open_by_handle_at": 304,
    "setns": 308,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "finit_module": 313,
    "kexec_file_load": 320,
    "bpf": 321,
    "execveat": 322,
    "userfaultfd": 323,
    # io_uring runs its operations inside the kernel, out of this filter's sight; the new mount
    # API and pidfd_getfd are administrative or cross-process.
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "pidfd_getfd": 438,
    "mount_setattr": 442,
    # Memory no rlimit counts: a memfd or a SysV segment holds pages after they are unmapped
    # (tmpfs mounts are sized by bwrap instead).
    "memfd_create": 319,
    "memfd_secret": 447,
    "shmget": 29,
    # Kernel surface a worker has no use for: fanotify, and legacy AIO (its rings count against
    # a host-wide limit, aio-max-nr).
    "fanotify_init": 300,
    "io_setup": 206,
}
_CLONE, _CLONE3, _SOCKET, _SOCKETPAIR, _PRCTL = 56, 435, 41, 53, 157
_AF_UNIX, _PR_SET_PDEATHSIG = 1, 1


def supported() -> bool:
    """The filter is written for x86-64 system call numbers."""
    return platform.machine() in ("x86_64", "AMD64")


def worker_filter(allow_exec: bool = False) -> bytes:
    """The compiled filter: struct sock_filter {u16 code; u8 jt; u8 jf; u32 k} entries."""
    denied = {name: nr for name, nr in DENIED_X86_64.items() if not (allow_exec and name in ("execve", "execveat"))}
    # Jump targets are labels until every label's position is known; a label marks the
    # instruction that follows it.
    ALLOW, EPERM, ENOSYS, EAFNOSUPPORT, KILL = "allow", "eperm", "enosys", "eafnosupport", "kill"
    CLONE, SOCKET, PRCTL = "clone", "socket", "prctl"
    program: list[tuple[int, int | str, int | str, int] | str] = [
        (_BPF_LD_W_ABS, 0, 0, _ARCH),
        (_BPF_JEQ_K, 0, KILL, _AUDIT_ARCH_X86_64),
        (_BPF_LD_W_ABS, 0, 0, _NR),
        (_BPF_JGE_K, KILL, 0, _X32_BIT),
        *[(_BPF_JEQ_K, EPERM, 0, nr) for nr in sorted(denied.values())],
        (_BPF_JEQ_K, ENOSYS, 0, _CLONE3),
        (_BPF_JEQ_K, CLONE, 0, _CLONE),
        (_BPF_JEQ_K, SOCKET, 0, _SOCKET),
        (_BPF_JEQ_K, SOCKET, 0, _SOCKETPAIR),
        (_BPF_JEQ_K, PRCTL, ALLOW, _PRCTL),
        CLONE,
        (_BPF_LD_W_ABS, 0, 0, _ARG0_LOW),  # clone's flags: threads only
        (_BPF_JSET_K, ALLOW, EPERM, _CLONE_THREAD),
        # The worker talks only over the socketpair it is given. AF_VSOCK ignores network
        # namespaces (it reaches the hypervisor); netlink, packet and the rest are kernel surface.
        SOCKET,
        (_BPF_LD_W_ABS, 0, 0, _ARG0_LOW),  # the address family
        (_BPF_JEQ_K, ALLOW, EAFNOSUPPORT, _AF_UNIX),
        # Clearing the parent-death signal would let the worker outlive bwrap, and the agent.
        PRCTL,
        (_BPF_LD_W_ABS, 0, 0, _ARG0_LOW),  # the option
        (_BPF_JEQ_K, EPERM, ALLOW, _PR_SET_PDEATHSIG),
    ]
    returns = {
        ALLOW: _RET_ALLOW,
        EPERM: _RET_ERRNO | errno.EPERM,
        ENOSYS: _RET_ERRNO | errno.ENOSYS,
        EAFNOSUPPORT: _RET_ERRNO | errno.EAFNOSUPPORT,
        KILL: _RET_KILL_PROCESS,
    }
    for name in returns:
        program += [name, (_BPF_RET_K, 0, 0, returns[name])]
    where: dict[str, int] = {}
    instructions: list[tuple[int, int | str, int | str, int]] = []
    for entry in program:
        if isinstance(entry, str):
            where[entry] = len(instructions)
        else:
            instructions.append(entry)
    body = [(code, _offset(jt, i, where), _offset(jf, i, where), k) for i, (code, jt, jf, k) in enumerate(instructions)]
    return b"".join(struct.pack("=HBBI", *entry) for entry in body)


def _offset(target: int | str, at: int, where: dict[str, int]) -> int:
    if isinstance(target, int):
        return target
    offset = where[target] - at - 1
    if not 0 <= offset <= 255:
        raise ValueError("seccomp program too long for a classic BPF jump")
    return offset


def install(program: bytes) -> None:
    """Load `program` on this process (and the threads it starts later); irreversible."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

    prog = SockFprog(len(program) // 8, program)
    if (
        libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
        or libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0
    ):
        raise OSError(ctypes.get_errno(), "cannot install the seccomp filter")
