"""Proof of attribution: verbatim spans, semantic evidence, weights, determinism, bad input.

Real weights throughout: the project's byte-level BPE (tributa.ml.tokenizer) and the shipped
all-MiniLM-L6-v2 embedder, float32 and quantized (the oracle's; each test runs with both). The
three small datasets below are written for these tests so that what they quote and paraphrase
cannot drift with the demo data.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from oracle.attribution import (
    ENGINE_VERSION,
    FALLBACK_MODEL_DATASETS,
    AttributionEngine,
    AttributionIndex,
    AttributionParams,
    AttributionRecord,
    IndexParams,
    fallback_weights,
    largest_remainder_bps,
)
from oracle.attribution.quantized import load_quantized_embedder
from oracle.attribution.spans import maximal_spans, maximal_spans_reference
from oracle.attribution.suffix_array import Occurrence, SuffixArraySearch, build_suffix_array
from tributa.ml.embeddings import load_embedder
from tributa.ml.tokenizer import load_tokenizer

BEES = (
    "A honey bee colony lives in a hive built from wax combs. Each comb is a sheet of six-sided "
    "cells where the workers store honey and pollen and where the queen lays her eggs. A strong "
    "colony in summer may hold fifty thousand workers, a few hundred drones and a single queen.\n\n"
    "Worker bees change jobs as they age. The youngest clean cells and feed the larvae, middle-aged "
    "bees build comb and guard the entrance, and the oldest fly out to forage for nectar, pollen, "
    "water and resin. A forager that finds a rich patch of flowers returns and performs the waggle "
    "dance, which tells her sisters the direction and distance of the food.\n\n"
    "Nectar becomes honey inside the hive. Workers pass it from mouth to mouth, adding enzymes, and "
    "fan their wings over the open cells until most of the water has evaporated. When the honey is "
    "thick enough they seal each cell with a cap of fresh wax, and the colony lives on these stores "
    "through the winter.\n\n"
    "Beekeepers inspect a hive by puffing cool smoke at the entrance, which calms the guards, and "
    "lifting out one frame at a time. They look for eggs, which show the queen is laying, for signs "
    "of disease, and for queen cells, which warn that the colony is preparing to swarm.\n"
)

LIGHTHOUSES = (
    "A lighthouse marks a dangerous coast, a reef or the mouth of a harbour so that ships can find "
    "their way at night. The tower lifts the lamp high above the sea, because the higher the light "
    "stands, the farther beyond the curve of the Earth a sailor can see it.\n\n"
    "Early lighthouses burned wood or coal in open fires, and later ones burned oil in lamps with "
    "polished reflectors. In the nineteenth century the Fresnel lens changed everything: rings of "
    "glass prisms bend the light of a single flame into a narrow, brilliant beam that can be seen "
    "more than twenty nautical miles away.\n\n"
    "Every lighthouse has its own signature, called its character. One may flash white every five "
    "seconds, another may show two red flashes followed by darkness, so a navigator who counts the "
    "flashes and checks the chart knows exactly which light is in view.\n\n"
    "Keepers once lived at the station, trimming wicks, winding the clockwork that turned the lens "
    "and cleaning soot from the glass every morning. Today almost every light is automatic, powered "
    "by electricity or by solar panels, and watched from far away.\n"
)

VOLCANOES = (
    "A volcano is an opening in the crust of the Earth through which molten rock, ash and gases "
    "escape from deep below. Molten rock underground is called magma; once it reaches the surface "
    "it is called lava.\n\n"
    "Some volcanoes erupt gently, letting runny basalt lava pour out in long rivers that can travel "
    "for many kilometres. Others explode violently, because their thick, sticky magma traps gas "
    "until the pressure tears the mountain open and hurls ash high into the sky.\n\n"
    "Most volcanoes sit along the edges of tectonic plates. Where one plate dives beneath another, "
    "melting rock rises to feed a chain of volcanoes, like those that ring the Pacific Ocean. A few "
    "volcanoes, such as those of Hawaii, sit above hot spots far from any plate edge.\n"
)

QUOTE = (
    "Nectar becomes honey inside the hive. Workers pass it from mouth to mouth, adding enzymes, and "
    "fan their wings over the open cells until most of the water has evaporated."
)
BEES_PARAPHRASE = (
    "Inside the colony, the insects turn flower nectar into honey: they hand it from one bee to the "
    "next while mixing in enzymes, then beat their wings above uncapped comb so the moisture dries "
    "off."
)
UNRELATED = "Please reset my account password and email the overdue invoice to the billing team."


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module", params=["float32", "quantized"])
def embedder(request):
    """Every test once with float32 MiniLM and once with the quantized one the oracle uses."""
    return load_embedder("cpu") if request.param == "float32" else load_quantized_embedder()


@pytest.fixture(scope="module")
def index_root(tmp_path_factory, embedder) -> Path:
    return tmp_path_factory.mktemp(f"attribution-indexes-{embedder.model_id}")


@pytest.fixture(scope="module")
def indexes(tokenizer, embedder, index_root) -> dict[str, AttributionIndex]:
    corpora = {"bees": BEES, "lighthouses": LIGHTHOUSES, "volcanoes": VOLCANOES}
    return {
        name: AttributionIndex.build(name, text, tokenizer, embedder, index_root / name, progress=_quiet)
        for name, text in corpora.items()
    }


@pytest.fixture(scope="module")
def engine(indexes, tokenizer, embedder) -> AttributionEngine:
    return AttributionEngine(indexes.values(), tokenizer, embedder)


def _quiet(stage: str, done: int, total: int) -> None:
    pass


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


# -- verbatim spans -------------------------------------------------------------------------


def test_attribute__verbatim_quote__credits_quoted_dataset(engine):
    record = engine.attribute(QUOTE)
    assert record.weights_bps == {"bees": 10_000}
    assert record.fallback is None
    assert {s.dataset_id for s in record.spans} == {"bees"}
    assert record.scores["bees"].span_coverage == 1.0
    assert record.chunks and record.chunks[0].dataset_id == "bees"


def test_attribute__quote_after_own_words__reports_output_and_dataset_offsets(engine, indexes, tokenizer):
    prefix = "Here is what my notes say about that topic, more or less word for word:"
    output = _ids(tokenizer, prefix) + _ids(tokenizer, " " + QUOTE)
    record = engine.attribute(output)
    [span] = [s for s in record.spans if s.dataset_id == "bees"]
    quoted = output[span.output_start : span.output_end]
    dataset_tokens = np.asarray(indexes["bees"].tokens)
    assert dataset_tokens[span.dataset_offset : span.dataset_offset + len(quoted)].tolist() == quoted
    assert span.output_start >= len(_ids(tokenizer, prefix)) - 1
    assert span.output_end == len(output)
    assert span.occurrences == 1
    assert QUOTE[20:80] in span.text and span.text.strip() in BEES


def test_attribute__output_mixing_two_datasets__splits_weights(engine):
    bees_part = BEES[BEES.index("Worker bees") : BEES.index("A forager")]
    lights_part = LIGHTHOUSES[LIGHTHOUSES.index("Every lighthouse") : LIGHTHOUSES.index("\n\nKeepers")]
    record = engine.attribute(bees_part + " " + lights_part)
    assert set(record.weights_bps) >= {"bees", "lighthouses"}
    assert sum(record.weights_bps.values()) == 10_000
    assert record.weights_bps["bees"] > 2_000 and record.weights_bps["lighthouses"] > 2_000
    assert {s.dataset_id for s in record.spans} == {"bees", "lighthouses"}
    bees_span = next(s for s in record.spans if s.dataset_id == "bees")
    lights_span = next(s for s in record.spans if s.dataset_id == "lighthouses")
    assert bees_span.output_end <= lights_span.output_start + 1


def test_attribute__phrase_shorter_than_n__is_a_span_only_when_n_allows(indexes, tokenizer, embedder):
    phrase = "fifty thousand workers"  # a few tokens, inside BEES
    output = "In that city there were fifty thousand workers on strike last spring."
    n = len(_ids(tokenizer, " " + phrase))
    strict = AttributionEngine(indexes.values(), tokenizer, None, AttributionParams(min_span_tokens=n + 4))
    loose = AttributionEngine(indexes.values(), tokenizer, None, AttributionParams(min_span_tokens=n - 1))
    assert strict.attribute(output).spans == []
    assert any(phrase in s.text for s in loose.attribute(output).spans)


# -- semantic evidence and fallback ----------------------------------------------------------


def test_attribute__paraphrase__gets_semantic_evidence_only(engine):
    record = engine.attribute(BEES_PARAPHRASE)
    assert record.spans == []
    assert record.chunks, "a close paraphrase must reach the semantic threshold"
    assert record.chunks[0].dataset_id == "bees"
    assert record.chunks[0].score >= engine.params.semantic_threshold
    assert record.weights_bps.get("bees", 0) >= 5_000
    assert record.scores["bees"].span_tokens == 0


def test_attribute__unrelated_text__falls_back_to_model_datasets(engine):
    record = engine.attribute(UNRELATED)
    assert record.weights_bps == {}
    assert record.spans == [] and record.chunks == []
    assert record.fallback == FALLBACK_MODEL_DATASETS
    assert fallback_weights(["volcanoes", "bees"], [2_500, 7_500]) == {"bees": 7_500, "volcanoes": 2_500}


def test_attribute__empty_output__falls_back(engine):
    record = engine.attribute("")
    assert record.weights_bps == {} and record.fallback == FALLBACK_MODEL_DATASETS


def test_attribute__candidate_subset__only_weighs_those_datasets(engine):
    record = engine.attribute(QUOTE, candidate_dataset_ids=["lighthouses", "volcanoes"])
    assert "bees" not in record.weights_bps and "bees" not in record.indexes
    assert all(s.dataset_id != "bees" for s in record.spans)


# -- determinism and the record --------------------------------------------------------------


def test_attribute__two_runs_from_reloaded_indexes__give_identical_json_bytes(engine, index_root, tokenizer, embedder):
    output = BEES[:300] + " and then " + VOLCANOES[200:420]
    reloaded = AttributionEngine(
        [AttributionIndex.load(index_root / name) for name in ("volcanoes", "bees", "lighthouses")],
        tokenizer,
        embedder,
    )
    first, second = engine.attribute(output).to_json(), reloaded.attribute(output).to_json()
    assert first == second
    assert json.loads(first)["engine_version"] == ENGINE_VERSION


def test_record__json_round_trip__reproduces_the_same_bytes(engine):
    record = engine.attribute(BEES_PARAPHRASE + " " + QUOTE)
    data = record.to_json()
    assert data == json.dumps(json.loads(data), sort_keys=True, separators=(",", ":")).encode()
    again = AttributionRecord.from_json(data)
    assert again == record and again.to_json() == data and again.digest() == record.digest()


def test_record__from_json_with_missing_field__raises_value_error(engine):
    raw = json.loads(engine.attribute(QUOTE).to_json())
    del raw["weights_bps"]
    with pytest.raises(ValueError, match="missing"):
        AttributionRecord.from_json(json.dumps(raw))


@pytest.mark.parametrize("output", [QUOTE, BEES_PARAPHRASE, VOLCANOES[:200] + LIGHTHOUSES[:200], UNRELATED])
def test_attribute__any_output__weights_are_empty_or_sum_to_exactly_10000(engine, output):
    weights = engine.attribute(output).weights_bps
    assert weights == {} or sum(weights.values()) == 10_000
    assert all(isinstance(v, int) and v > 0 for v in weights.values())


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=4), st.fractions(min_value=0, max_value=10**6), max_size=12))
def test_largest_remainder__any_scores__sum_to_exactly_10000_or_nothing(scores):
    bps = largest_remainder_bps(scores)
    if any(s > 0 for s in scores.values()):
        assert sum(bps.values()) == 10_000
    else:
        assert bps == {}


def test_largest_remainder__equal_scores__gives_the_extra_unit_to_the_smallest_id():
    assert largest_remainder_bps({"c": 1, "a": 1, "b": 1}) == {"a": 3334, "b": 3333, "c": 3333}
    assert largest_remainder_bps({"x": Fraction(2, 3), "y": Fraction(1, 3)}) == {"x": 6667, "y": 3333}


# -- fallback helper -------------------------------------------------------------------------


def test_fallback_weights__registered_bps_not_summing_to_10000__are_renormalised():
    assert fallback_weights(["a", "b"], [1, 2]) == {"a": 3333, "b": 6667}


def test_fallback_weights__no_training_datasets__means_refund():
    assert fallback_weights([], []) == {}
    assert fallback_weights(["a"], [0]) == {}


def test_fallback_weights__mismatched_lengths__raise_value_error():
    with pytest.raises(ValueError, match="one weight per training dataset"):
        fallback_weights(["a", "b"], [10_000])


# -- indexes ---------------------------------------------------------------------------------


def test_index__load__memory_maps_arrays_and_records_the_manifest(index_root, indexes, tokenizer, embedder):
    index = AttributionIndex.load(index_root / "bees")
    assert isinstance(index.tokens, np.memmap) and isinstance(index.suffix_array, np.memmap)
    m = index.manifest
    assert m.dataset_id == "bees" and m.token_count == len(_ids(tokenizer, BEES))
    assert m.token_dtype == "uint16" and m.suffix_array_dtype == "uint16"
    assert m.embedder_id == embedder.model_id and index.chunk_embeddings.dtype == np.float16
    assert m.chunk_count == index.chunk_embeddings.shape[0] > 1
    assert m.bytes_per_token < 7
    assert m.content_sha256 == indexes["bees"].manifest.content_sha256


def test_build__progress_callback__reports_every_stage(tmp_path, tokenizer, embedder):
    seen: list[tuple[str, int, int]] = []
    AttributionIndex.build("v", VOLCANOES, tokenizer, embedder, tmp_path / "v", progress=lambda *a: seen.append(a))
    stages = [s for s, _, _ in seen]
    assert {"tokenize", "suffix_array", "embed"} <= set(stages)
    for stage in ("tokenize", "suffix_array", "embed"):
        last = [a for a in seen if a[0] == stage][-1]
        assert last[1] == last[2]


def test_build__without_a_progress_callback__logs_structured_progress(tmp_path, tokenizer, caplog):
    with caplog.at_level("INFO", logger="tributa.oracle.attribution"):
        AttributionIndex.build("logged", BEES, tokenizer, None, tmp_path / "logged")
    fields = [r.fields for r in caplog.records if hasattr(r, "fields")]
    assert {"dataset_id": "logged", "stage": "suffix_array"} == {k: fields[-1][k] for k in ("dataset_id", "stage")}
    assert {f["stage"] for f in fields} == {"tokenize", "suffix_array"}


def test_build__from_a_file_path__equals_build_from_its_text(tmp_path, tokenizer):
    file = tmp_path / "lighthouses.txt"
    file.write_text(LIGHTHOUSES, encoding="utf-8")
    from_file = AttributionIndex.build("l", file, tokenizer, None, tmp_path / "a", progress=_quiet)
    from_text = AttributionIndex.build("l", LIGHTHOUSES, tokenizer, None, tmp_path / "b", progress=_quiet)
    assert np.array_equal(from_file.tokens, from_text.tokens)
    assert from_file.manifest.content_sha256 == from_text.manifest.content_sha256


def test_build__large_text_in_segments__cuts_only_at_line_ends(tmp_path, tokenizer):
    text = "\n".join([BEES, LIGHTHOUSES, VOLCANOES] * 3)
    whole = AttributionIndex.build("w", text, tokenizer, None, tmp_path / "w", progress=_quiet)
    cut = AttributionIndex.build(
        "w", text, tokenizer, None, tmp_path / "c", progress=_quiet, params=IndexParams(segment_chars=1024)
    )
    # Cuts after a newline keep tokenization identical for this byte-level BPE.
    assert np.array_equal(whole.tokens, cut.tokens)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_suffix_array_search__longest_matches_and_counts__agree_with_brute_force(seed):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, 5, size=300).astype(np.uint16)  # small alphabet: many long repeats
    search = SuffixArraySearch(tokens, build_suffix_array(tokens))
    # Pieces of the data, random tokens, an id below and above any in the data, the data's tail.
    query = np.concatenate([tokens[50:130], rng.integers(0, 6, size=30), [0, 9], tokens[280:], tokens[:5]]).astype(
        np.int64
    )
    text = tokens.tolist()

    def match_len(i: int, p: int) -> int:
        k = 0
        while i + k < len(query) and p + k < len(text) and text[p + k] == query[i + k]:
            k += 1
        return k

    starts = np.arange(len(query))
    expected = [max(match_len(i, p) for p in range(len(text))) for i in starts]
    assert search.longest_matches(query, starts).tolist() == expected

    pattern = tokens[60:66].astype(np.int64)
    hits = [p for p in range(len(text) - 5) if text[p : p + 6] == pattern.tolist()]
    [occ] = search.occurrences([pattern])
    assert (occ.count, occ.first_offset) == (len(hits), min(hits))


def _brute_count(text: list[int], pattern: list[int]) -> tuple[int, int]:
    hits = [p for p in range(len(text) - len(pattern) + 1) if text[p : p + len(pattern)] == pattern]
    return len(hits), (min(hits) if hits else -1)


@settings(max_examples=300, deadline=None)
@given(
    corpus=st.lists(st.integers(0, 6), min_size=1, max_size=400),
    output=st.lists(st.integers(-1, 8), min_size=0, max_size=80),  # -1: no token, never matches
    pieces=st.lists(st.tuples(st.integers(0, 399), st.integers(1, 40)), max_size=4),
    min_tokens=st.integers(1, 6),
    wide=st.booleans(),
)
def test_compiled_search__random_corpora__same_spans_counts_and_offsets_as_numpy(
    corpus, output, pieces, min_tokens, wide
):
    tokens = np.asarray(corpus, dtype=np.uint32 if wide else np.uint16)
    search = SuffixArraySearch(tokens, build_suffix_array(tokens))
    for start, length in pieces:  # quotes of the corpus inside the output: long matches
        output = output + corpus[start % len(corpus) : start % len(corpus) + length]
    ids = np.asarray(output, dtype=np.int64)

    compiled = maximal_spans(search, ids, min_tokens)
    assert compiled == maximal_spans_reference(search, ids, min_tokens)
    for span in compiled:
        assert (span.count, span.dataset_offset) == _brute_count(corpus, output[span.start : span.end])
    if output:
        lengths, _, _ = search.match_ranges(ids, np.arange(len(ids)))
        assert lengths.tolist() == search.longest_matches(ids, np.arange(len(ids))).tolist()


@pytest.mark.parametrize("pattern", [[9], [0, 9], [1, 2, 3, 4, 1, 2, 3, 4, 4, 4, 4], [4, 3]])
def test_count__a_pattern_that_never_occurs__zero_not_corrupt(pattern):
    tokens = np.asarray([1, 2, 3, 4, 1, 2, 3, 4], dtype=np.uint16)
    search = SuffixArraySearch(tokens, build_suffix_array(tokens))
    assert search.count(pattern) == 0
    assert search.occurrences([np.asarray(pattern)]) == [Occurrence(count=0, first_offset=-1)]


def test_count__patterns_that_occur__their_number_of_occurrences():
    tokens = np.asarray([1, 2, 3, 4, 1, 2, 3, 4, 1, 2], dtype=np.uint16)
    search = SuffixArraySearch(tokens, build_suffix_array(tokens))
    assert [search.count(p) for p in ([1], [1, 2], [1, 2, 3], [4, 1, 2], [2])] == [3, 3, 2, 2, 3]
    with pytest.raises(ValueError, match="non-empty"):
        search.count([])


def test_build__token_ids_source__indexes_them_without_a_tokenizer_pass(tmp_path, tokenizer):
    ids = _ids(tokenizer, BEES)
    index = AttributionIndex.build("ids", ids, tokenizer, None, tmp_path / "ids", progress=_quiet)
    assert index.manifest.content_kind == "token_ids"
    assert np.asarray(index.tokens).tolist() == ids
    assert index.manifest.chunk_count == 0


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_build__empty_dataset_text__raises_clear_error(tmp_path, tokenizer, text):
    with pytest.raises(ValueError, match="is empty"):
        AttributionIndex.build("empty", text, tokenizer, None, tmp_path / "e", progress=_quiet)
    assert not (tmp_path / "e").exists()


def test_build__out_dir_with_other_files__refuses_to_overwrite(tmp_path, tokenizer):
    (tmp_path / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not an attribution index"):
        AttributionIndex.build("x", BEES, tokenizer, None, tmp_path, progress=_quiet)
    assert (tmp_path / "keep.txt").read_text() == "precious"


@pytest.mark.parametrize("n", [0, -3])
def test_params__n_below_one__raises_value_error(n):
    with pytest.raises(ValueError, match="min_span_tokens"):
        AttributionParams(min_span_tokens=n)


def test_params__both_weights_zero__raises_value_error():
    with pytest.raises(ValueError, match="both be 0"):
        AttributionParams(span_weight=0, semantic_weight=0)


def test_attribute__unknown_dataset_id__raises_key_error_naming_known_ones(engine):
    with pytest.raises(KeyError, match="unknown dataset id.*'nope'.*bees"):
        engine.attribute(QUOTE, candidate_dataset_ids=["bees", "nope"])


def test_attribute__negative_token_id__raises_value_error(engine):
    with pytest.raises(ValueError, match=">= 0"):
        engine.attribute([5, -1, 7])


def test_engine__index_from_another_tokenizer__raises_value_error(tmp_path, indexes, tokenizer, embedder):
    other = dataclasses.replace(
        indexes["bees"], manifest=dataclasses.replace(indexes["bees"].manifest, tokenizer_id="hf-sha256:other")
    )
    with pytest.raises(ValueError, match="rebuild the index"):
        AttributionEngine([other], tokenizer, embedder)


def test_engine__index_of_another_embedder__raises_value_error_saying_rebuild(indexes, tokenizer, embedder):
    other = load_quantized_embedder() if embedder.model_id == load_embedder("cpu").model_id else load_embedder("cpu")
    with pytest.raises(ValueError, match=f"holds {re.escape(embedder.model_id)} embeddings.*rebuild the index"):
        AttributionEngine([indexes["bees"]], tokenizer, other)


def test_engine__same_dataset_twice__raises_value_error(indexes, tokenizer, embedder):
    with pytest.raises(ValueError, match="two indexes"):
        AttributionEngine([indexes["bees"], indexes["bees"]], tokenizer, embedder)


def test_load__missing_directory__says_how_to_build(tmp_path):
    with pytest.raises(FileNotFoundError, match="AttributionIndex.build"):
        AttributionIndex.load(tmp_path / "nowhere")
