"""Verification that holds across hardware: when two answers to one job count as the same.

Exact digests break across hardware and batching (MiniLM embeddings differ in the 4th decimal
for 7 of 64 texts under ATEN_CPU_CAPABILITY=default and for 4 of 64 embedded alone vs in a
batch; greedy generation flips at near-ties between fp32 and bf16), so honest agents would be
slashed. The rule instead:

- embeddings agree when they name the same model, dim and count and every vector pair has
  cosine similarity >= `min_cosine` (default 0.999);
- generations agree when model, adapter and prompt_tokens match and the tokens are equal, or,
  where they differ, when the verifier's own model (base + the named adapter) accepts each:
  teacher-forced over the claim, no claimed token sits more than `logit_margin` below its top
  logit, the claim ends at its first stop token or at max_new_tokens as its finish_reason says,
  prompt_tokens is the verifier's count and text decodes from token_ids.

Measured on this CPU (fp32 verifier unless said; 32 prompts x 24 new tokens, greedy), the
largest margin of an honest claim, i.e. the gap the default `logit_margin` = 0.25 must cover:
  demo GPT-2 + 3 adapters: bf16 claims 0.040 (9 of 32 outputs differ from fp32), fp32 claims
    on a bf16 verifier 0.063; batch 1 vs 8, 1 vs 2 threads: 0 (identical tokens).
  SmolLM2-135M: bf16 claims 0.199 (14 of 32 differ), fp32 claims on a bf16 verifier 0.125;
    the same 32 as chat turns, 32 new tokens: 0.140 (15 of 32 differ) and 0.125.
  MiniLM (64 texts): embedded alone vs in a batch, or under ATEN_CPU_CAPABILITY=default, 3 of 64
    outputs differ in bytes, every cosine >= 0.99999999; another text of the same template <= 0.944.
Against it, what must fail: one edited token (id+1) sits >= 0.70 (GPT-2) and >= 4.2 (SmolLM2)
below; another demo adapter's (or the bare base's) output scored under the claimed adapter has
a worst token >= 0.156 (the demo adapters are weak: 4 of 382 such pairs fall under 0.25, none
under 0.15), so the demo GPT-2's registry entry should carry logit_margin 0.1 (the tests and
bench use it). An adversary choosing the runner-up token at a near-tie passes by design: that is
the tolerance honest hardware needs. The demo's SmolLM2 adapters (rank 4, twelve steps each) are
far apart: over 8 prompts x 24 tokens, 0 of 96 swaps between them and the bare base pass at 0.25
(the least worst-token margin of a swap is 0.805), while honest bf16 claims stay within 0.085.
Trained six steps they were not: 12 of 96 swaps passed (least 0.019) where a swap parted from the
claimed adapter's own output only at a near-tie, and there no margin separates a swap from other
numerics. So the rule tells adapters apart only as far as they differ; an adapter that barely
moves its base can be passed off as another such one (a swap saves no compute: same base, same
adapter size). Not measured here (no GPU): CUDA bf16/fp16 kernels, whose
gaps may be larger; CPU bf16 stands in for them.
"""

from tributa.verification.embeddings import embeddings_agree
from tributa.verification.generation import ClaimChecker
from tributa.verification.grouping import AgreeingSet, Answer, agreeing_set, agreeing_sets
from tributa.verification.judge import ClaimCheck, Judge
from tributa.verification.params import VerificationParams

__all__ = [
    "AgreeingSet",
    "Answer",
    "ClaimCheck",
    "ClaimChecker",
    "Judge",
    "VerificationParams",
    "agreeing_set",
    "agreeing_sets",
    "embeddings_agree",
]
