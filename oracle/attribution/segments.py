"""The span corpora of an index root: a few, however many datasets it indexes (LSM-style).

Adding a dataset appends its own index as the newest segment (nothing is rebuilt then); while
the newest segment holds at least half as many tokens as the one before it, the two are merged
into one corpus (one suffix array over both, corpus.py). Sizes so at least double from the
newest segment to the oldest: about log2(total / smallest) + 1 segments at most, and each token
is sorted again about log2(total / its dataset) times over all additions.

The list is segments.json, replaced whole under a file lock (the oracle's indexer and `tributa
dataset register` on the same data directory may add at once). A merged corpus is deleted only
once the list no longer names it; an engine still mapping it keeps its pages until it closes.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from .corpus import CorpusMember, SpanCorpus
from .index import AttributionIndex
from .progress import ProgressFn

log = logging.getLogger("tributa.oracle.attribution")

FOLDER = "_spans"
LIST = "segments.json"
_MERGE_RATIO = 2  # merge while newest * ratio >= the one before


class SpanSegments:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.dir = self.root / FOLDER

    def add(self, index: AttributionIndex, progress: ProgressFn | None = None) -> None:
        """Cover `index`'s dataset (a no-op when a segment holds it already)."""
        if index.path is None:
            raise ValueError("only an index saved in a folder can join the span segments")
        member = CorpusMember.of(index)
        with self._locked():
            generation, segments = self._read()
            if any(member in s["members"] for s in segments):
                return
            where = os.path.relpath(index.path, self.root)
            segments.append({"members": [member], "tokens": member.token_count, "index": where, "corpus": None})
            while len(segments) >= 2 and segments[-1]["tokens"] * _MERGE_RATIO >= segments[-2]["tokens"]:
                segments[-2:] = [self._merge(segments[-2:], progress)]
            self._write(generation + 1, segments)
            self._remove_unlisted(segments)

    def generation(self) -> int:
        """Grows with every change of the list (-1: the list does not read)."""
        try:
            return self._read()[0]
        except (OSError, ValueError):
            return -1

    def corpora(self) -> tuple[int, list[SpanCorpus]]:
        """(generation, the merged segments' corpora); none when they do not load. A one-dataset
        segment is that dataset's own index, which an engine searches without being handed it."""
        for attempt in range(2):  # a merge may delete a corpus between reading the list and loading it
            try:
                generation, segments = self._read()
                return generation, [self._load(s) for s in segments if s["corpus"] is not None]
            except (OSError, ValueError) as exc:
                if attempt:
                    log.warning(
                        "the span segments under %s do not load (%s): attribution searches each dataset "
                        "on its own index",
                        self.dir,
                        exc,
                    )
        return -1, []

    # -- the list and its segments ----------------------------------------------------------

    def _load(self, segment: dict) -> SpanCorpus:
        if segment["corpus"] is not None:
            corpus = SpanCorpus.load(self.dir / segment["corpus"])
        else:
            corpus = SpanCorpus.of_index(AttributionIndex.load(self.root / segment["index"]))
        if list(corpus.members) != segment["members"]:
            raise ValueError(f"segment {segment['corpus'] or segment['index']} holds other datasets than listed")
        return corpus

    def _merge(self, pair: list[dict], progress: ProgressFn | None) -> dict:
        corpora = [self._load(s) for s in pair]
        parts = [(m, c.member_tokens(k)) for c in corpora for k, m in enumerate(c.members)]
        newest = {m.dataset_id: i for i, (m, _) in enumerate(parts)}  # a dataset rebuilt since: its newest copy
        parts = [p for i, p in enumerate(parts) if newest[p[0].dataset_id] == i]
        total = sum(m.token_count for m, _ in parts)
        if progress:
            progress("merge", 0, total)
        name = f"corpus-{uuid.uuid4().hex[:12]}"
        SpanCorpus.build(parts, self.dir / name)
        if progress:
            progress("merge", total, total)
        log.info("span segments: merged %d datasets (%d tokens) into %s", len(parts), total, name)
        return {"members": [m for m, _ in parts], "tokens": total, "index": None, "corpus": name}

    def _read(self) -> tuple[int, list[dict]]:
        file = self.dir / LIST
        if not file.is_file():
            return 0, []
        try:
            raw = json.loads(file.read_text())
            segments = [{**s, "members": [CorpusMember(**m) for m in s["members"]]} for s in raw["segments"]]
            return int(raw["generation"]), segments
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{file} is not a segment list ({exc!r}); delete {self.dir} to start it again") from exc

    def _write(self, generation: int, segments: list[dict]) -> None:
        listed = [{**s, "members": [asdict(m) for m in s["members"]]} for s in segments]
        tmp = self.dir / f".{LIST}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"generation": generation, "segments": listed}, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.dir / LIST)

    def _remove_unlisted(self, segments: list[dict]) -> None:
        """Merged-away corpora, and what a merge cut short left (under the lock: no writer runs)."""
        keep = {s["corpus"] for s in segments} | {LIST, ".lock"}
        for entry in self.dir.iterdir():
            if entry.name in keep:
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
