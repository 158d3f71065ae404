"""Proof of attribution: per-dataset weights for a generated output, with re-checkable evidence.

index = AttributionIndex.build("ds-1", text, tokenizer, embedder, "indexes/ds-1")
engine = AttributionEngine([index], tokenizer, embedder)
# many datasets, one suffix array: corpora=[SpanCorpus.from_indexes(indexes)], or the
# segments an index root keeps: corpora=SpanSegments(root).corpora()[1]
record = engine.attribute(output_text)          # record.weights_bps sums to 10000, or {}
weights = record.weights_bps or fallback_weights(model_ids, model_bps)
"""

from .corpus import CorpusMember, SpanCorpus
from .engine import AttributionEngine
from .index import AttributionIndex, IndexManifest
from .params import ENGINE_VERSION, AttributionParams, IndexParams
from .record import FALLBACK_MODEL_DATASETS, AttributionRecord, ChunkMatch, DatasetScore, SpanMatch
from .segments import SpanSegments
from .tokenizer import EmbedderLike, HFTokenizerAdapter, TokenizerLike, as_tokenizer, tokenizer_id
from .weights import fallback_weights, largest_remainder_bps

__all__ = [
    "ENGINE_VERSION",
    "FALLBACK_MODEL_DATASETS",
    "AttributionEngine",
    "AttributionIndex",
    "AttributionParams",
    "AttributionRecord",
    "ChunkMatch",
    "CorpusMember",
    "DatasetScore",
    "EmbedderLike",
    "HFTokenizerAdapter",
    "IndexManifest",
    "IndexParams",
    "SpanCorpus",
    "SpanMatch",
    "SpanSegments",
    "TokenizerLike",
    "as_tokenizer",
    "fallback_weights",
    "largest_remainder_bps",
    "tokenizer_id",
]
