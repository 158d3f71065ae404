"""Tunable parameters of the attribution engine and of its per-dataset indexes."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# Bump on any change that can move a weight for the same output, datasets and params: a verifier
# re-runs the engine of the version a record names.
ENGINE_VERSION = "tributa-poa/1.0.0"
# Bump when the on-disk index layout changes.
INDEX_FORMAT_VERSION = 2  # 2: the int8 chunk screen (screen.py); 1 is upgraded on load
BPS_TOTAL = 10_000


@dataclass(frozen=True)
class AttributionParams:
    """Query-time parameters; stored in every record so anyone can re-run the same attribution.

    weight_d = span_weight * span_coverage_d + semantic_weight * semantic_score_d  (see weights.py)
    """

    min_span_tokens: int = 8  # n: a verbatim span must be at least this many output tokens
    top_k: int = 5  # how many chunk hits (over all datasets) count as semantic evidence
    semantic_threshold: float = 0.55  # cosine a chunk must reach to count as evidence
    span_weight: float = 0.7  # alpha
    semantic_weight: float = 0.3  # beta
    query_window_tokens: int = 64  # the output is embedded in windows of this many tokens
    query_window_stride: int = 32

    def __post_init__(self) -> None:
        if not isinstance(self.min_span_tokens, int) or self.min_span_tokens < 1:
            raise ValueError(
                f"min_span_tokens (n) must be an integer >= 1, got {self.min_span_tokens!r}; "
                "8 is the default, as in OLMoTrace-style span matching."
            )
        if not isinstance(self.top_k, int) or self.top_k < 1:
            raise ValueError(f"top_k must be an integer >= 1, got {self.top_k!r}.")
        if not -1.0 <= self.semantic_threshold < 1.0:
            raise ValueError(f"semantic_threshold is a cosine in [-1, 1), got {self.semantic_threshold!r}.")
        if self.span_weight < 0 or self.semantic_weight < 0:
            raise ValueError("span_weight and semantic_weight must be >= 0.")
        if self.span_weight == 0 and self.semantic_weight == 0:
            raise ValueError("span_weight and semantic_weight cannot both be 0: nothing would count.")
        _check_window(self.query_window_tokens, self.query_window_stride, "query_window")

    @property
    def threshold_e4(self) -> int:
        """The threshold in the 1/10000 units cosines are rounded to."""
        return round(self.semantic_threshold * 10_000)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class IndexParams:
    """Build-time parameters of one dataset's index; stored in its manifest."""

    chunk_tokens: int = 64  # semantic chunks are windows of this many dataset tokens
    chunk_stride: int = 64  # ... starting every this many tokens (query windows overlap instead)
    segment_chars: int = 1 << 20  # large texts are tokenized in pieces of about this many chars
    embed_batch_size: int = 32

    def __post_init__(self) -> None:
        _check_window(self.chunk_tokens, self.chunk_stride, "chunk")
        if self.segment_chars < 1024:
            raise ValueError(f"segment_chars must be >= 1024, got {self.segment_chars!r}.")
        if self.embed_batch_size < 1:
            raise ValueError(f"embed_batch_size must be >= 1, got {self.embed_batch_size!r}.")


def _check_window(size: int, stride: int, name: str) -> None:
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"{name}_tokens must be an integer >= 1, got {size!r}.")
    if not isinstance(stride, int) or not 1 <= stride <= size:
        raise ValueError(f"{name}_stride must be an integer in [1, {name}_tokens], got {stride!r}.")
