"""Per-batch scratch space in a sandboxed worker: what one batch writes, the next cannot read.

A worker serves many requesters' jobs, one batch after another, and its tmpfs mounts (/tmp, also
its HOME, and /dev/shm) outlive each batch. Each batch runs in a fresh directory of its own
(the cwd, TMPDIR and `tempfile`'s default), and once it is answered everything it left in the
tmpfs mounts is removed, wherever it was written: the mounts go back to what they held when the
model had loaded. Only in a sandbox: a worker outside one shares the host's /tmp.
"""

from __future__ import annotations

import os
import shutil
import tempfile

ROOTS = ("/tmp", "/dev/shm")


def _entries(folder: str, device: int):
    """The entries under `folder` on filesystem `device` (not into folders bound over it)."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        try:
            if entry.stat(follow_symlinks=False).st_dev != device:
                continue
        except OSError:
            continue
        yield entry
        if entry.is_dir(follow_symlinks=False):
            yield from _entries(entry.path, device)


def _listing(roots: tuple[str, ...]) -> set[str]:
    return {entry.path for root in roots for entry in _entries(root, os.stat(root).st_dev)}


class Scratch:
    """`begin()` before a batch, `end()` after it; the baseline is taken at construction."""

    def __init__(self, roots: tuple[str, ...] = ROOTS) -> None:
        self.roots = tuple(root for root in roots if os.path.isdir(root))
        self.baseline = _listing(self.roots)
        self._count = 0
        self._tmpdir = os.environ.get("TMPDIR")

    def begin(self) -> str:
        self._count += 1
        path = tempfile.mkdtemp(prefix=f"batch-{self._count}-", dir=self.roots[0])
        os.environ["TMPDIR"] = tempfile.tempdir = path
        os.chdir(path)
        return path

    def end(self) -> None:
        os.chdir("/")
        if self._tmpdir is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = self._tmpdir
        tempfile.tempdir = None
        for root in self.roots:
            self._clear(root)

    def _clear(self, root: str) -> None:
        device = os.stat(root).st_dev
        for entry in list(_entries(root, device)):  # parents come before what they hold
            if entry.path in self.baseline or not os.path.lexists(entry.path):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
            except OSError:
                pass
