"""Maximal verbatim spans of an output inside one dataset (OLMoTrace-style)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .suffix_array import SuffixArraySearch


@dataclass(frozen=True)
class RawSpan:
    """output[start:end] occurs verbatim in the dataset, `count` times, first at `dataset_offset`."""

    start: int
    end: int
    dataset_offset: int
    count: int


def maximal_spans(search: SuffixArraySearch, output: np.ndarray, min_tokens: int) -> list[RawSpan]:
    """Spans of >= min_tokens output tokens found in the (one) dataset that no other such span
    contains."""
    if search.dataset_count != 1:
        raise ValueError("this index holds several datasets: use maximal_spans_by_dataset")
    return maximal_spans_by_dataset(search, output, min_tokens)[0]


def maximal_spans_by_dataset(search: SuffixArraySearch, output: np.ndarray, min_tokens: int) -> list[list[RawSpan]]:
    """maximal_spans for each dataset of the index, in its order, from one compiled search.

    For each start i and dataset d, the longest match L_i,d and the suffix-array range it ends
    in come from that search; a span's count and first offset in d are read from the range of
    its own start, so nothing is searched twice.
    """
    lengths, lows, highs = search.dataset_matches(output, min_tokens)
    picked = [_maximal_starts(lengths[:, d], min_tokens) for d in range(search.dataset_count)]
    rows = np.concatenate([np.zeros(0, dtype=np.int64), *picked])
    docs = np.repeat(np.arange(search.dataset_count), [len(p) for p in picked])
    counts, offsets = search.dataset_occurrences(lows[rows, docs], highs[rows, docs], docs)
    spans: list[list[RawSpan]] = [[] for _ in picked]
    for i, d, count, offset in zip(rows.tolist(), docs.tolist(), counts.tolist(), offsets.tolist(), strict=False):
        spans[d].append(RawSpan(start=i, end=i + int(lengths[i, d]), dataset_offset=offset, count=count))
    return spans


def maximal_spans_reference(search: SuffixArraySearch, output: np.ndarray, min_tokens: int) -> list[RawSpan]:
    """The same spans from the vectorised numpy searches: what the compiled path is tested against."""
    if len(output) < min_tokens:
        return []
    lengths = search.longest_matches(output, np.arange(len(output) - min_tokens + 1, dtype=np.int64))
    rows = _maximal_starts(lengths, min_tokens).tolist()
    occurrences = search.occurrences([output[i : i + lengths[i]] for i in rows])
    return [
        RawSpan(start=i, end=i + int(lengths[i]), dataset_offset=occ.first_offset, count=occ.count)
        for i, occ in zip(rows, occurrences, strict=False)
    ]


def _maximal_starts(lengths: np.ndarray, min_tokens: int) -> np.ndarray:
    """Starts i whose span [i, i+L_i) is long enough and not inside an earlier one (which would
    reach its end: spans are visited left to right)."""
    picked: list[int] = []
    reach = 0
    for i, length in enumerate(lengths.tolist()):
        if length >= min_tokens and i + length > reach:
            picked.append(i)
            reach = i + length
    return np.asarray(picked, dtype=np.int64)


def covered_tokens(spans: list[RawSpan], output_len: int) -> int:
    """How many output tokens lie in at least one span (spans may overlap)."""
    mask = np.zeros(output_len, dtype=bool)
    for span in spans:
        mask[span.start : span.end] = True
    return int(mask.sum())
