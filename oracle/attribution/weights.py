"""From evidence to basis points: the combination formula and largest-remainder rounding.

For each candidate dataset d, with m output tokens, top-k hits H (cosines rounded to 4 decimals)
and threshold tau:

    span_coverage_d  = |output tokens inside d's verbatim spans| / m              in [0, 1]
    semantic_score_d = sum_{h in H, h from d} (cos_h - tau) / (1 - tau) / k        in [0, 1]
    weight_d         = alpha * span_coverage_d + beta * semantic_score_d

and weights_bps_d = weight_d / sum(weight) * 10000, rounded by largest remainder. All of this is
exact rational arithmetic on integers and on the decimal form of alpha, beta and tau, so no float
rounding can differ between machines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction

from .params import BPS_TOTAL, AttributionParams
from .semantic import SCORE_SCALE, ChunkScore


def decimal_fraction(value: float) -> Fraction:
    """The decimal a parameter is written as (0.7 -> 7/10), not its binary float expansion."""
    return Fraction(repr(float(value)))


def span_coverage(covered: int, output_len: int) -> Fraction:
    return Fraction(covered, output_len) if output_len else Fraction(0)


def semantic_scores(hits: Sequence[ChunkScore], params: AttributionParams) -> dict[str, Fraction]:
    tau = params.threshold_e4
    span = (SCORE_SCALE - tau) * params.top_k
    out: dict[str, Fraction] = {}
    for hit in hits:
        out[hit.dataset_id] = out.get(hit.dataset_id, Fraction(0)) + Fraction(hit.score_e4 - tau, span)
    return out


def combine(
    coverage: Mapping[str, Fraction], semantic: Mapping[str, Fraction], params: AttributionParams
) -> dict[str, Fraction]:
    """weight_d = alpha * span_coverage_d + beta * semantic_score_d, for datasets with evidence."""
    alpha = decimal_fraction(params.span_weight)
    beta = decimal_fraction(params.semantic_weight)
    ids = sorted(set(coverage) | set(semantic))
    weights = {d: alpha * coverage.get(d, Fraction(0)) + beta * semantic.get(d, Fraction(0)) for d in ids}
    return {d: w for d, w in weights.items() if w > 0}


def largest_remainder_bps(scores: Mapping[str, Fraction | int], total: int = BPS_TOTAL) -> dict[str, int]:
    """Split `total` in proportion to the positive scores; the sum is exactly `total`.

    Each dataset gets floor(share); the units left go one each to the largest remainders, ties to
    the smaller dataset id. Datasets that end with 0 are left out.
    """
    positive = {d: Fraction(s) for d, s in scores.items() if s > 0}
    if not positive:
        return {}
    whole = sum(positive.values(), Fraction(0))
    quotas = {d: s * total / whole for d, s in positive.items()}
    bps = {d: q.numerator // q.denominator for d, q in quotas.items()}
    left = total - sum(bps.values())
    by_remainder = sorted(positive, key=lambda d: (-(quotas[d] - bps[d]), d))
    for d in by_remainder[:left]:
        bps[d] += 1
    return {d: bps[d] for d in sorted(bps) if bps[d] > 0}


def fallback_weights(model_dataset_ids: Sequence[str], model_dataset_weights_bps: Sequence[int]) -> dict[str, int]:
    """Weights for an unattributable output: the model's own training datasets as registered.

    Returns {dataset id: bps} summing to 10000 (re-normalised by largest remainder if the
    registered figures do not), or {} -- "refund the requester's data share" -- when the model
    names no training dataset or gives them all 0.
    """
    ids = list(model_dataset_ids)
    bps = list(model_dataset_weights_bps)
    if len(ids) != len(bps):
        raise ValueError(
            f"model_dataset_ids has {len(ids)} entries but model_dataset_weights_bps has {len(bps)}; "
            "pass one weight per training dataset, in the same order as DataRegistry stores them."
        )
    if len(set(ids)) != len(ids):
        raise ValueError(f"model_dataset_ids repeats a dataset: {ids}")
    for d, w in zip(ids, bps, strict=False):
        if not isinstance(d, str) or not d:
            raise ValueError(f"dataset ids must be non-empty strings, got {d!r}")
        if isinstance(w, bool) or not isinstance(w, int) or w < 0:
            raise ValueError(f"weight of dataset {d!r} must be an integer >= 0 bps, got {w!r}")
    return largest_remainder_bps(dict(zip(ids, bps, strict=False)))
