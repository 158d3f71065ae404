"""Semantic evidence: an output's embedding windows against each dataset's chunk embeddings."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .screen import ChunkScreen, candidates
from .tokenizer import EmbedderLike

SCORE_SCALE = 10_000  # cosines are rounded to 4 decimals before anything else uses them


def window_starts(n_tokens: int, size: int, stride: int) -> np.ndarray:
    """Starts of windows covering 0..n_tokens: every `stride`, plus one flush with the end."""
    if n_tokens <= size:
        return np.zeros(1, dtype=np.int64)
    starts = list(range(0, n_tokens - size + 1, stride))
    if starts[-1] + size < n_tokens:
        starts.append(n_tokens - size)  # so the tail is embedded too
    return np.asarray(starts, dtype=np.int64)


def window_texts(tokens: np.ndarray, starts: np.ndarray, size: int, decode: Callable[[list[int]], str]) -> list[str]:
    return [decode(tokens[s : s + size].tolist()) for s in starts.tolist()]


def embed_texts(
    texts: Sequence[str],
    embedder: EmbedderLike,
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Embed in batches (reporting progress per batch); float32, one unit-length row per text."""
    parts = []
    for start in range(0, len(texts), batch_size):
        parts.append(np.asarray(embedder.encode(texts[start : start + batch_size]), np.float32))
        if on_batch is not None:
            on_batch(min(start + batch_size, len(texts)))
    if not parts:
        return np.zeros((0, embedder.dim), dtype=np.float32)
    return np.concatenate(parts, axis=0)


@dataclass(frozen=True)
class ChunkScore:
    """One chunk's best cosine with any output window, in 1/10000 units."""

    dataset_id: str
    chunk_index: int
    score_e4: int


def top_chunks(
    queries: np.ndarray,
    chunks: Mapping[str, tuple[np.ndarray, ChunkScreen]],
    threshold_e4: int,
    top_k: int,
) -> list[ChunkScore]:
    """The top_k chunks over all datasets whose rounded cosine reaches the threshold.

    `chunks` maps each dataset to its (float16 embeddings, screen). The screen leaves every
    chunk that can reach the threshold (screen.py), and those are scored by one float32
    product with the queries, as the whole-matrix product (top_chunks_reference) scores them.
    """
    left = candidates({d: s for d, (_, s) in chunks.items()}, queries, (threshold_e4 - 0.5) / SCORE_SCALE)
    hits: list[ChunkScore] = []
    for dataset_id in sorted(chunks):
        rows = left[dataset_id]
        if len(rows):
            hits.extend(_above(dataset_id, rows, queries, chunks[dataset_id][0][rows], threshold_e4, top_k))
    return _first(hits, top_k)


def top_chunks_reference(
    queries: np.ndarray, matrices: Mapping[str, np.ndarray], threshold_e4: int, top_k: int
) -> list[ChunkScore]:
    """The same from a product with every chunk: what top_chunks is checked against."""
    hits: list[ChunkScore] = []
    for dataset_id in sorted(matrices):
        rows = np.arange(len(matrices[dataset_id]))
        hits.extend(_above(dataset_id, rows, queries, matrices[dataset_id], threshold_e4, top_k))
    return _first(hits, top_k)


def _above(
    dataset_id: str, rows: np.ndarray, queries: np.ndarray, matrix: np.ndarray, threshold_e4: int, top_k: int
) -> list[ChunkScore]:
    """The chunks `rows` (whose embeddings are `matrix`) reaching the threshold: this dataset's
    top_k of them, plus ties at the cut, before the global sort."""
    if len(rows) == 0:
        return []
    best = (queries @ np.asarray(matrix, dtype=np.float32).T).max(axis=0)
    scores = np.rint(best.astype(np.float64) * SCORE_SCALE).astype(np.int64)
    above = np.flatnonzero(scores >= threshold_e4)
    if len(above) > top_k:
        cut = np.partition(scores[above], len(above) - top_k)[len(above) - top_k]
        above = above[scores[above] >= cut]
    return [ChunkScore(dataset_id, int(rows[i]), int(scores[i])) for i in above]


def _first(hits: list[ChunkScore], top_k: int) -> list[ChunkScore]:
    """Order: score descending, then dataset id, then chunk index, so ties never depend on dict or
    BLAS order. Rounding to 4 decimals first keeps last-bit float differences out of the result."""
    hits.sort(key=lambda h: (-h.score_e4, h.dataset_id, h.chunk_index))
    return hits[:top_k]
