"""Suffix-array search over a token array (Infini-gram style, exact): one dataset's, or several
datasets' joined by a separator token, with a table of where each begins (corpus.py).

`match_ranges`, `dataset_matches`, `dataset_occurrences` and `count` run the compiled kernels
(kernels.py); the vectorised numpy searches (`longest_matches`, `occurrences`) are the
one-dataset reference they are tested against, one numpy step over all rows at a time.

Suffixes compare token by token; a suffix that ends sorts before any longer one (the order
libdivsufsort produces). Queries are padded with END (-1, "the string stops here") or TOP
(above every token id) so that one vectorised binary search answers lower and upper bounds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pydivsufsort

from . import kernels

END = -1
TOP = 1 << 40
# First comparison window for longest-match search; doubled for rows that match all of it.
_FIRST_WINDOW = 32
_COUNT_BLOCK = 1 << 24


def smallest_uint_dtype(max_value: int) -> np.dtype:
    """The narrowest unsigned dtype holding 0..max_value (token ids, suffix positions)."""
    for dtype in (np.uint8, np.uint16, np.uint32, np.uint64):
        if max_value <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise ValueError(f"{max_value} does not fit in 64 bits")


def token_dtype(max_token_id: int) -> np.dtype:
    # uint8 saves nothing in practice (vocabularies exceed 256) and complicates nothing either,
    # but uint16 is the floor so a re-tokenised dataset keeps its dtype stable.
    return np.dtype(np.uint16) if max_token_id <= 0xFFFF else np.dtype(np.uint32)


def build_suffix_array(tokens: np.ndarray) -> np.ndarray:
    """Suffix array of `tokens`, stored in the smallest unsigned dtype that holds len-1."""
    if tokens.ndim != 1 or len(tokens) == 0:
        raise ValueError("cannot build a suffix array of an empty token array")
    sa = pydivsufsort.divsufsort(np.ascontiguousarray(tokens))
    return sa.astype(smallest_uint_dtype(len(tokens) - 1), copy=False)


def _as_int64_ids(ids, limit: int | None = None) -> np.ndarray:
    """Token ids as int64 for the kernels; an unsigned id past int64 (which a cast would wrap
    to a negative), or one at or past `limit` (the separator between datasets), becomes -1,
    which matches nothing."""
    array = np.asarray(ids)
    if array.dtype.kind == "u" and array.size and array.max() > np.iinfo(np.int64).max:
        too_big = array > np.iinfo(np.int64).max
        array = array.astype(np.int64)
        array[too_big] = -1
    array = np.ascontiguousarray(array, dtype=np.int64)
    if limit is not None and array.size and array.max() >= limit:
        array = np.where(array >= limit, -1, array)
    return array


@dataclass(frozen=True)
class Occurrence:
    """Where a pattern occurs: its suffix-array range, count and first (lowest) offset."""

    count: int
    first_offset: int


class SuffixArraySearch:
    """Binary searches over (tokens, suffix array); both may be memory-mapped.

    `doc_starts` (int64, one more than the datasets) is where each dataset begins in `tokens`,
    then the length; None: one dataset, all of it. With several, each dataset ends with the
    `separator` token, which no query id matches, so no match crosses from one to the next.
    """

    def __init__(
        self,
        tokens: np.ndarray,
        suffix_array: np.ndarray,
        doc_starts: np.ndarray | None = None,
        separator: int | None = None,
    ) -> None:
        if len(tokens) != len(suffix_array):
            raise ValueError(
                f"token array ({len(tokens)}) and suffix array ({len(suffix_array)}) differ in "
                "length: the index is corrupt, rebuild it."
            )
        # Plain ndarray views of the memory maps: same pages, without np.memmap's per-index cost.
        self.tokens = np.asarray(tokens)
        self.sa = np.asarray(suffix_array)
        self.n = len(tokens)
        starts = np.asarray([0, self.n] if doc_starts is None else doc_starts, dtype=np.int64)
        if starts[0] != 0 or starts[-1] != self.n or np.any(np.diff(starts) < 1):
            raise ValueError("dataset starts must rise from 0 to the token count: the index is corrupt, rebuild it.")
        if len(starts) > 2 and separator is None:
            raise ValueError("an index over several datasets needs the separator token between them")
        self.doc_starts = starts
        self.separator = separator
        # Which datasets each block of the suffix array holds (in memory, n/32 bytes), so that
        # dataset_matches skips blocks of datasets already placed; one dataset needs none.
        words = (len(starts) - 2) // 64 + 1
        if len(starts) > 2:
            self._block = 256 * words
            self._masks = np.empty(((self.n + self._block - 1) // self._block, words), dtype=np.uint64)
            kernels.block_masks(self.sa, starts, self._block, self._masks)
        else:
            self._block, self._masks = 1 << 62, np.zeros((1, 1), dtype=np.uint64)
        # Suffix-array range of each first token: the binary search starts inside it, which saves
        # about log2(vocabulary) of its ~log2(n) steps. Suffixes are grouped by first token in
        # token order, so the ranges are the running totals of the token counts.
        counts = np.zeros(0, dtype=np.int64)
        for block in range(0, self.n, _COUNT_BLOCK):  # in blocks: bincount copies to int64
            part = np.bincount(self.tokens[block : block + _COUNT_BLOCK])
            counts = np.pad(counts, (0, max(0, len(part) - len(counts))))
            counts[: len(part)] += part
        self._top_token = len(counts) - 1
        self._first_bounds = np.concatenate([[0], np.cumsum(counts)])

    @property
    def dataset_count(self) -> int:
        return len(self.doc_starts) - 1

    def match_ranges(self, seq: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each start i: the longest L such that seq[i:i+L] occurs (in any dataset), and the
        suffix-array range [lo, hi) of its occurrences (hi - lo of them; (0, 0, 0) when L is 0)."""
        seq = _as_int64_ids(seq, self.separator)
        starts = np.ascontiguousarray(starts, dtype=np.int64)
        if len(starts) and (starts.min() < 0 or starts.max() >= len(seq)):
            raise ValueError("every start must index the sequence")
        lengths, lows, highs = (np.empty(len(starts), dtype=np.int64) for _ in range(3))
        kernels.longest_matches(self.tokens, self.sa, self._first_bounds, seq, starts, lengths, lows, highs)
        return lengths, lows, highs

    def dataset_matches(self, seq, min_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lengths, lows, highs), each (starts, datasets): for every start i of seq (up to the
        last with min_len tokens after it) and dataset k, the longest L >= min_len such that
        seq[i:i+L] occurs in k (0 when shorter), and the suffix-array range holding those
        occurrences (among other datasets'): dataset_occurrences reads them from it."""
        seq = _as_int64_ids(seq, self.separator)
        shape = (max(0, len(seq) - min_len + 1), self.dataset_count)
        lengths, lows, highs = (np.empty(shape, dtype=np.int64) for _ in range(3))
        if shape[0]:
            kernels.dataset_matches(
                self.tokens,
                self.sa,
                self._first_bounds,
                self.doc_starts,
                self._masks,
                self._block,
                seq,
                min_len,
                lengths,
                lows,
                highs,
            )
        return lengths, lows, highs

    def dataset_occurrences(self, lows, highs, datasets) -> tuple[np.ndarray, np.ndarray]:
        """(counts, first offsets): per row, how many suffixes of sa[lo:hi) are in that row's
        dataset and the smallest offset among them, counted from the dataset's start."""
        counts, offsets = (np.empty(len(lows), dtype=np.int64) for _ in range(2))
        as_int = [np.ascontiguousarray(a, dtype=np.int64) for a in (lows, highs, datasets)]
        kernels.dataset_occurrences(self.sa, self.doc_starts, *as_int, counts, offsets)
        return counts, offsets

    def count(self, ngram) -> int:
        """How many times `ngram` (token ids) occurs (in all datasets together); 0 when it
        never does."""
        pattern = _as_int64_ids(ngram, self.separator)
        if pattern.ndim != 1 or len(pattern) == 0:
            raise ValueError("count needs a non-empty 1-D sequence of token ids")
        if pattern.min() < 0:
            return 0
        lo, hi = kernels.pattern_range(self.tokens, self.sa, self._first_bounds, pattern)
        return int(hi - lo)

    def _suffix_prefixes(self, positions: np.ndarray, width: int) -> np.ndarray:
        """The first `width` tokens of the suffixes at `positions`, END past the array's end."""
        idx = positions[:, None] + np.arange(width, dtype=np.int64)
        vals = self.tokens[np.minimum(idx, self.n - 1)].astype(np.int64)
        vals[idx >= self.n] = END
        return vals

    def lower_bound(self, queries: np.ndarray) -> np.ndarray:
        """Per row: the first suffix-array index whose suffix is >= the row (over its width)."""
        q = queries.shape[0]
        # Start inside the first token's range; END sorts before every suffix, TOP and ids the
        # dataset never uses after every suffix.
        head = queries[:, 0]
        seen = (head >= 0) & (head <= self._top_token)
        h = np.clip(head, 0, self._top_token)
        lo = np.where(seen, self._first_bounds[h], np.where(head < 0, 0, self.n))
        hi = np.where(seen, self._first_bounds[h + 1], lo)
        rows = np.arange(q)
        while True:
            active = lo < hi
            if not active.any():
                return lo
            mid = (lo + hi) // 2
            mid_safe = np.minimum(mid, self.n - 1)
            vals = self._suffix_prefixes(self.sa[mid_safe].astype(np.int64), queries.shape[1])
            diff = vals != queries
            first = diff.argmax(axis=1)
            less = diff.any(axis=1) & (vals[rows, first] < queries[rows, first])
            lo = np.where(active & less, mid + 1, lo)
            hi = np.where(active & ~less, mid, hi)

    def _lcp_at(self, sa_index: np.ndarray, queries: np.ndarray) -> np.ndarray:
        """Common-prefix length of each row with the suffix at `sa_index` (-1 or n: none -> 0)."""
        valid = (sa_index >= 0) & (sa_index < self.n)
        safe = np.clip(sa_index, 0, self.n - 1)
        vals = self._suffix_prefixes(self.sa[safe].astype(np.int64), queries.shape[1])
        same = (vals == queries) & (queries != END)
        # Leading run of True: argmin finds the first False; an all-True row matches fully.
        lcp = np.where(same.all(axis=1), queries.shape[1], same.argmin(axis=1))
        return np.where(valid, lcp, 0)

    def longest_matches(self, seq: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """For each start i: the longest L such that seq[i:i+L] occurs in the dataset.

        Compares a window of tokens first and re-searches, with the window doubled, only the rows
        that matched all of it, so long outputs cost what their matches need.
        """
        seq = np.asarray(seq, dtype=np.int64)
        m = len(seq)
        best = np.zeros(len(starts), dtype=np.int64)
        pending = np.arange(len(starts))
        width = _FIRST_WINDOW
        while len(pending):
            width = min(width, m)
            idx = starts[pending][:, None] + np.arange(width, dtype=np.int64)
            queries = np.where(idx < m, seq[np.minimum(idx, m - 1)], END)
            pos = self.lower_bound(queries)
            lcp = np.maximum(self._lcp_at(pos - 1, queries), self._lcp_at(pos, queries))
            best[pending] = lcp
            # A row that matched its whole window may match further: widen and search again.
            more = (lcp == width) & (starts[pending] + width < m)
            pending = pending[more]
            width *= 2
        return best

    def occurrences(self, patterns: list[np.ndarray]) -> list[Occurrence]:
        """Count and first offset (-1 when it never occurs) of each non-empty pattern."""
        if not patterns:
            return []
        width = max(len(p) for p in patterns) + 1
        low = np.full((len(patterns), width), END, dtype=np.int64)
        high = np.full((len(patterns), width), TOP, dtype=np.int64)
        for row, p in enumerate(patterns):
            low[row, : len(p)] = p
            high[row, : len(p)] = p
        # One search for both ends of every range: first suffix >= p+END..., first >= p+TOP...
        bounds = self.lower_bound(np.concatenate([low, high]))
        first, last = bounds[: len(patterns)], bounds[len(patterns) :]
        out = []
        for lo, hi in zip(first.tolist(), last.tolist(), strict=False):
            if hi <= lo:
                out.append(Occurrence(count=0, first_offset=-1))
            else:
                out.append(Occurrence(count=hi - lo, first_offset=int(self.sa[lo:hi].min())))
        return out
