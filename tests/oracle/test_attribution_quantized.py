"""The quantized MiniLM the oracle attributes with (oracle/attribution/quantized.py): the float32
embedder's word pieces, the same bits whatever the batch, the thread count or the integer product,
and attributions that agree with float32 MiniLM's on the sample datasets and the shipped corpora.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from oracle.attribution import (
    AttributionEngine,
    AttributionIndex,
    as_tokenizer,
    quantized,
)
from oracle.attribution.service import DatasetIndexes
from tests.oracle.support import ASTRO, BAKING
from tributa.ml.embeddings import MODEL_ID, load_embedder
from tributa.ml.tokenizer import DATASETS_DIR, demo_dataset_dirs, load_tokenizer, read_dataset_text

ODD = "Ünïcödé façade naïve — 東京 🚀 tab\tend, don't  stop!\n\n0123456789"


@pytest.fixture(scope="module")
def tokenizer():
    return as_tokenizer(load_tokenizer())


@pytest.fixture(scope="module")
def float32():
    """Float32 MiniLM on one torch thread, as the quantized one runs (two threads on a loaded
    2-core machine make each of its forwards many times slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_embedder("cpu")
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def int8():
    return quantized.load_quantized_embedder()


@pytest.fixture(scope="module")
def windows(tokenizer) -> list[str]:
    """64-token windows of the sample datasets and of each shipped corpus, as attribution cuts them."""
    rng = np.random.default_rng(17)
    out = []
    for text in [ASTRO, BAKING] + [read_dataset_text(DATASETS_DIR / n) for n in sorted(demo_dataset_dirs())]:
        ids = np.asarray(tokenizer.encode(text))
        out += [tokenizer.decode(ids[s : s + 64].tolist()) for s in rng.integers(0, len(ids) - 64, 12).tolist()]
    return out


def test_quantized__model_id__names_the_recipe(int8):
    assert int8.model_id == f"{MODEL_ID}+{quantized.RECIPE}" and int8.model_id != MODEL_ID
    assert int8.dim == 384


def test_quantized__word_pieces__the_float32_embedders_own_with_its_truncation(float32, int8, windows):
    long = ASTRO * 6  # > 256 word pieces: truncated, [SEP] kept last
    for text in [*windows[:6], ASTRO, BAKING, long, ODD, "", "x"]:
        expected = float32._tokenizer(text, truncation=True, max_length=float32.max_seq_length)["input_ids"]
        assert int8.token_ids([text])[0] == expected
    assert len(int8.token_ids([long])[0]) == float32.max_seq_length


def test_quantized__a_text_alone_or_in_any_batch__the_same_bits(int8, windows):
    alone = np.stack([int8.encode([w])[0] for w in windows])
    for batch_size in (1, 5, 32):
        assert np.array_equal(int8.encode(windows, batch_size=batch_size), alone)
    assert np.array_equal(int8.encode(windows[::-1]), alone[::-1])
    assert np.array_equal(int8.encode([ODD, windows[0], ODD])[1], alone[0])


def test_quantized__one_or_two_torch_threads__the_same_bits(int8, windows, monkeypatch):
    import torch

    monkeypatch.setattr(int8, "threads", None)  # torch's own setting, not the one thread it pins
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = int8.encode(windows)
        torch.set_num_threads(2)
        two = int8.encode(windows)
    finally:
        torch.set_num_threads(before)
    assert np.array_equal(one, two)


def test_quantized__without_int_mm__float64_products_give_the_same_bits(int8, windows, monkeypatch):
    with_int_mm = int8.encode(windows[:8])
    monkeypatch.setattr(quantized, "_use_int_mm", False)
    assert np.array_equal(int8.encode(windows[:8]), with_int_mm)


def test_quantized__vectors__unit_length_and_close_to_float32_minilm(float32, int8, windows):
    a, b = float32.encode(windows), int8.encode(windows)
    assert np.allclose(np.linalg.norm(b, axis=1), 1, atol=1e-5)
    assert (a * b).sum(axis=1).min() >= 0.997  # measured: >= 0.9989
    assert np.abs(a @ a.T - b @ b.T).max() <= 0.03  # cosines between texts: measured <= 0.014


def test_quantized__attributions__agree_with_float32_minilm(tmp_path, tokenizer, float32, int8):
    """Same outputs, same datasets (the sample datasets and the shipped corpora), indexed and
    queried with each embedder: the quantized top-k holds most of float32's chunks, each weight
    moves by a few basis points at most, and verbatim quotes weigh the same."""
    texts = {"astro": ASTRO, "baking": BAKING} | {
        n: read_dataset_text(DATASETS_DIR / n) for n in sorted(demo_dataset_dirs())
    }
    engines = {}
    for name, embedder in (("float32", float32), ("int8", int8)):
        built = [
            AttributionIndex.build(d, t, tokenizer, embedder, tmp_path / name / d, progress=lambda *a: None)
            for d, t in texts.items()
        ]
        engines[name] = AttributionEngine(built, tokenizer, embedder)
    outputs = _outputs(tokenizer, texts)
    recall, moved, same = [], [], 0
    for output in outputs:
        a, b = engines["float32"].attribute(output), engines["int8"].attribute(output)
        chunks_a = {(c.dataset_id, c.chunk_index) for c in a.chunks}
        chunks_b = {(c.dataset_id, c.chunk_index) for c in b.chunks}
        if chunks_a:
            recall.append(len(chunks_a & chunks_b) / len(chunks_a))
        datasets = set(a.weights_bps) | set(b.weights_bps)
        moved.append(max((abs(a.weights_bps.get(d, 0) - b.weights_bps.get(d, 0)) for d in datasets), default=0))
        same += a.weights_bps == b.weights_bps
        assert a.spans == b.spans
    # Measured on this project's 2-core AMD EPYC: recall 0.96, largest move 11 bps, 82% identical.
    assert np.mean(recall) >= 0.9
    assert max(moved) <= 40 and np.median(moved) <= 2
    assert same >= 0.6 * len(outputs)
    for quote in (ASTRO[:160], BAKING[:150]):
        a, b = engines["float32"].attribute(quote), engines["int8"].attribute(quote)
        assert a.spans == b.spans and set(a.weights_bps) == set(b.weights_bps)
        assert all(abs(a.weights_bps[d] - b.weights_bps[d]) <= 20 for d in a.weights_bps)


def _outputs(tokenizer, texts: dict[str, str]) -> list[np.ndarray]:
    """64-token outputs as the bench draws them from the shipped corpora (a slice of one, or halves
    of two), every fourth with a third of its tokens replaced from a third corpus, so that many
    reach the semantic threshold without a verbatim span."""
    corpora = [np.asarray(tokenizer.encode(texts[n])) for n in sorted(demo_dataset_dirs())]
    rng = np.random.default_rng(7)
    outputs = []
    for q in range(60):
        a = corpora[q % 3]
        start = int(rng.integers(0, len(a) - 64))
        ids = a[start : start + 64].copy()
        if q % 3 == 2:
            b = corpora[(q + 1) % 3]
            other = int(rng.integers(0, len(b) - 32))
            ids[32:] = b[other : other + 32]
        if q % 4 == 3:
            swap = rng.random(64) < 0.33
            c = corpora[(q + 2) % 3]
            ids[swap] = c[rng.integers(0, len(c), int(swap.sum()))]
        outputs.append(ids)
    return outputs


def test_dataset_indexes__index_of_another_embedder__stale_until_built_again(tmp_path, tokenizer, float32, int8):
    AttributionIndex.build("cid-a", ASTRO, tokenizer, float32, tmp_path / "cid-a", progress=lambda *a: None)
    AttributionIndex.build("cid-b", BAKING, tokenizer, None, tmp_path / "cid-b", progress=lambda *a: None)
    indexes = DatasetIndexes(tmp_path, tokenizer, int8)
    assert indexes.stale("cid-a") == MODEL_ID and not indexes.has("cid-a")
    assert indexes.stale("cid-b") is None and indexes.has("cid-b")  # span-only: nothing to compare
    assert indexes.stale("cid-c") is None and not indexes.has("cid-c")
    indexes.build("cid-a", ASTRO)
    assert indexes.stale("cid-a") is None and indexes.has("cid-a")
    assert AttributionIndex.load(tmp_path / "cid-a").manifest.embedder_id == int8.model_id
    assert DatasetIndexes(tmp_path, tokenizer, float32).stale("cid-a") == int8.model_id
