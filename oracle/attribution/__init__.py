"""Proof of attribution: per-dataset weights for a generated output, with re-checkable evidence.

    index = AttributionIndex.build("ds-1", text, tokenizer, embedder, "indexes/ds-1")
    engine = AttributionEngine([index], tokenizer, embedder)
    record = engine.attribute(output_text)          # record.weights_bps sums to 10000, or {}
    weights = record.weights_bps or fallback_weights(model_ids, model_bps)
"""

from .engine import AttributionEngine
from .index import AttributionIndex, IndexManifest
from .params import ENGINE_VERSION, AttributionParams, IndexParams
from .record import FALLBACK_MODEL_DATASETS, AttributionRecord, ChunkMatch, DatasetScore, SpanMatch
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
    "DatasetScore",
    "EmbedderLike",
    "HFTokenizerAdapter",
    "IndexManifest",
    "IndexParams",
    "SpanMatch",
    "TokenizerLike",
    "as_tokenizer",
    "fallback_weights",
    "largest_remainder_bps",
    "tokenizer_id",
]
