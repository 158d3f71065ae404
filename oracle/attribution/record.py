"""The attribution record: what the oracle stores in the content store and commits on-chain."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

# The record names why its weights are empty; the settler then uses weights.fallback_weights().
FALLBACK_MODEL_DATASETS = "model_training_datasets"


@dataclass(frozen=True)
class SpanMatch:
    """output tokens [output_start, output_end) occur verbatim in the dataset at dataset_offset."""

    dataset_id: str
    output_start: int
    output_end: int
    dataset_offset: int  # token offset of the first occurrence in the dataset's token array
    occurrences: int
    text: str


@dataclass(frozen=True)
class ChunkMatch:
    """Dataset chunk `chunk_index` has cosine `score` (4 decimals) with the output."""

    dataset_id: str
    chunk_index: int
    dataset_offset: int  # token offset where the chunk starts
    score: float


@dataclass(frozen=True)
class DatasetScore:
    """The evidence behind one dataset's weight, before normalisation (6 decimals, for reading)."""

    span_tokens: int
    span_coverage: float
    semantic_score: float
    weight: float


@dataclass(frozen=True)
class AttributionRecord:
    engine_version: str
    params: dict[str, Any]
    tokenizer_id: str
    embedder_id: str | None
    output_token_count: int
    output_sha256: str  # of the output token ids as little-endian uint32
    # Candidate dataset id -> what a verifier must rebuild to re-run: content sha256, token count,
    # chunking and chunk count of the index the engine searched.
    indexes: dict[str, dict[str, Any]]
    weights_bps: dict[str, int]
    scores: dict[str, DatasetScore]
    spans: list[SpanMatch] = field(default_factory=list)
    chunks: list[ChunkMatch] = field(default_factory=list)
    fallback: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> bytes:
        """Canonical bytes: sorted keys, no spaces, ASCII only; same record -> same bytes."""
        return json.dumps(
            self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
        ).encode("ascii")

    def digest(self) -> str:
        """sha256 of to_json(), hex: the commitment the oracle can post on-chain."""
        return hashlib.sha256(self.to_json()).hexdigest()

    @classmethod
    def from_json(cls, data: bytes | str) -> AttributionRecord:
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"attribution record is not valid JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise ValueError("attribution record must be a JSON object")
        expected = {f for f in cls.__dataclass_fields__}
        missing, extra = expected - raw.keys(), raw.keys() - expected
        if missing or extra:
            raise ValueError(
                f"attribution record fields do not match this engine: missing {sorted(missing)}, "
                f"unexpected {sorted(extra)}"
            )
        try:
            return cls(
                **{
                    **raw,
                    "scores": {d: DatasetScore(**s) for d, s in raw["scores"].items()},
                    "spans": [SpanMatch(**s) for s in raw["spans"]],
                    "chunks": [ChunkMatch(**c) for c in raw["chunks"]],
                }
            )
        except (TypeError, AttributeError) as exc:
            raise ValueError(f"attribution record is malformed: {exc}") from exc
