"""Embedding answers agree when every vector points the same way, within `min_cosine`."""

from __future__ import annotations

from typing import Any

import numpy as np


def embeddings_agree(a: dict[str, Any], b: dict[str, Any], min_cosine: float) -> bool:
    """Same model, same dim and count, and every row pair's cosine similarity >= min_cosine."""
    if a.get("model") != b.get("model") or a.get("dim") != b.get("dim"):
        return False
    try:
        va = np.asarray(a.get("vectors"), dtype=np.float64)
        vb = np.asarray(b.get("vectors"), dtype=np.float64)
    except (TypeError, ValueError):  # ragged or non-numeric rows
        return False
    if va.ndim != 2 or va.shape != vb.shape or va.shape[0] == 0 or va.shape[1] != a.get("dim"):
        return False
    norms = np.linalg.norm(va, axis=1) * np.linalg.norm(vb, axis=1)
    if not np.all(np.isfinite(norms)) or np.any(norms == 0):
        return False
    cosines = np.einsum("ij,ij->i", va, vb) / norms
    return bool(np.all(cosines >= min_cosine))
