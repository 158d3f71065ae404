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
    for folder in (Path.home() / ".cache" / "tributa-numba", Path(tempfile.gettempdir()) / f"tributa-numba-{os.getuid()}"):
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
def _match(tokens, sa, first_bounds, seq, begin, end):
    """(length, lo, hi): the longest prefix of seq[begin:end] that occurs, and the suffix-array
    range of its occurrences ((0, 0, 0) when not even its first token does)."""
    top = first_bounds.shape[0] - 2
    first = np.int64(seq[begin])
    if first < 0 or first > top or first_bounds[first] == first_bounds[first + 1]:
        return np.int64(0), np.int64(0), np.int64(0)
    lo = np.int64(first_bounds[first])
    hi = np.int64(first_bounds[first + 1])
    depth = np.int64(1)
    while begin + depth < end:
        token = np.int64(seq[begin + depth])
        if token < 0:  # no token (END is -1 inside the search): it matches nothing
            break
        if hi - lo == 1:  # one suffix left: compare along it
            position = np.int64(sa[lo])
            while begin + depth < end and np.int64(seq[begin + depth]) >= 0 and \
                    _token_at(tokens, position + depth) == np.int64(seq[begin + depth]):
                depth += 1
            break
        nlo, nhi = _narrow(tokens, sa, lo, hi, depth, token)
        if nlo >= nhi:
            break
        lo = nlo
        hi = nhi
        depth += 1
    return depth, lo, hi


@nb.njit(cache=_CACHE, nogil=True)
def longest_matches(tokens, sa, first_bounds, seq, starts, lengths, lows, highs):
    """For each start: the longest match of seq[start:] and its suffix-array range, written
    into `lengths`, `lows` and `highs`."""
    m = seq.shape[0]
    for row in range(starts.shape[0]):
        length, lo, hi = _match(tokens, sa, first_bounds, seq, np.int64(starts[row]), m)
        lengths[row] = length
        lows[row] = lo
        highs[row] = hi


@nb.njit(cache=_CACHE, nogil=True)
def pattern_range(tokens, sa, first_bounds, pattern):
    """The suffix-array range of the occurrences of the whole `pattern` (lo == hi: none)."""
    length, lo, hi = _match(tokens, sa, first_bounds, pattern, np.int64(0), pattern.shape[0])
    if length < pattern.shape[0]:
        return np.int64(0), np.int64(0)
    return lo, hi


@nb.njit(cache=_CACHE, nogil=True)
def smallest_positions(sa, lows, highs, out):
    """For each range: the smallest position in sa[lo:hi) (the first occurrence), -1 if empty."""
    for row in range(lows.shape[0]):
        best = np.int64(-1)
        for k in range(lows[row], highs[row]):
            position = np.int64(sa[k])
            if best < 0 or position < best:
                best = position
        out[row] = best
