"""Reading blocks out of packs: read-only handles, kept open and shared by threads.

Opening a file for every block read would cost more than reading it, so each Blockstore keeps
the most recently used packs open. Packs are never changed once written, so a handle on a pack
gc has since replaced still reads valid bytes.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

_OPEN_PACKS = 32  # read handles kept open per Blockstore


class PackReaders:
    """Read-only handles on the pack files in a folder, the most recently used kept open.

    An evicted handle is closed when the last thread still reading through it lets go of it
    (_Handle.__del__), never under a reader."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._open: OrderedDict[str, _Handle] = OrderedDict()
        self._lock = threading.Lock()

    def pread(self, pack: str, offset: int, size: int) -> bytes:
        with self._lock:
            handle = self._open.get(pack)
            if handle is not None:
                self._open.move_to_end(pack)
        if handle is None:
            handle = self._add(pack)
        return os.pread(handle.fd, size, offset)

    def _add(self, pack: str) -> _Handle:
        handle = _Handle(os.open(self._folder / pack, os.O_RDONLY | os.O_CLOEXEC))
        with self._lock:
            self._open[pack] = handle
            # Let go of packs gc deleted (their space is freed once nobody has them open)...
            for name in [name for name, old in self._open.items() if old.deleted()]:
                del self._open[name]
            while len(self._open) > _OPEN_PACKS:  # ...and of the least recently used.
                self._open.popitem(last=False)
        return handle

    def drop(self, pack: str) -> None:
        with self._lock:
            self._open.pop(pack, None)

    def close(self) -> None:
        with self._lock:
            self._open.clear()


class _Handle:
    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def deleted(self) -> bool:
        return os.fstat(self.fd).st_nlink == 0

    def __del__(self, _close: Callable[[int], None] = os.close) -> None:
        _close(self.fd)  # bound early: module globals may be gone at interpreter exit
