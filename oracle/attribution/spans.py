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

    For each start i the longest match L_i, and the suffix-array range of its occurrences, come
    from one compiled search; the range of a span's own start gives its count and first offset.
    """
    if len(output) < min_tokens:
        return []
    lengths, lows, highs = search.match_ranges(output, np.arange(len(output) - min_tokens + 1, dtype=np.int64))
    rows = _maximal_starts(lengths, min_tokens)
    offsets = search.first_offsets(lows[rows], highs[rows])
    return [
        RawSpan(start=i, end=i + int(lengths[i]), dataset_offset=int(offset), count=int(highs[i] - lows[i]))
        for i, offset in zip(rows.tolist(), offsets.tolist())
    ]


def maximal_spans_reference(search: SuffixArraySearch, output: np.ndarray, min_tokens: int) -> list[RawSpan]:
    """The same spans from the vectorised numpy searches: what the compiled path is tested against."""
    if len(output) < min_tokens:
        return []
    lengths = search.longest_matches(output, np.arange(len(output) - min_tokens + 1, dtype=np.int64))
    rows = _maximal_starts(lengths, min_tokens).tolist()
    occurrences = search.occurrences([output[i : i + lengths[i]] for i in rows])
    return [
        RawSpan(start=i, end=i + int(lengths[i]), dataset_offset=occ.first_offset, count=occ.count)
        for i, occ in zip(rows, occurrences)
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
