"""Exact semantic top-k without reading every float: an int8 copy of each chunk matrix screens
out the chunks that cannot reach the threshold, and only the rest are scored on their float16
rows, exactly as a product over the whole matrix would score them.

A row x (float16) is kept as codes c = rint(x / s) in int8, s = max|x_j| / 127, with e =
||x - s c|| and n = ||s c||, both rounded up. A query q is quantized the same way to int16,
q' = t d, with f = ||q - t d||. The screen computes d.c exactly in int32 (no rounding, so no
machine can disagree), and since

    |q.x - s t (d.c)| <= |q.(x - s c)| + |(q - t d).(s c)| <= ||q|| e + f n,

a chunk whose screened score plus that bound stays below the cut can never reach it. SLACK
covers the float32 rounding of the exact pass (under 384 * 2^-24 of ||q|| ||x||). The screen
reads a quarter of the bytes of a float32 matrix (10.5M tokens of chunks: 63 MB, not 252 MB).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .kernels import _CACHE, nb
from .workers import run_split

SLACK = 1e-4
_QUANTIZE_ROWS = 1 << 16  # rows converted at a time at build: the float temporaries stay small
_SCREEN_ROWS = 1 << 15  # rows per screening job (12 MB of codes for 384-d rows)


def _up(values: np.ndarray) -> np.ndarray:
    """float64 -> the float32 at or above each value."""
    down = values.astype(np.float32)
    return np.where(down.astype(np.float64) < values, np.nextafter(down, np.float32(np.inf)), down)


@dataclass(frozen=True)
class ChunkScreen:
    codes: np.ndarray  # (chunks, dim) int8
    bounds: np.ndarray  # (chunks, 3) float32: scale s, error norm e, code norm n (e, n rounded up)

    @classmethod
    def of(cls, embeddings: np.ndarray) -> ChunkScreen:
        """The screen of a (chunks, dim) float matrix."""
        n, dim = embeddings.shape
        codes = np.empty((n, dim), dtype=np.int8)
        bounds = np.empty((n, 3), dtype=np.float32)
        for lo in range(0, n, _QUANTIZE_ROWS):
            rows = np.asarray(embeddings[lo : lo + _QUANTIZE_ROWS], dtype=np.float64)
            scale = (np.abs(rows).max(axis=1) / 127).astype(np.float32)
            scale[scale == 0] = 1  # an all-zero row: codes 0, error 0
            c = np.clip(np.rint(rows / scale[:, None]), -127, 127)
            approx = scale[:, None].astype(np.float64) * c
            codes[lo : lo + len(rows)] = c
            bounds[lo : lo + len(rows), 0] = scale
            bounds[lo : lo + len(rows), 1] = _up(np.linalg.norm(rows - approx, axis=1))
            bounds[lo : lo + len(rows), 2] = _up(np.linalg.norm(approx, axis=1))
        return cls(codes, bounds)

    def matches(self, embeddings: np.ndarray) -> bool:
        return self.codes.shape == embeddings.shape and self.bounds.shape == (embeddings.shape[0], 3)


@nb.njit(cache=_CACHE, nogil=True)
def _dots(codes, queries, lo, hi, out):
    """out[k, i - lo] = codes[i] . queries[k], exactly (|127 * 32767| * 384 < 2^31)."""
    for k in range(queries.shape[0]):
        for i in range(lo, hi):
            acc = np.int32(0)
            for j in range(codes.shape[1]):
                acc += np.int32(codes[i, j]) * np.int32(queries[k, j])
            out[k, i - lo] = acc


@nb.njit(cache=_CACHE, nogil=True)
def _reaching(dots, bounds, qscale, qnorm, qerr, cut, lo, out):
    """Rows lo + i whose screened score plus its bound reaches `cut` for some query: their
    indices go to out[:count]; returns count. (Apart from _dots, whose loop stays vectorised
    only without this one's branches.)"""
    count = 0
    for i in range(dots.shape[1]):
        row = lo + i
        for k in range(dots.shape[0]):
            score = np.float64(dots[k, i]) * (np.float64(bounds[row, 0]) * qscale[k])
            if score + qnorm[k] * bounds[row, 1] + qerr[k] * bounds[row, 2] >= cut:
                out[count] = row
                count += 1
                break
    return count


def _quantize_queries(queries: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(int16 codes, scale t, norm ||q|| and error f rounded up) of each query row."""
    q = np.asarray(queries, dtype=np.float64)
    scale = np.abs(q).max(axis=1) / 32767
    scale[scale == 0] = 1
    codes = np.rint(q / scale[:, None])
    # float64 rounding in these norms is far below SLACK; one step up keeps them upper bounds.
    norm = np.nextafter(np.linalg.norm(q, axis=1), np.inf)
    error = np.nextafter(np.linalg.norm(q - scale[:, None] * codes, axis=1), np.inf)
    return codes.astype(np.int16), scale, norm, error


def candidates(screens: dict[str, ChunkScreen], queries: np.ndarray, cut: float) -> dict[str, np.ndarray]:
    """For each dataset, the sorted indices of the chunks whose exact best cosine with any query
    may reach `cut`: a superset of those that do."""
    codes, qscale, qnorm, qerr = _quantize_queries(queries)
    screens = {d: ChunkScreen(np.asarray(s.codes), np.asarray(s.bounds)) for d, s in screens.items()}  # plain views
    jobs = [
        (d, lo, min(lo + _SCREEN_ROWS, len(s.codes)))
        for d, s in screens.items()
        for lo in range(0, len(s.codes), _SCREEN_ROWS)
    ]

    def run(job):
        d, lo, hi = job
        s = screens[d]
        dots = np.empty((len(codes), hi - lo), dtype=np.int32)
        _dots(s.codes, codes, lo, hi, dots)
        out = np.empty(hi - lo, dtype=np.int64)
        return out[: _reaching(dots, s.bounds, qscale, qnorm, qerr, cut - SLACK, lo, out)]

    found: dict[str, list[np.ndarray]] = {d: [] for d in screens}
    for (d, _, _), rows in zip(jobs, run_split(jobs, run), strict=False):
        found[d].append(rows)
    return {d: np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64) for d, parts in found.items()}
