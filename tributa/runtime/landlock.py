"""A Landlock domain for the serving worker, entered right after its seccomp filter.

What it buys is Landlock's ptrace scoping: a process in a domain cannot get ptrace-mode access
(ptrace, /proc/PID/mem, process_vm_*) to any process outside it, whatever the uids, so a job
cannot write into the memory of a process that lacks the worker's filter and limits. The ruleset
also refuses, anywhere, to execute files and to make device nodes, FIFOs or socket files, and
(where the kernel has them) TCP binds/connects, signals to and abstract sockets of processes
outside the domain. The worker needs none of these. System call numbers are x86-64's.
"""

from __future__ import annotations

import ctypes
import platform
import struct

_CREATE_RULESET, _RESTRICT_SELF = 444, 446
_CREATE_RULESET_VERSION = 1 << 0
_FS_EXECUTE, _FS_MAKE_CHAR, _FS_MAKE_SOCK, _FS_MAKE_FIFO, _FS_MAKE_BLOCK = 1 << 0, 1 << 6, 1 << 9, 1 << 10, 1 << 11
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def abi() -> int | None:
    """The kernel's Landlock ABI version, or None where it has no (enabled) Landlock."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    version = _libc().syscall(_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return int(version) if version > 0 else None


def restrict_self() -> int | None:
    """Enter the domain (this thread and what it starts later; needs no_new_privs, which the
    seccomp filter set). Its ABI version, or None where the kernel has no Landlock."""
    version = abi()
    if version is None:
        return None
    net = _NET_BIND_TCP | _NET_CONNECT_TCP if version >= 4 else 0
    scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL if version >= 6 else 0
    # struct landlock_ruleset_attr {u64 handled_access_fs, handled_access_net, scoped}: fields an
    # older kernel lacks are passed as zeros, which it accepts.
    attr = ctypes.create_string_buffer(
        struct.pack("=QQQ", _FS_EXECUTE | _FS_MAKE_CHAR | _FS_MAKE_SOCK | _FS_MAKE_FIFO | _FS_MAKE_BLOCK, net, scoped)
    )
    libc = _libc()
    fd = libc.syscall(_CREATE_RULESET, attr, ctypes.c_size_t(24), ctypes.c_uint32(0))
    if fd < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset")
    try:
        if libc.syscall(_RESTRICT_SELF, ctypes.c_int(fd), ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self")
    finally:
        libc.close(ctypes.c_int(fd))
    return version
