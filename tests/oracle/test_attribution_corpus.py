"""One suffix array over many datasets (issue 17): per-dataset spans, counts and offsets from
one compiled search, the same as each dataset's own numpy reference search; and the span
segments that keep a few such corpora over every indexed dataset."""

from __future__ import annotations

import dataclasses
import itertools
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oracle.attribution import AttributionEngine, AttributionIndex
from oracle.attribution.corpus import CorpusMember, SpanCorpus
from oracle.attribution.segments import FOLDER, LIST, SpanSegments
from oracle.attribution.spans import maximal_spans_by_dataset, maximal_spans_reference
from oracle.attribution.suffix_array import SuffixArraySearch, build_suffix_array


class Ids:
    """A tokenizer over token ids written as text "3 1 4": enough for span-only engines."""

    tokenizer_id = "test-ids"

    def encode(self, text: str) -> list[int]:
        return [int(t) for t in text.split()]

    def decode(self, ids) -> str:
        return " ".join(str(int(i)) for i in ids)


def _quiet(*_) -> None:
    pass


def _member(name: str, tokens) -> tuple[CorpusMember, np.ndarray]:
    tokens = np.asarray(tokens, dtype=np.uint16)
    return CorpusMember(name, f"sha-{name}", len(tokens)), tokens


def _brute(text: list[int], pattern: list[int]) -> tuple[int, int]:
    hits = [p for p in range(len(text) - len(pattern) + 1) if text[p : p + len(pattern)] == pattern]
    return len(hits), (min(hits) if hits else -1)


@settings(max_examples=300, deadline=None)
@given(
    datasets=st.lists(st.lists(st.integers(0, 5), min_size=1, max_size=120), min_size=1, max_size=5),
    output=st.lists(st.integers(-1, 7), max_size=60),  # -1: no token; 6, 7: in no dataset
    quotes=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 119), st.integers(1, 30)), max_size=4),
    min_tokens=st.integers(1, 6),
)
def test_corpus__random_datasets__each_gets_its_own_numpy_spans_counts_and_offsets(
    datasets, output, quotes, min_tokens
):
    for which, start, length in quotes:  # pieces of the datasets, so that long matches occur
        data = datasets[which % len(datasets)]
        output = output + data[start % len(data) : start % len(data) + length]
    ids = np.asarray(output, dtype=np.int64)
    corpus = SpanCorpus.build([_member(f"d{k}", d) for k, d in enumerate(datasets)])

    found = maximal_spans_by_dataset(corpus.search, ids, min_tokens)
    for k, data in enumerate(datasets):
        tokens = np.asarray(data, dtype=np.uint16)
        alone = SuffixArraySearch(tokens, build_suffix_array(tokens))
        assert found[k] == maximal_spans_reference(alone, ids, min_tokens)
        for span in found[k]:
            assert (span.count, span.dataset_offset) == _brute(data, output[span.start : span.end])


def test_corpus__same_text_in_every_dataset__each_counts_only_its_own():
    corpus = SpanCorpus.build([_member(name, [1, 2, 3, 1, 2]) for name in "abc"])
    found = maximal_spans_by_dataset(corpus.search, np.asarray([1, 2, 3]), 2)
    assert [[(s.start, s.end, s.count, s.dataset_offset) for s in spans] for spans in found] == [[(0, 3, 1, 0)]] * 3
    assert [
        [(s.count, s.dataset_offset) for s in spans]
        for spans in maximal_spans_by_dataset(corpus.search, np.asarray([3, 1, 2]), 2)
    ] == [[(1, 2)]] * 3
    assert [
        [(s.count, s.dataset_offset) for s in spans]
        for spans in maximal_spans_by_dataset(corpus.search, np.asarray([1, 2, 9]), 2)
    ] == [[(2, 0)]] * 3


def test_corpus__match_never_runs_from_one_dataset_into_the_next():
    corpus = SpanCorpus.build([_member("a", [7, 1, 2, 3]), _member("b", [4, 5, 6, 8])])
    ids = np.asarray([1, 2, 3, 4, 5, 6], dtype=np.int64)
    assert maximal_spans_by_dataset(corpus.search, ids, 4) == [[], []]
    [[a], [b]] = maximal_spans_by_dataset(corpus.search, ids, 3)
    assert (a.start, a.end, a.dataset_offset, b.start, b.end, b.dataset_offset) == (0, 3, 1, 3, 6, 0)
    separator = corpus.search.separator
    assert separator == 9 and corpus.search.count([3, separator, 4]) == 0 and corpus.search.count([separator]) == 0
    assert corpus.search.count([1, 2]) == 1 and corpus.search.count([9]) == 0


def test_corpus__a_dataset_using_id_65535__widens_the_tokens_to_uint32(tmp_path):
    corpus = SpanCorpus.build(
        [_member("a", [1, 2, 3]), (CorpusMember("b", "sha-b", 3), np.asarray([0xFFFF, 2, 3], dtype=np.uint32))],
        tmp_path / "c",
    )
    assert corpus.search.tokens.dtype == np.uint32 and corpus.search.separator == 0x10000
    [a, b] = maximal_spans_by_dataset(corpus.search, np.asarray([0xFFFF, 2, 3]), 2)
    assert [(s.start, s.end, s.dataset_offset) for s in a] == [(1, 3, 1)]
    assert [(s.start, s.end, s.count) for s in b] == [(0, 3, 1)]


def test_corpus__on_disk__loads_memory_mapped_with_its_boundary_table(tmp_path):
    parts = [_member("a", [1, 2, 3, 1, 2]), _member("b", [2, 3, 4])]
    built = SpanCorpus.build(parts, tmp_path / "c")
    loaded = SpanCorpus.load(tmp_path / "c")
    assert loaded.members == built.members == tuple(m for m, _ in parts)
    assert isinstance(np.load(tmp_path / "c" / "tokens.npy", mmap_mode="r"), np.memmap)
    assert loaded.search.doc_starts.tolist() == [0, 6, 10]
    assert [loaded.member_tokens(k).tolist() for k in range(2)] == [[1, 2, 3, 1, 2], [2, 3, 4]]
    assert loaded.bytes_per_token == pytest.approx((2 + 1) * 10 / 8)  # uint16 ids, uint8 positions, 2 separators
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    manifest["members"][1]["token_count"] = 4
    (tmp_path / "c" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="boundary table"):
        SpanCorpus.load(tmp_path / "c")


# -- engines and segments ---------------------------------------------------------------------


def _index(tmp_path, name: str, tokens) -> AttributionIndex:
    return AttributionIndex.build(name, np.asarray(tokens), Ids(), None, tmp_path / name, progress=_quiet)


def _datasets(tmp_path, sizes: list[int], seed: int = 0) -> list[AttributionIndex]:
    rng = np.random.default_rng(seed)
    return [_index(tmp_path, f"ds{k}", rng.integers(0, 6, size=n)) for k, n in enumerate(sizes)]


def _outputs(indexes: list[AttributionIndex], seed: int = 1) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    outputs = []
    for k in range(12):
        a, b = (np.asarray(indexes[(k + j) % len(indexes)].tokens).tolist() for j in (0, 1))
        i, j = int(rng.integers(0, len(a) - 20)), int(rng.integers(0, len(b) - 20))
        outputs.append(a[i : i + 20] + rng.integers(0, 6, size=5).tolist() + b[j : j + 20])
    return outputs


def test_engine__with_a_corpus__gives_the_records_of_per_dataset_search(tmp_path):
    indexes = _datasets(tmp_path, [300, 500, 200, 400])
    plain = AttributionEngine(indexes, Ids(), None)
    stale = dataclasses.replace(indexes[0].manifest, content_sha256="other")
    corpora = [
        SpanCorpus.build(
            [
                (CorpusMember.of(dataclasses.replace(indexes[0], manifest=stale)), np.asarray(indexes[0].tokens)),
                _member("not-in-engine", [1, 2, 3]),
            ]
        ),  # neither member is the engine's
        SpanCorpus.from_indexes(indexes[:3]),
    ]
    joined = AttributionEngine(indexes, Ids(), None, corpora=corpora)
    assert [len(members) for _, members in joined._corpora] == [3, 1]  # ds3 is searched on its own
    for ids in _outputs(indexes):
        assert joined.attribute(ids).to_json() == plain.attribute(ids).to_json()
        assert joined.attribute(ids, ["ds1", "ds3"]).to_json() == plain.attribute(ids, ["ds1", "ds3"]).to_json()


def test_segments__datasets_added_one_by_one__a_few_doubling_segments_cover_each_once(tmp_path):
    indexes = _datasets(tmp_path, [100, 120, 90, 400, 80, 60, 70, 1000, 50], seed=3)
    segments = SpanSegments(tmp_path)
    seen = []
    for index in indexes:
        segments.add(index)
        seen.append(segments.generation())
        listed = json.loads((tmp_path / FOLDER / LIST).read_text())["segments"]
        sizes = [s["tokens"] for s in listed]
        assert all(newer * 2 < older for older, newer in itertools.pairwise(sizes)), sizes
        members = [m["dataset_id"] for s in listed for m in s["members"]]
        assert sorted(members) == sorted(i.dataset_id for i in indexes[: len(seen)])
        assert [m.dataset_id for c in segments.corpora()[1] for m in c.members] == [
            m["dataset_id"] for s in listed if s["corpus"] for m in s["members"]
        ]
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    segments.add(indexes[2])  # already covered: nothing changes
    assert segments.generation() == seen[-1]
    listed = json.loads((tmp_path / FOLDER / LIST).read_text())["segments"]
    on_disk = {p.name for p in (tmp_path / FOLDER).iterdir() if p.is_dir()}
    assert on_disk == {s["corpus"] for s in listed if s["corpus"]}  # merged-away corpora are gone
    assert len(listed) <= 4

    plain = AttributionEngine(indexes, Ids(), None)
    joined = AttributionEngine(indexes, Ids(), None, corpora=segments.corpora()[1])
    assert all(len(members) > 0 for _, members in joined._corpora) and len(joined._corpora) == len(listed)
    for ids in _outputs(indexes):
        assert joined.attribute(ids).to_json() == plain.attribute(ids).to_json()


def test_segments__list_that_does_not_read__engines_search_each_dataset_alone(tmp_path, caplog):
    indexes = _datasets(tmp_path, [100, 100])
    segments = SpanSegments(tmp_path)
    for index in indexes:
        segments.add(index)
    (tmp_path / FOLDER / LIST).write_text("{not json")
    with caplog.at_level("WARNING", logger="tributa.oracle.attribution"):
        assert segments.corpora() == (-1, [])
    assert "do not load" in caplog.text and segments.generation() == -1


def test_dataset_indexes__build__joins_the_segments_and_a_failed_merge_leaves_the_index(tmp_path, monkeypatch, caplog):
    from oracle.attribution import corpus as corpus_module
    from oracle.attribution.service import DatasetIndexes

    indexes = DatasetIndexes(tmp_path, Ids(), None)
    texts = {"cid-a": "1 2 3 4 5 6 7 8 " * 20, "cid-b": "9 8 7 6 5 4 " * 30}
    for cid, text in texts.items():
        indexes.build(cid, text)
    generation, corpora = indexes.segments.corpora()
    assert sorted(m.dataset_id for c in corpora for m in c.members) == ["cid-a", "cid-b"] and generation == 2

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(corpus_module.SpanCorpus, "build", broken)
    with caplog.at_level("WARNING", logger="tributa.oracle.attribution"):
        index = indexes.build("cid-c", "1 2 3 " * 200)  # as large as both: a merge is due, and fails
    assert index.token_count == 600 and indexes.has("cid-c")
    assert "span segments were not updated" in caplog.text
    after, corpora = indexes.segments.corpora()  # the list is unchanged
    assert after == generation and [m.dataset_id for c in corpora for m in c.members] == ["cid-a", "cid-b"]


@pytest.mark.parametrize("datasets", [3, 70])  # 70: the block masks take two words
def test_corpus__one_dataset_repeating_a_passage__others_found_past_its_blocks(datasets):
    rng = np.random.default_rng(datasets)
    passage = np.arange(1, 9)
    parts = [("rep", np.tile(passage, 5_000))]  # 40,000 suffixes share the passage's prefixes
    parts += [(f"r{k}", rng.integers(10, 30, size=int(rng.integers(50, 400)))) for k in range(datasets - 2)]
    once = rng.integers(10, 30, size=900)
    once[600:616] = np.tile(passage, 2)
    parts.append(("once", once))  # the passage twice over, once, near the end of the table
    corpus = SpanCorpus.build([_member(name, tokens) for name, tokens in parts])
    output = np.concatenate([np.tile(passage, 4), rng.integers(10, 30, size=10), once[595:640]])
    found = maximal_spans_by_dataset(corpus.search, output, 8)
    for k, (_, tokens) in enumerate(parts):
        tokens = np.asarray(tokens, dtype=np.uint16)
        assert found[k] == maximal_spans_reference(SuffixArraySearch(tokens, build_suffix_array(tokens)), output, 8)
    assert found[0] and found[-1]
