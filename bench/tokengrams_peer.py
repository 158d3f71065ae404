"""EleutherAI's tokengrams (Rust suffix arrays, MIT) as the bench's peer for span search.

The package's `__init__` imports `datasets` (and pyarrow, which needs numpy 2) for a helper the
bench does not use, and installing those would replace the project's pinned transformers, hub
and click; so the Makefile installs it with --no-deps and this module loads its compiled
extension alone. tokengrams answers `contains`, `count` and `positions` for one n-gram; the
maximal spans come from a Python loop over it, the way its users drive it: per output start a
galloping then binary search on the match length.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path

import numpy as np

from oracle.attribution.spans import RawSpan


def load_tokengrams():
    """The `tokengrams` extension module (its InMemoryIndex), without the package's __init__."""
    spec = importlib.util.find_spec("tokengrams")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "tokengrams is not installed: `make setup` installs it (pip install --no-deps tokengrams==0.3.3)"
        )
    compiled = next(Path(spec.submodule_search_locations[0]).glob("tokengrams.cpython-*.so"))
    loader = importlib.machinery.ExtensionFileLoader("tokengrams", str(compiled))
    module = importlib.util.module_from_spec(
        importlib.util.spec_from_file_location("tokengrams", compiled, loader=loader)
    )
    loader.exec_module(module)
    return module


def build_index(tokengrams, tokens: np.ndarray, vocab: int):
    return tokengrams.InMemoryIndex(np.asarray(tokens).tolist(), vocab=vocab)


def _longest(index, ids: list[int], start: int) -> int:
    """The longest L such that ids[start:start+L] occurs (occurrence is monotone in L)."""
    end = len(ids)
    if not index.contains(ids[start : start + 1]):
        return 0
    good, bad = 1, None
    while start + good < end:
        trial = min(good * 2, end - start)
        if index.contains(ids[start : start + trial]):
            good = trial
        else:
            bad = trial
            break
    while bad is not None and bad - good > 1:
        middle = (good + bad) // 2
        if index.contains(ids[start : start + middle]):
            good = middle
        else:
            bad = middle
    return good


def maximal_spans(index, output: np.ndarray, min_tokens: int) -> list[RawSpan]:
    """The spans oracle.attribution.spans.maximal_spans finds, through tokengrams' queries."""
    ids = np.asarray(output).tolist()
    spans: list[RawSpan] = []
    reach = 0
    for start in range(len(ids) - min_tokens + 1):
        length = _longest(index, ids, start)
        if length >= min_tokens and start + length > reach:
            ngram = ids[start : start + length]
            spans.append(RawSpan(start, start + length, min(index.positions(ngram)), index.count(ngram)))
            reach = start + length
    return spans
