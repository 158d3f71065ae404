"""A store-wide reader/writer lock between processes: adds share it, gc (and the one-time
conversion of an old store) takes it alone.

Without it, gc in one process could delete the blocks of an add still running in another
(those blocks are not indexed and pinned until the add finishes).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from tributa.store.errors import write_error


class StoreLock:
    def __init__(self, root: Path) -> None:
        self.path = root / "lock"

    @contextmanager
    def _hold(self, mode: int) -> Iterator[None]:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise write_error(exc, f"the store lock {self.path}") from None
        try:
            fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def shared(self) -> AbstractContextManager[None]:
        return self._hold(fcntl.LOCK_SH)

    def exclusive(self) -> AbstractContextManager[None]:
        return self._hold(fcntl.LOCK_EX)
