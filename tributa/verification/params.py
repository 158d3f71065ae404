"""How close two honest answers must be: the per-model tolerances of the acceptance rule."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VerificationParams:
    """`min_cosine`: the least cosine similarity of each pair of embedding vectors.
    `logit_margin`: the most a claimed token's logit may sit below the verifier's top logit.
    Defaults from the measurements in `tributa.verification`'s docstring; the registry is to
    carry per-model values."""

    min_cosine: float = 0.999
    logit_margin: float = 0.25


def model_params(registry, model_id: int, defaults: VerificationParams = VerificationParams()) -> VerificationParams:
    """The rule's tolerances for `model_id`: its publisher's registered terms where set, else `defaults`."""
    from tributa.registry import read_serving_terms

    terms = read_serving_terms(registry, model_id)
    return VerificationParams(
        min_cosine=terms.min_cosine if terms.min_cosine is not None else defaults.min_cosine,
        logit_margin=terms.logit_margin if terms.logit_margin is not None else defaults.logit_margin,
    )
