"""Sentence embeddings for the compute agent, on the shared MiniLM embedder of `tributa.ml`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from tributa.runtime.errors import InferenceInputError
from tributa.runtime.generation import default_device
from pathlib import Path

from tributa.ml.embeddings import Embedder, load_embedder, model_dir

MAX_TEXTS = 256


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
        shipped = folder is None or Path(folder).resolve() == model_dir().resolve()
        self._embedder = load_embedder(self.device) if shipped else Embedder(Path(folder).resolve(), self.device)
        self.load_seconds = time.perf_counter() - started
        self.model_id: str = self._embedder.model_id if shipped else weights_digest(Path(folder).resolve())
        self.dim: int = self._embedder.dim

    def embed(self, texts: Sequence[str]) -> EmbeddingResult:
        """Embed `texts` (1 to MAX_TEXTS strings) -> (len(texts), dim) float32, L2-normalised."""
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise InferenceInputError("texts must be a list of strings; wrap one text as [text]")
        if not 1 <= len(texts) <= MAX_TEXTS:
            raise InferenceInputError(
                f"texts must hold 1 to {MAX_TEXTS} strings, got {len(texts)}"
            )
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InferenceInputError(f"texts[{i}] is {type(text).__name__}, expected a string")
        started = time.perf_counter()
        vectors = self._embedder.encode(list(texts))
        return EmbeddingResult(
            vectors=vectors,
            model_id=self.model_id,
            dim=self.dim,
            timings={"embed_ms": (time.perf_counter() - started) * 1e3},
        )
