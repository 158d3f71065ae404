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
