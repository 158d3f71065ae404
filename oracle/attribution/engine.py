"""Proof of attribution for one generation: which registered datasets an output came from.

Evidence of two kinds (after OpenLedger's Proof of Attribution for LLMs):
  * verbatim spans -- maximal runs of >= n output tokens found in a dataset's suffix array;
  * semantic hits  -- the top-k dataset chunks whose embedding is close to the output's.
weights.py turns them into basis points. Everything is deterministic: datasets are visited in
id order, cosines are rounded to 4 decimals, and the weights are exact rational arithmetic.

Spans come from span corpora (corpus.py): one suffix array over many datasets is searched once
per output. A dataset no given corpus holds is searched on its own index.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from . import workers
from .corpus import CorpusMember, SpanCorpus
from .index import AttributionIndex
from .params import ENGINE_VERSION, AttributionParams
from .record import FALLBACK_MODEL_DATASETS, AttributionRecord, ChunkMatch, DatasetScore, SpanMatch
from .semantic import SCORE_SCALE, ChunkScore, top_chunks, window_starts, window_texts
from .spans import RawSpan, covered_tokens, maximal_spans_by_dataset
from .tokenizer import EmbedderLike, as_tokenizer, check_embedder, tokenizer_id
from .weights import combine, largest_remainder_bps, semantic_scores, span_coverage

_QUERY_CACHE = 256  # outputs whose window embeddings are kept (an output attributed again)


class AttributionEngine:
    """Attributes outputs against a fixed set of dataset indexes built with the same tokenizer."""

    def __init__(
        self,
        indexes: Iterable[AttributionIndex] | Mapping[str, AttributionIndex],
        tokenizer: Any,
        embedder: EmbedderLike | None,
        params: AttributionParams = AttributionParams(),
        corpora: Sequence[SpanCorpus] = (),
    ) -> None:
        self.tokenizer = as_tokenizer(tokenizer)
        self.tokenizer_id = tokenizer_id(self.tokenizer)
        self.embedder = None if embedder is None else check_embedder(embedder)
        self.params = params
        listed = list(indexes.values() if isinstance(indexes, Mapping) else indexes)
        self.indexes: dict[str, AttributionIndex] = {}
        for index in listed:
            if index.dataset_id in self.indexes:
                raise ValueError(f"two indexes for dataset {index.dataset_id!r}; pass each dataset once")
            self._check_compatible(index)
            self.indexes[index.dataset_id] = index
        self._corpora = _assign(self.indexes, corpora)
        self._chunks = {
            d: (i.chunk_embeddings, i.screen)
            for d, i in self.indexes.items()
            if self.embedder is not None and i.manifest.embedder_id is not None
        }
        for d, (embeddings, screen) in self._chunks.items():
            if not screen.matches(embeddings):
                raise ValueError(f"index {d!r}: its chunk screen does not match its chunk embeddings; rebuild it")
        self._queries: OrderedDict[tuple[str, ...], np.ndarray] = OrderedDict()
        self._queries_lock = threading.Lock()

    def _check_compatible(self, index: AttributionIndex) -> None:
        m = index.manifest
        if m.tokenizer_id != self.tokenizer_id:
            raise ValueError(
                f"index {m.dataset_id!r} was built with tokenizer {m.tokenizer_id}, but the engine "
                f"uses {self.tokenizer_id}; rebuild the index with the engine's tokenizer"
            )
        if self.embedder is not None and m.embedder_id not in (None, self.embedder.model_id):
            raise ValueError(
                f"index {m.dataset_id!r} holds {m.embedder_id} embeddings, but the engine uses "
                f"{self.embedder.model_id}; rebuild the index with the engine's embedder"
            )

    @property
    def dataset_ids(self) -> list[str]:
        return sorted(self.indexes)

    def attribute(
        self,
        output: str | Sequence[int] | np.ndarray,
        candidate_dataset_ids: Iterable[str] | None = None,
    ) -> AttributionRecord:
        """Attribute one output (text, or token ids from the engine's tokenizer).

        candidate_dataset_ids=None considers every indexed (registered) dataset, so the result
        covers the model's training datasets and any other dataset the output quotes.
        """
        ids = self._output_ids(output)
        candidates = self._candidates(candidate_dataset_ids)
        m = len(ids)
        p = self.params

        if self._semantic_wanted(ids, candidates):
            # The span search (compiled, without the GIL) runs on a pool thread while this one
            # embeds the output: the two do not depend on each other.
            searching = workers.submit(self._span_search, ids, candidates)
            hits = self._semantic_hits(ids, candidates)
            found = searching.result()
        else:
            found, hits = self._span_search(ids, candidates), []
        spans, covered = self._span_evidence(ids, candidates, found)
        coverage = {d: span_coverage(n, m) for d, n in covered.items()}
        semantic = semantic_scores(hits, p)
        weights = combine(coverage, semantic, p)
        bps = largest_remainder_bps(weights)

        scores = {
            d: DatasetScore(
                span_tokens=covered.get(d, 0),
                span_coverage=round(float(coverage.get(d, 0)), 6),
                semantic_score=round(float(semantic.get(d, 0)), 6),
                weight=round(float(weights[d]), 6),
            )
            for d in sorted(weights)
        }
        chunks = [
            ChunkMatch(
                dataset_id=h.dataset_id,
                chunk_index=h.chunk_index,
                dataset_offset=int(self.indexes[h.dataset_id].chunk_starts[h.chunk_index]),
                score=h.score_e4 / SCORE_SCALE,
            )
            for h in hits
        ]
        return AttributionRecord(
            engine_version=ENGINE_VERSION,
            params=p.to_dict(),
            tokenizer_id=self.tokenizer_id,
            embedder_id=None if self.embedder is None else self.embedder.model_id,
            output_token_count=m,
            output_sha256=hashlib.sha256(ids.astype("<u4").tobytes()).hexdigest(),
            indexes={d: _index_ref(self.indexes[d]) for d in candidates},
            weights_bps=bps,
            scores=scores,
            spans=spans,
            chunks=chunks,
            fallback=None if bps else FALLBACK_MODEL_DATASETS,
        )

    def _span_search(self, ids: np.ndarray, candidates: list[str]) -> dict[str, list[RawSpan]]:
        """The maximal verbatim spans in each candidate dataset that has any: one search per corpus."""
        wanted = set(candidates)
        found: dict[str, list[RawSpan]] = {}
        for corpus, members in self._corpora:
            if wanted.isdisjoint(members.values()):
                continue
            per_member = maximal_spans_by_dataset(corpus.search, ids, self.params.min_span_tokens)
            found.update((d, per_member[k]) for k, d in members.items() if d in wanted and per_member[k])
        return found

    def _span_evidence(
        self, ids: np.ndarray, candidates: list[str], found: dict[str, list[RawSpan]]
    ) -> tuple[list[SpanMatch], dict[str, int]]:
        """The spans as record entries, and how many output tokens each dataset covers."""
        spans: list[SpanMatch] = []
        covered: dict[str, int] = {}
        for d in candidates:
            raw = found.get(d)
            if not raw:
                continue
            covered[d] = covered_tokens(raw, len(ids))
            spans.extend(
                SpanMatch(
                    dataset_id=d,
                    output_start=s.start,
                    output_end=s.end,
                    dataset_offset=s.dataset_offset,
                    occurrences=s.count,
                    text=self.tokenizer.decode(ids[s.start : s.end].tolist()),
                )
                for s in raw
            )
        return spans, covered

    def _output_ids(self, output: str | Sequence[int] | np.ndarray) -> np.ndarray:
        if isinstance(output, str):
            return np.asarray(self.tokenizer.encode(output), dtype=np.int64)
        if isinstance(output, (bytes, bytearray)):
            raise TypeError("output must be text (str) or token ids, not bytes; decode it as UTF-8 first")
        array = np.asarray(output)
        if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
            raise TypeError("output must be text (str) or a 1-D sequence of integer token ids")
        if array.size and array.min() < 0:
            raise ValueError("output token ids must be >= 0")
        return array.astype(np.int64)

    def _candidates(self, candidate_dataset_ids: Iterable[str] | None) -> list[str]:
        if candidate_dataset_ids is None:
            return self.dataset_ids
        if isinstance(candidate_dataset_ids, str):
            raise TypeError("candidate_dataset_ids is a list of dataset ids; wrap a single id as [id]")
        wanted = sorted(set(candidate_dataset_ids))
        unknown = [d for d in wanted if d not in self.indexes]
        if unknown:
            raise KeyError(
                f"unknown dataset id(s) {unknown}: the engine has indexes for {self.dataset_ids}; "
                "build the missing ones with AttributionIndex.build and pass them to the engine"
            )
        return wanted

    def _semantic_wanted(self, ids: np.ndarray, candidates: list[str]) -> bool:
        return self.embedder is not None and len(ids) > 0 and any(d in self._chunks for d in candidates)

    def _semantic_hits(self, ids: np.ndarray, candidates: list[str]) -> list[ChunkScore]:
        chunks = {d: self._chunks[d] for d in candidates if d in self._chunks}
        if not self._semantic_wanted(ids, candidates):
            return []
        p = self.params
        starts = window_starts(len(ids), p.query_window_tokens, p.query_window_stride)
        texts = window_texts(ids, starts, p.query_window_tokens, self.tokenizer.decode)
        return top_chunks(self._embed(texts), chunks, p.threshold_e4, p.top_k)

    def _embed(self, texts: list[str]) -> np.ndarray:
        """The output's window embeddings: one embedder call for its distinct windows, and none
        for an output seen lately (the same windows give the same batch, so the same bits)."""
        key = tuple(texts)
        with self._queries_lock:
            if key in self._queries:
                self._queries.move_to_end(key)
                return self._queries[key]
        if self.embedder is None:  # _semantic_wanted asks first
            raise ValueError("this engine has no embedder: it attributes by spans only")
        distinct = list(dict.fromkeys(texts))
        vectors = np.asarray(self.embedder.encode(distinct), dtype=np.float32)
        row = {text: i for i, text in enumerate(distinct)}
        queries = vectors[[row[t] for t in texts]] if len(distinct) < len(texts) else vectors
        queries.setflags(write=False)
        with self._queries_lock:
            self._queries[key] = queries
            while len(self._queries) > _QUERY_CACHE:
                self._queries.popitem(last=False)
        return queries


def _assign(
    indexes: Mapping[str, AttributionIndex], corpora: Sequence[SpanCorpus]
) -> list[tuple[SpanCorpus, dict[int, str]]]:
    """Each dataset's corpus, as (corpus, {member position: dataset id}): the first corpus
    holding that very index (same content and size), else the dataset's own index."""
    placed: dict[str, SpanCorpus] = {}
    out = []
    for corpus in corpora:
        members = {
            k: m.dataset_id
            for k, m in enumerate(corpus.members)
            if m.dataset_id in indexes and m.dataset_id not in placed and CorpusMember.of(indexes[m.dataset_id]) == m
        }
        placed.update((d, corpus) for d in members.values())
        if members:
            out.append((corpus, members))
    out.extend((SpanCorpus.of_index(i), {0: d}) for d, i in sorted(indexes.items()) if d not in placed)
    return out


def _index_ref(index: AttributionIndex) -> dict[str, Any]:
    m = index.manifest
    return {
        "content_sha256": m.content_sha256,
        "token_count": m.token_count,
        "chunk_tokens": m.params["chunk_tokens"],
        "chunk_stride": m.params["chunk_stride"],
        "chunk_count": m.chunk_count,
    }
