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
    """Spans of >= min_tokens output tokens found in the dataset that no other such span contains.

    For each start i the longest match L_i comes from the suffix array; the span [i, i+L_i) is
    maximal unless an earlier span already reaches its end (then it lies inside that one).
    """
    m = len(output)
    if m < min_tokens:
        return []
    starts = np.arange(m - min_tokens + 1, dtype=np.int64)
    lengths = search.longest_matches(output, starts)
    found: list[tuple[int, int]] = []
    reach = 0
    for i, length in zip(starts.tolist(), lengths.tolist()):
        if length >= min_tokens and i + length > reach:
            found.append((i, i + length))
            reach = i + length
    occurrences = search.occurrences([output[s:e] for s, e in found])
    return [
        RawSpan(start=s, end=e, dataset_offset=occ.first_offset, count=occ.count)
        for (s, e), occ in zip(found, occurrences)
    ]


def covered_tokens(spans: list[RawSpan], output_len: int) -> int:
    """How many output tokens lie in at least one span (spans may overlap)."""
    mask = np.zeros(output_len, dtype=bool)
    for span in spans:
        mask[span.start : span.end] = True
    return int(mask.sum())
