"""Is a SQLite database writable right now? Asked before every transaction on one in WAL mode.

SQLite writes its WAL index through a shared mmap of the `-shm` file. Once that file is made
immutable (`chattr +i`) or its mount read-only, the next write through the mapping is a SIGBUS:
the process dies with no log line. A few access(2) calls first (about a microsecond each) turn
that into an error the caller can log, answer 503 for and retry. A flag set in the middle of a
transaction can still race the check; everything else meets the error instead of the signal.
"""

from __future__ import annotations

import os
from pathlib import Path


def sqlite_files(database: str | os.PathLike) -> tuple[str, ...]:
    """The folder and the files SQLite writes for the database at `database`, in WAL mode."""
    path = os.fspath(database)
    return (os.path.dirname(path) or ".", path, f"{path}-wal", f"{path}-shm")


def unwritable(files: tuple[str, ...]) -> str | None:
    """The first of `files` that exists and cannot be written now, or None when all can."""
    for path in files:
        if not os.access(path, os.W_OK) and os.path.lexists(path):
            return path
    return None


def describe(path: str | Path) -> str:
    return f"{path} is not writable (immutable, or on a read-only mount)"
