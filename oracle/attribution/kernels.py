"""The span search's inner loops, compiled with numba, over the index's own arrays.

Why numba: it ships as a wheel (with llvmlite) for this Python, so `make` installs it with pip
and no compiler or toolchain is needed at install or run time; the kernels stay ordinary,
readable Python that the numpy reference (suffix_array.py) is checked against; and it is kept
by the team behind numpy's own ecosystem (Anaconda, NumFOCUS). `cache=True` keeps each compiled
kernel on disk, so only the first process on a machine pays the ~1 s compile; `nogil=True` lets
the oracle's threads search at once.

The search narrows rather than bisects from scratch: the suffixes that start with the output's
first d tokens form one contiguous range of the suffix array, sorted by their (d+1)-th token (a
suffix that ends there first), so each further token is two binary searches inside the range
left by the last one, and a range of one suffix is followed by plain comparison. A start's last
non-empty range is exactly where its longest match occurs: its size is the count and its
smallest position the first offset, so nothing is searched twice.

Over an index of several datasets (corpus.py) the same narrowing serves all of them: the ranges
it passes through are nested, so each dataset's longest match is the deepest range holding one
of its suffixes, and its count and first offset are read from that range (dataset_matches,
dataset_occurrences). The reading costs the suffixes matching min_span_tokens or more tokens;
a corpus full of one repeated passage makes that large, as it makes a one-dataset count large.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _prepare_cache() -> bool:
    """Whether the kernels can be cached on disk; points numba at a folder it can write when its
    default (`__pycache__` beside this file) is not writable, e.g. a read-only install run by a
    service user. numba raises at import when it finds no writable folder: then compile per
    process (about a second) instead of failing."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return True
    beside = Path(__file__).resolve().parent
    if os.access(beside / "__pycache__" if (beside / "__pycache__").exists() else beside, os.W_OK):
        return True
    for folder in (
        Path.home() / ".cache" / "tributa-numba",
        Path(tempfile.gettempdir()) / f"tributa-numba-{os.getuid()}",
    ):
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            if folder.stat().st_uid == os.getuid() and os.access(folder, os.W_OK):  # not another user's
                os.environ["NUMBA_CACHE_DIR"] = str(folder)
                return True
        except OSError:
            continue
    return False


_CACHE = _prepare_cache()

import numba as nb  # noqa: E402 - after NUMBA_CACHE_DIR is settled: numba reads it on import
import numpy as np  # noqa: E402


@nb.njit(cache=_CACHE, nogil=True)
def _token_at(tokens, position):
    """The token at `position`, or -1 (END: the suffix has ended) past the array's end."""
    if position >= tokens.shape[0]:
        return np.int64(-1)
    return np.int64(tokens[position])


@nb.njit(cache=_CACHE, nogil=True)
def _narrow(tokens, sa, lo, hi, depth, token):
    """Within sa[lo:hi), whose suffixes share their first `depth` tokens, the sub-range whose
    token at `depth` is `token` (empty: lo == hi)."""
    a = lo
    b = hi
    while a < b:  # the first suffix whose token at depth is >= token
        mid = (a + b) >> 1
        if _token_at(tokens, np.int64(sa[mid]) + depth) < token:
            a = mid + 1
        else:
            b = mid
    start = a
    b = hi
    while a < b:  # the first suffix whose token at depth is > token
        mid = (a + b) >> 1
        if _token_at(tokens, np.int64(sa[mid]) + depth) <= token:
            a = mid + 1
        else:
            b = mid
    return start, a


@nb.njit(cache=_CACHE, nogil=True)
def _match(tokens, sa, first_bounds, seq, begin, end, range_lo, range_hi):
    """(length, lo, hi): the longest prefix of seq[begin:end] that occurs, and the suffix-array
    range of its occurrences ((0, 0, 0) when not even its first token does). When range_lo has
    room, the range at each depth d (the suffixes sharing d tokens with it) goes to
    range_lo[d], range_hi[d]: nested, each inside the one before."""
    top = first_bounds.shape[0] - 2
    record = range_lo.shape[0] > 0
    first = np.int64(seq[begin])
    if first < 0 or first > top or first_bounds[first] == first_bounds[first + 1]:
        return np.int64(0), np.int64(0), np.int64(0)
    lo = np.int64(first_bounds[first])
    hi = np.int64(first_bounds[first + 1])
    depth = np.int64(1)
    if record:
        range_lo[1] = lo
        range_hi[1] = hi
    while begin + depth < end:
        token = np.int64(seq[begin + depth])
        if token < 0:  # no token (END is -1 inside the search): it matches nothing
            break
        if hi - lo == 1:  # one suffix left: compare along it
            position = np.int64(sa[lo])
            while (
                begin + depth < end
                and np.int64(seq[begin + depth]) >= 0
                and _token_at(tokens, position + depth) == np.int64(seq[begin + depth])
            ):
                depth += 1
                if record:
                    range_lo[depth] = lo
                    range_hi[depth] = hi
            break
        nlo, nhi = _narrow(tokens, sa, lo, hi, depth, token)
        if nlo >= nhi:
            break
        lo = nlo
        hi = nhi
        depth += 1
        if record:
            range_lo[depth] = lo
            range_hi[depth] = hi
    return depth, lo, hi


@nb.njit(cache=_CACHE, nogil=True)
def longest_matches(tokens, sa, first_bounds, seq, starts, lengths, lows, highs):
    """For each start: the longest match of seq[start:] and its suffix-array range, written
    into `lengths`, `lows` and `highs`."""
    m = seq.shape[0]
    none = np.empty(0, dtype=np.int64)
    for row in range(starts.shape[0]):
        length, lo, hi = _match(tokens, sa, first_bounds, seq, np.int64(starts[row]), m, none, none)
        lengths[row] = length
        lows[row] = lo
        highs[row] = hi


@nb.njit(cache=_CACHE, nogil=True)
def pattern_range(tokens, sa, first_bounds, pattern):
    """The suffix-array range of the occurrences of the whole `pattern` (lo == hi: none)."""
    none = np.empty(0, dtype=np.int64)
    length, lo, hi = _match(tokens, sa, first_bounds, pattern, np.int64(0), pattern.shape[0], none, none)
    if length < pattern.shape[0]:
        return np.int64(0), np.int64(0)
    return lo, hi


@nb.njit(cache=_CACHE, nogil=True)
def _dataset_of(doc_starts, position):
    """The dataset holding `position`: the last k with doc_starts[k] <= position. Without
    branches on the data (a select per step): suffix-array order makes them unpredictable."""
    a = np.int64(0)
    size = np.int64(doc_starts.shape[0] - 1)
    while size > 1:
        half = size >> 1
        a = a + half if doc_starts[a + half] <= position else a
        size -= half
    return a


@nb.njit(cache=_CACHE, nogil=True)
def block_masks(sa, doc_starts, block, masks):
    """masks[b, k // 64] has bit k % 64 set when dataset k has a suffix in block b of sa."""
    masks[:] = 0
    for b in range(masks.shape[0]):
        for j in range(b * block, min((b + 1) * block, sa.shape[0])):
            k = _dataset_of(doc_starts, np.int64(sa[j]))
            masks[b, k >> 6] |= np.uint64(1) << np.uint64(k & 63)


@nb.njit(cache=_CACHE, nogil=True)
def _place(sa, doc_starts, masks, block, placed, a, b, row, depth, lo, hi, lengths, lows, highs, found):
    """Give every dataset not yet placed that has a suffix in sa[a:b) this depth and range;
    returns how many datasets are placed now. A whole block whose datasets are all placed is
    skipped at once, so a range full of one dataset's repeats costs its blocks, not its suffixes."""
    n_docs = doc_starts.shape[0] - 1
    j = a
    while j < b:
        if j % block == 0 and j + block <= b:
            fresh = False
            for w in range(placed.shape[0]):
                if masks[j // block, w] & ~placed[w]:
                    fresh = True
                    break
            if not fresh:
                j += block
                continue
        k = _dataset_of(doc_starts, np.int64(sa[j]))
        if lengths[row, k] == 0:
            lengths[row, k] = depth
            lows[row, k] = lo
            highs[row, k] = hi
            placed[k >> 6] |= np.uint64(1) << np.uint64(k & 63)
            found += 1
            if found == n_docs:
                break
        j += 1
    return found


@nb.njit(cache=_CACHE, nogil=True)
def dataset_matches(tokens, sa, first_bounds, doc_starts, masks, block, seq, min_len, lengths, lows, highs):
    """For each start i < lengths.shape[0] and dataset k of a multi-dataset index: the longest
    match L of seq[i:] inside dataset k, when L >= min_len (else 0), and the suffix-array range
    at that depth (k's occurrences lie in it, beside other datasets').

    One narrowing per start serves every dataset: the ranges it passes through are nested, so
    a dataset's longest match is the deepest range holding one of its suffixes. Each range is
    read only where the deeper one did not reach, deepest first and down to min_len, and the
    reading stops once every dataset is placed (masks: block_masks)."""
    m = seq.shape[0]
    n_docs = doc_starts.shape[0] - 1
    range_lo = np.empty(m + 1, dtype=np.int64)
    range_hi = np.empty(m + 1, dtype=np.int64)
    placed = np.empty(masks.shape[1], dtype=np.uint64)
    for i in range(lengths.shape[0]):
        lengths[i, :] = 0
        lows[i, :] = 0
        highs[i, :] = 0
        depth, _, _ = _match(tokens, sa, first_bounds, seq, np.int64(i), m, range_lo, range_hi)
        if depth < min_len:
            continue
        placed[:] = 0
        found = 0
        inner_lo = range_lo[depth]
        inner_hi = inner_lo  # the deeper range, already read (none below the deepest)
        d = depth
        while d >= min_len and found < n_docs:
            lo = range_lo[d]
            hi = range_hi[d]
            found = _place(
                sa, doc_starts, masks, block, placed, lo, inner_lo, i, d, lo, hi, lengths, lows, highs, found
            )
            if found < n_docs:
                found = _place(
                    sa, doc_starts, masks, block, placed, inner_hi, hi, i, d, lo, hi, lengths, lows, highs, found
                )
            inner_lo = lo
            inner_hi = hi
            d -= 1


@nb.njit(cache=_CACHE, nogil=True)
def dataset_occurrences(sa, doc_starts, lows, highs, docs, counts, offsets):
    """For each row: how many suffixes of sa[lo:hi) lie in dataset docs[row], and the smallest
    offset among them inside that dataset (-1 when none)."""
    for row in range(lows.shape[0]):
        begin = doc_starts[docs[row]]
        stop = doc_starts[docs[row] + 1]
        count = np.int64(0)
        best = np.int64(-1)
        for j in range(lows[row], highs[row]):
            position = np.int64(sa[j])
            if begin <= position < stop:
                count += 1
                if best < 0 or position < best:
                    best = position
        counts[row] = count
        offsets[row] = best - begin if best >= 0 else -1
