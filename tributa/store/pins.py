"""Pin records: the roots the store keeps; gc deletes every block no pinned root reaches.

One empty file per pinned root under <store>/pins/, named by the CID's text, so pinning is a
single atomic file creation and the records survive crashes.
"""

from __future__ import annotations

import os
from pathlib import Path

from tributa.store.cid import Cid
from tributa.store.errors import CidError, write_error


class PinSet:
    def __init__(self, root: Path) -> None:
        self.dir = root / "pins"
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_error(exc, f"pin records under {root}") from None

    def add(self, cid: Cid) -> None:
        path = self.dir / str(cid)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise write_error(exc, f"the pin for {cid}") from None
        os.close(fd)

    def remove(self, cid: Cid) -> bool:
        try:
            (self.dir / str(cid)).unlink()
        except FileNotFoundError:
            return False
        return True

    def __contains__(self, cid: Cid) -> bool:
        return (self.dir / str(cid)).exists()

    def list(self) -> list[Cid]:
        roots: list[Cid] = []
        for entry in sorted(os.listdir(self.dir)):
            try:
                roots.append(Cid.parse(entry))
            except CidError:
                continue  # not a pin record (e.g. an editor's backup file)
        return roots
