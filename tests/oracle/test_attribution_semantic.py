"""The semantic half at speed (issue 17): the int8 chunk screen never drops a chunk that reaches
the threshold, so top-k equals a product over the whole matrix; format-1 indexes gain their
screen when loaded; an output's windows are embedded in one call, once."""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oracle.attribution import AttributionEngine, AttributionIndex
from oracle.attribution.screen import ChunkScreen, candidates
from oracle.attribution.semantic import SCORE_SCALE, top_chunks, top_chunks_reference

TEXT = " ".join(f"line {i} says {'abcdefgh'[i % 8] * (1 + i % 5)} and {i * 7 % 13}." for i in range(120))


class Ids:
    tokenizer_id = "test-ids"

    def encode(self, text: str) -> list[int]:
        return list(text.encode())

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids).decode(errors="replace")


class HashEmbedder:
    """Deterministic unit vectors from each text's digest; counts its calls."""

    model_id = "hash-embedder"
    dim = 16

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode(self, texts, batch_size: int = 32) -> np.ndarray:
        self.calls.append(list(texts))
        rows = [np.frombuffer(hashlib.sha256(t.encode()).digest()[: self.dim], dtype=np.uint8) for t in texts]
        vectors = np.asarray(rows, dtype=np.float32).reshape(len(texts), self.dim) - 127.5
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _unit(rng, rows: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((rows, dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    rows=st.integers(1, 300),
    dim=st.integers(1, 48),
    windows=st.integers(1, 4),
    cut=st.floats(-0.5, 0.95),
    tiny=st.booleans(),
)
def test_screen__random_rows_and_queries__keeps_every_row_that_reaches_the_cut(seed, rows, dim, windows, cut, tiny):
    rng = np.random.default_rng(seed)
    x = _unit(rng, rows, dim)
    if tiny:  # float16 subnormals and all-zero rows
        x[::3] *= 1e-6
        x[1::7] = 0
    x16 = x.astype(np.float16)
    queries = _unit(rng, windows, dim).astype(np.float32)
    queries[0] = 0.7 * queries[0] + 0.3 * x16[0]  # one row close to a query: high scores occur
    exact = (queries.astype(np.float64) @ x16.astype(np.float64).T).max(axis=0)
    kept = candidates({"d": ChunkScreen.of(x16)}, queries, cut)["d"]
    assert set(np.flatnonzero(exact >= cut).tolist()) <= set(kept.tolist())
    assert kept.tolist() == sorted(kept.tolist())


@pytest.mark.parametrize("threshold", [0.2, 0.35, 0.5])
def test_top_chunks__screened__equals_the_whole_matrix_product(threshold):
    rng = np.random.default_rng(5)
    matrices = {f"d{k}": _unit(rng, 40_000 + 999 * k, 64).astype(np.float16) for k in range(3)}
    queries = _unit(rng, 3, 64).astype(np.float32)
    queries[1] = (queries[1] + matrices["d1"][7]) / np.linalg.norm(queries[1] + matrices["d1"][7])
    threshold_e4 = round(threshold * SCORE_SCALE)
    chunks = {d: (m, ChunkScreen.of(m)) for d, m in matrices.items()}
    for top_k in (1, 5, 50):
        expected = top_chunks_reference(queries, matrices, threshold_e4, top_k)
        assert top_chunks(queries, chunks, threshold_e4, top_k) == expected
        assert expected  # the bar is reached, so the comparison is not empty


# -- the index format -------------------------------------------------------------------------


def _as_format_1(folder) -> None:
    """Turn a freshly built index into what the previous release wrote."""
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["format_version"] = 1
    for name in ("chunk_screen_codes", "chunk_screen_bounds"):
        (folder / f"{name}.npy").unlink()
        del manifest["bytes"][name]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    np.save(folder / "chunk_embeddings.f32.npy", np.zeros((1, 1), dtype=np.float32))  # its old float32 cache


def test_load__format_1_index__gets_its_screen_written_and_attributes_the_same(tmp_path, caplog):
    embedder = HashEmbedder()
    fresh = AttributionIndex.build("t", TEXT, Ids(), embedder, tmp_path / "fresh", progress=lambda *a: None)
    AttributionIndex.build("t", TEXT, Ids(), embedder, tmp_path / "old", progress=lambda *a: None)
    _as_format_1(tmp_path / "old")
    with caplog.at_level(logging.INFO, logger="tributa.oracle.attribution"):
        upgraded = AttributionIndex.load(tmp_path / "old")
    assert "upgraded from format 1 to 2" in caplog.text
    assert json.loads((tmp_path / "old" / "manifest.json").read_text())["format_version"] == 2
    assert not (tmp_path / "old" / "chunk_embeddings.f32.npy").exists()
    assert isinstance(AttributionIndex.load(tmp_path / "old").chunk_screen_codes, np.memmap)
    assert np.array_equal(upgraded.chunk_screen_codes, fresh.chunk_screen_codes)
    assert np.array_equal(upgraded.chunk_screen_bounds, fresh.chunk_screen_bounds)
    output = TEXT[300:700] + " and other words entirely"
    records = [AttributionEngine([i], Ids(), HashEmbedder()).attribute(output).to_json() for i in (fresh, upgraded)]
    assert records[0] == records[1]


def test_load__format_1_index_in_a_read_only_folder__screen_kept_in_memory(tmp_path, caplog):
    from bench.chaos_bench import immutable_supported, set_immutable

    AttributionIndex.build("t", TEXT, Ids(), HashEmbedder(), tmp_path / "old", progress=lambda *a: None)
    _as_format_1(tmp_path / "old")
    why = immutable_supported(tmp_path)
    if why:
        pytest.skip(why)
    set_immutable(tmp_path / "old", True)
    try:
        with caplog.at_level(logging.WARNING, logger="tributa.oracle.attribution"):
            index = AttributionIndex.load(tmp_path / "old")
    finally:
        set_immutable(tmp_path / "old", False)
    assert "computed in memory" in caplog.text and index.manifest.format_version == 1
    assert index.screen.matches(index.chunk_embeddings) and not list((tmp_path / "old").glob(".*tmp*"))


def test_load__index_of_a_later_format__says_rebuild(tmp_path):
    AttributionIndex.build("t", TEXT, Ids(), None, tmp_path / "i", progress=lambda *a: None)
    manifest = json.loads((tmp_path / "i" / "manifest.json").read_text())
    (tmp_path / "i" / "manifest.json").write_text(json.dumps({**manifest, "format_version": 3}))
    with pytest.raises(ValueError, match="format 3.*rebuild"):
        AttributionIndex.load(tmp_path / "i")


# -- the output's embedding --------------------------------------------------------------------


def test_attribute__windows_embedded_in_one_call__distinct_ones_once__none_for_a_repeat(tmp_path):
    index = AttributionIndex.build("t", TEXT, Ids(), HashEmbedder(), tmp_path / "i", progress=lambda *a: None)
    embedder = HashEmbedder()
    engine = AttributionEngine([index], Ids(), embedder)
    output = TEXT[:400]  # 400 byte tokens: 12 windows of 64 every 32
    first = engine.attribute(output)
    assert len(embedder.calls) == 1 and len(embedder.calls[0]) == 12
    assert engine.attribute(output) == first and len(embedder.calls) == 1
    repeated = "x" * 200  # every window the same text
    engine.attribute(repeated)
    assert embedder.calls[-1] == ["x" * 64]
