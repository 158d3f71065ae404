"""One tokenizer and one embedder shared by the indexer's thread and the settler's attributions.

A Hugging Face fast tokenizer is not safe to call from two threads at once (its Rust core can
raise "Already borrowed"), and two concurrent forwards through one torch model only compete for
the same cores. Each call takes a lock instead: calls are short (one text segment, one embedding
batch), so an attribution waits for at most one batch of a build, never for the whole build.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from .tokenizer import as_tokenizer, tokenizer_id


class SerializedTokenizer:
    def __init__(self, tokenizer: Any, lock: threading.Lock) -> None:
        self.inner = as_tokenizer(tokenizer)
        self.tokenizer_id: str = tokenizer_id(self.inner)  # the wrapped tokenizer's id: old indexes stay valid
        self._lock = lock

    def encode(self, text: str) -> list[int]:
        with self._lock:
            return self.inner.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        with self._lock:
            return self.inner.decode(ids)


class SerializedEmbedder:
    def __init__(self, embedder: Any, lock: threading.Lock) -> None:
        self.inner = embedder
        self.model_id: str = embedder.model_id
        self.dim: int = embedder.dim
        self._lock = lock

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        with self._lock:
            return self.inner.encode(texts, batch_size=batch_size)


def serialized(tokenizer: Any, embedder: Any | None) -> tuple[SerializedTokenizer, SerializedEmbedder | None]:
    """The pair behind one lock (idempotent: wrapped models are returned as they are)."""
    if isinstance(tokenizer, SerializedTokenizer):
        return tokenizer, embedder
    lock = threading.Lock()
    return SerializedTokenizer(tokenizer, lock), None if embedder is None else SerializedEmbedder(embedder, lock)
