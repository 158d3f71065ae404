"""The tokenizer and embedder shapes the engine accepts, and a stable id for a tokenizer."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

# Hashed when a tokenizer offers no serialised form: same ids for this text -> same tokenizer
# for all practical purposes (covers ASCII, digits, whitespace runs, accents, CJK, emoji).
_PROBE_TEXT = (
    "The quick brown fox jumps over the lazy dog. 0123456789 -- don't  stop!\n\nÜnïcödé façade naïve — 東京 🚀 tab\tend"
)


@runtime_checkable
class TokenizerLike(Protocol):
    """What the engine needs: text -> token ids, and ids -> text (for span text and chunks)."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


@runtime_checkable
class EmbedderLike(Protocol):
    """What the engine needs from an embedder (tributa.ml.embeddings.Embedder fits)."""

    model_id: str
    dim: int

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray: ...


class HFTokenizerAdapter:
    """Presents a `tokenizers.Tokenizer` or a transformers fast tokenizer as a TokenizerLike.

    Special tokens are never added: attribution compares the text's own tokens only.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.inner = tokenizer
        # transformers tokenizers wrap a `tokenizers.Tokenizer` as .backend_tokenizer.
        self._backend = getattr(tokenizer, "backend_tokenizer", None)
        if self._backend is None and _is_tokenizers_tokenizer(tokenizer):
            self._backend = tokenizer
        self.tokenizer_id: str = tokenizer_id(tokenizer)

    def encode(self, text: str) -> list[int]:
        if self._backend is not None:
            return list(self._backend.encode(text, add_special_tokens=False).ids)
        return list(self.inner.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        ids = [int(i) for i in ids]
        if self._backend is not None:
            return self._backend.decode(ids, skip_special_tokens=False)
        return self.inner.decode(ids)


def _is_tokenizers_tokenizer(obj: Any) -> bool:
    return type(obj).__module__.startswith("tokenizers") and hasattr(obj, "to_str")


def as_tokenizer(tokenizer: Any) -> TokenizerLike:
    """Wrap Hugging Face tokenizers; pass through anything that already has encode/decode."""
    if isinstance(tokenizer, HFTokenizerAdapter):
        return tokenizer
    if hasattr(tokenizer, "backend_tokenizer") or _is_tokenizers_tokenizer(tokenizer):
        return HFTokenizerAdapter(tokenizer)
    if callable(getattr(tokenizer, "encode", None)) and callable(getattr(tokenizer, "decode", None)):
        return tokenizer
    raise TypeError(
        f"{type(tokenizer).__name__} is not a tokenizer: pass an object with "
        "encode(text) -> list[int] and decode(ids) -> str, or a Hugging Face tokenizer."
    )


def tokenizer_id(tokenizer: Any) -> str:
    """A stable id: an explicit `tokenizer_id` attribute, else a hash of the serialised vocab and
    merges, else a hash of how it encodes a fixed probe text."""
    explicit = getattr(tokenizer, "tokenizer_id", None)
    if isinstance(explicit, str) and explicit:
        return explicit
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None and _is_tokenizers_tokenizer(tokenizer):
        backend = tokenizer
    if backend is not None:
        return "hf-sha256:" + hashlib.sha256(backend.to_str().encode("utf-8")).hexdigest()[:32]
    ids = np.asarray(tokenizer.encode(_PROBE_TEXT), dtype="<u8").tobytes()
    return "probe-sha256:" + hashlib.sha256(ids).hexdigest()[:32]


def check_embedder(embedder: Any) -> EmbedderLike:
    """Fail early, with the fix, when something that is not an embedder is passed."""
    if not (
        isinstance(getattr(embedder, "model_id", None), str)
        and isinstance(getattr(embedder, "dim", None), int)
        and callable(getattr(embedder, "encode", None))
    ):
        raise TypeError(
            f"{type(embedder).__name__} is not an embedder: pass "
            "tributa.ml.embeddings.load_embedder() (or None for span-only attribution)."
        )
    return embedder
