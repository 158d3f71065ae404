"""Is a SQLite database writable right now? Asked before every statement on one in WAL mode.

SQLite writes its WAL index through a shared mmap of the `-shm` file. Once that file is made
immutable (`chattr +i`) or its mount read-only, the next write through the mapping is a SIGBUS:
the process dies with no log line. A few access(2) calls first (about a microsecond each) turn
that into an error the caller can log, answer 503 for and retry. A flag set between the check
and the statement's write can still race it (the oracle restarts a process that dies so); a
file this user may only read is no fault (SQLite maps -shm read-only) and is let through.
"""

from __future__ import annotations

import os
from pathlib import Path


def sqlite_files(database: str | os.PathLike) -> tuple[str, ...]:
    """The folder and the files SQLite writes for the database at `database`, in WAL mode."""
    path = os.fspath(database)
    return (os.path.dirname(path) or ".", path, f"{path}-wal", f"{path}-shm")


def unwritable(files: tuple[str, ...]) -> str | None:
    """The first of `files` that exists and that SQLite would fault on writing: immutable, or on
    a read-only mount. None when all are writable, and when one is only refused to this user
    (SQLite then maps -shm read-only and answers its own "readonly" error: no fault)."""
    for path in files:
        if not os.access(path, os.W_OK) and os.path.lexists(path) and (_read_only_mount(path) or _immutable(path)):
            return path
    return None


def _read_only_mount(path: str) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


_FS_IOC_GETFLAGS = 0x80086601  # _IOR('f', 1, long) on Linux
_FS_IMMUTABLE_FL = 0x00000010


def _immutable(path: str) -> bool:
    """Whether `path` carries the immutable flag (`chattr +i`)."""
    import array
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        flags = array.array("l", [0])
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, flags, True)
        return bool(flags[0] & _FS_IMMUTABLE_FL)
    except OSError:  # a filesystem without these flags: not what refused the write
        return False
    finally:
        os.close(fd)


def describe(path: str | Path) -> str:
    return f"{path} is not writable (immutable, or on a read-only mount)"
