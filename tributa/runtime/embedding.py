"""Sentence embeddings for the compute agent, on the shared MiniLM embedder of `tributa.ml`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tributa.ml.embeddings import Embedder, load_embedder, model_dir
from tributa.runtime.errors import InferenceInputError
from tributa.runtime.generation import default_device

MAX_TEXTS = 256
CHUNK_TEXTS = 32  # texts per forward pass unless the caller says otherwise (the worker: its max_batch)


@dataclass(frozen=True)
class EmbeddingResult:
    """Unit-length float32 vectors, one row per input text, in input order."""

    vectors: np.ndarray = field(compare=False)
    model_id: str
    dim: int
    timings: dict[str, float] = field(compare=False)


class EmbeddingRunner:
    """One sentence-transformers folder loaded once per device (default: the shipped MiniLM);
    texts longer than its window are truncated, as in sentence-transformers.

    The folder is served as itself: its own weights and pooling, and a model id that names it
    (MiniLM's name, else the digest of its weights), never a stand-in."""

    def __init__(self, device: str | None = None, folder: Path | None = None) -> None:
        from tributa.runtime.generation import weights_digest

        self.device = device or default_device()
        started = time.perf_counter()
        # None: the shipped MiniLM (no folder given, or the one it ships in)
        own = None if folder is None or Path(folder).resolve() == model_dir().resolve() else Path(folder).resolve()
        self._embedder = load_embedder(self.device) if own is None else Embedder(own, self.device)
        self.load_seconds = time.perf_counter() - started
        self.model_id: str = self._embedder.model_id if own is None else weights_digest(own)
        self.dim: int = self._embedder.dim

    def embed(self, texts: Sequence[str], chunk: int = CHUNK_TEXTS) -> EmbeddingResult:
        """Embed `texts` (1 to MAX_TEXTS strings) -> (len(texts), dim) float32, L2-normalised."""
        result = self.embed_many([texts], chunk)[0]
        if isinstance(result, InferenceInputError):
            raise result
        return result

    def embed_many(
        self, jobs: Sequence[Sequence[str]], chunk: int = CHUNK_TEXTS
    ) -> list[EmbeddingResult | InferenceInputError]:
        """Several jobs' texts embedded together, one result per job in job order.

        All valid jobs' texts are sorted by token length (longest first, ties in job and text
        order) and run `chunk` at a time, so short texts of one job pad alongside short texts of
        another; each job gets its rows back in its own input order. A vector thus depends on its
        chunk-mates' padding in the last bits, which the acceptance rule allows (cosine, not
        bytes). A job with bad input gets its InferenceInputError in its slot; the others run."""
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        slots: list[EmbeddingResult | InferenceInputError | None] = [None] * len(jobs)
        rows: list[tuple[int, int, str]] = []  # (job, index in the job, text)
        for j, texts in enumerate(jobs):
            try:
                _check_texts(texts)
            except InferenceInputError as exc:
                slots[j] = exc
                continue
            rows.extend((j, i, text) for i, text in enumerate(texts))
        if rows:
            started = time.perf_counter()
            lengths = self._token_lengths([text for _, _, text in rows])
            order = sorted(range(len(rows)), key=lambda r: (-lengths[r], r))
            vectors = np.zeros((len(rows), self.dim), dtype=np.float32)
            for start in range(0, len(order), chunk):
                part = order[start : start + chunk]
                # One forward pass per chunk: the batch size is the chunk itself.
                vectors[part] = self._embedder.encode([rows[r][2] for r in part], batch_size=len(part))
            timings = {
                "embed_ms": (time.perf_counter() - started) * 1e3,
                "batch_jobs": float(len(jobs) - sum(isinstance(s, InferenceInputError) for s in slots)),
                "batch_texts": float(len(rows)),
            }
            mine: dict[int, list[int]] = {}
            for r, (j, _, _) in enumerate(rows):  # rows are in job order, then text order
                mine.setdefault(j, []).append(r)
            for j, picked in mine.items():
                slots[j] = EmbeddingResult(
                    vectors=vectors[picked], model_id=self.model_id, dim=self.dim, timings=dict(timings)
                )
        return slots  # type: ignore[return-value]

    def _token_lengths(self, texts: list[str]) -> list[int]:
        # The embedder's own tokenizer and window: the lengths its batches will pad to.
        embedder = self._embedder
        ids = embedder._tokenizer(texts, truncation=True, max_length=embedder.max_seq_length)["input_ids"]
        return [len(row) for row in ids]


def _check_texts(texts: object) -> None:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise InferenceInputError("texts must be a list of strings; wrap one text as [text]")
    if not 1 <= len(texts) <= MAX_TEXTS:
        raise InferenceInputError(f"texts must hold 1 to {MAX_TEXTS} strings, got {len(texts)}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InferenceInputError(f"texts[{i}] is {type(text).__name__}, expected a string")
