"""One suffix array over several datasets, with a table of where each begins (issue 17): the
span search then costs one search per output start, however many datasets it covers.

Layout of a corpus directory (arrays memory-mapped on load):
    manifest.json    format, members in order (dataset id, content digest, token count), dtypes
    tokens.npy       each member's tokens, each followed by the separator (one above the largest
                     id, which no query id matches: no match runs from one dataset into the next)
    suffix_array.npy positions sorted by suffix, as in a dataset's own index
    doc_starts.npy   int64: where each member begins, then the total length (the boundary table)

A dataset's own index (index.py) serves as a one-member corpus without copying anything
(`SpanCorpus.of_index`); segments.py keeps a few built corpora covering every indexed dataset.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .index import AttributionIndex
from .storage import load_arrays, read_manifest, write_folder
from .suffix_array import SuffixArraySearch, build_suffix_array

CORPUS_FORMAT_VERSION = 1
_ARRAYS = ("tokens", "suffix_array", "doc_starts")


@dataclass(frozen=True)
class CorpusMember:
    dataset_id: str
    content_sha256: str
    token_count: int

    @classmethod
    def of(cls, index: AttributionIndex) -> CorpusMember:
        return cls(index.dataset_id, index.manifest.content_sha256, index.token_count)


@dataclass(frozen=True)
class SpanCorpus:
    members: tuple[CorpusMember, ...]
    search: SuffixArraySearch
    path: Path | None = None

    @property
    def token_count(self) -> int:
        return sum(m.token_count for m in self.members)

    @property
    def bytes_per_token(self) -> float:
        """Token array + suffix array per dataset token (separators included in the bytes)."""
        return (self.search.tokens.nbytes + self.search.sa.nbytes) / self.token_count

    @classmethod
    def of_index(cls, index: AttributionIndex) -> SpanCorpus:
        """A dataset's own index as a one-member corpus: its arrays, nothing copied."""
        return cls((CorpusMember.of(index),), SuffixArraySearch(index.tokens, index.suffix_array), index.path)

    def member_tokens(self, k: int) -> np.ndarray:
        """Member k's tokens (a view, without the separator)."""
        return self.search.tokens[self.search.doc_starts[k] : self.search.doc_starts[k] + self.members[k].token_count]

    @classmethod
    def build(
        cls, parts: Sequence[tuple[CorpusMember, np.ndarray]], out_dir: str | os.PathLike[str] | None = None
    ) -> SpanCorpus:
        """The corpus of these (member, tokens) pairs, in this order: in memory when out_dir is
        None, else written there (replacing an earlier corpus) and memory-mapped."""
        if not parts:
            raise ValueError("a corpus needs at least one dataset")
        ids = [m.dataset_id for m, _ in parts]
        if len(set(ids)) != len(ids):
            raise ValueError(f"a corpus holds each dataset once, got {ids}")
        for member, tokens in parts:
            if len(tokens) != member.token_count or len(tokens) == 0:
                raise ValueError(
                    f"dataset {member.dataset_id!r}: {len(tokens)} tokens, its member entry says {member.token_count}"
                )
        if min(int(np.min(t)) for _, t in parts) < 0:
            raise ValueError("token ids must be >= 0")
        separator = max(int(np.max(t)) for _, t in parts) + 1  # above every id: the first-token table stays small
        dtype = np.dtype(np.uint16 if separator <= 0xFFFF else np.uint32)
        doc_starts = np.concatenate([[0], np.cumsum([m.token_count + 1 for m, _ in parts])]).astype(np.int64)
        tokens = np.full(int(doc_starts[-1]), separator, dtype=dtype)
        for (member, part), begin in zip(parts, doc_starts[:-1].tolist(), strict=False):
            tokens[begin : begin + member.token_count] = part
        sa = build_suffix_array(tokens)
        members = tuple(m for m, _ in parts)
        if out_dir is None:
            return cls(members, SuffixArraySearch(tokens, sa, doc_starts, separator))
        out = Path(out_dir)

        def manifest(sizes: dict[str, int]) -> dict[str, Any]:
            return {
                "format_version": CORPUS_FORMAT_VERSION,
                "members": [asdict(m) for m in members],
                "token_dtype": str(tokens.dtype),  # noqa: F821
                "suffix_array_dtype": str(sa.dtype),  # noqa: F821
                "separator": separator,
                "bytes": sizes,
            }

        write_folder(out, {"tokens": tokens, "suffix_array": sa, "doc_starts": doc_starts}, manifest)
        del tokens, sa
        return cls.load(out)

    @classmethod
    def from_indexes(
        cls, indexes: Sequence[AttributionIndex], out_dir: str | os.PathLike[str] | None = None
    ) -> SpanCorpus:
        return cls.build([(CorpusMember.of(i), np.asarray(i.tokens)) for i in indexes], out_dir)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> SpanCorpus:
        path = Path(directory)
        raw = read_manifest(path, "span corpus", "SpanCorpus.build or SpanSegments.add")
        if raw.get("format_version") != CORPUS_FORMAT_VERSION:
            raise ValueError(
                f"span corpus at {path} has format {raw.get('format_version')}, this engine reads "
                f"{CORPUS_FORMAT_VERSION}: rebuild it"
            )
        try:
            members = tuple(CorpusMember(**m) for m in raw["members"])
            separator = int(raw["separator"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"span corpus manifest at {path} is not valid ({exc}); rebuild it") from exc
        arrays = load_arrays(path, _ARRAYS)
        doc_starts = np.asarray(arrays["doc_starts"])
        expected = np.concatenate([[0], np.cumsum([m.token_count + 1 for m in members])])
        if not np.array_equal(doc_starts, expected):
            raise ValueError(
                f"span corpus at {path} is inconsistent (its boundary table and members differ): rebuild it"
            )
        return cls(members, SuffixArraySearch(arrays["tokens"], arrays["suffix_array"], doc_starts, separator), path)
