"""A claimed greedy generation is accepted when the verifier's own model, fed the claim with
teacher forcing, finds every claimed token within `logit_margin` of its own top choice, and
the claim's bookkeeping (prompt length, finish reason, text) is what that model gives."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from tributa.runtime.errors import InferenceInputError

if TYPE_CHECKING:  # the oracle imports this rule without loading torch
    from tributa.runtime.generation import GenerationRequest


class Rescorer(Protocol):
    """What the check needs of a GenerationRunner (with the request's adapter loaded)."""

    model_id: str
    stop_ids: frozenset[int]
    tokenizer: Any

    def _prompt_ids(self, request: GenerationRequest) -> list[int]: ...
    def _vocab_size(self) -> int: ...
    def rescore(self, request: GenerationRequest, claimed_token_ids: Sequence[int]) -> list[float]: ...


class ClaimChecker:
    """Checks claimed outputs of one generation request on the verifier's runner."""

    def __init__(self, runner: Rescorer, request: GenerationRequest, logit_margin: float) -> None:
        self.runner = runner
        self.request = request
        self.logit_margin = logit_margin

    def __call__(self, claim: dict[str, Any]) -> str | None:
        """None when the claim is accepted, else why it is not."""
        ids = claim.get("token_ids")
        if not isinstance(ids, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
            return "token_ids is not a list of integers"
        vocab = self.runner._vocab_size()
        if any(not 0 <= t < vocab for t in ids):
            # Checked before decoding: the tokenizer raises on an id out of range, and a raise
            # must not stand in for a verdict.
            return f"a token id is outside the model's vocabulary of {vocab}"
        if claim.get("model") != self.runner.model_id:
            return f"names model {claim.get('model')!r}, not {self.runner.model_id}"
        if claim.get("adapter") != self.request.adapter:
            return f"names adapter {claim.get('adapter')!r}, not {self.request.adapter!r}"
        try:
            prompt_tokens = len(self.runner._prompt_ids(self.request))
        except InferenceInputError as exc:
            return str(exc)
        if claim.get("prompt_tokens") != prompt_tokens:
            return f"prompt_tokens {claim.get('prompt_tokens')!r}, the prompt is {prompt_tokens}"
        why = self._finish(ids, claim.get("finish_reason"))
        if why:
            return why
        try:
            decoded = self.runner.tokenizer.decode(ids, skip_special_tokens=True)
        except Exception as exc:  # whatever the tokenizer refuses is this claim's fault alone  # noqa: BLE001
            return f"token_ids do not decode: {type(exc).__name__}"
        if claim.get("text") != decoded:
            return "text is not the decoding of token_ids"
        try:
            margins = self.runner.rescore(self.request, ids)
        except InferenceInputError as exc:
            return str(exc)
        worst = max(range(len(margins)), key=margins.__getitem__, default=None)
        if worst is not None and margins[worst] > self.logit_margin:
            return f"token {worst} is {margins[worst]:.3f} logits below the verifier's top (limit {self.logit_margin})"
        return None

    def _finish(self, ids: list[int], finish_reason: object) -> str | None:
        # Generation stops at the first stop token or at max_new_tokens, and at nothing else.
        stops = self.runner.stop_ids
        limit = self.request.max_new_tokens
        if not ids or len(ids) > limit:
            return f"{len(ids)} tokens; a generation has 1 to {limit}"
        if any(t in stops for t in ids[:-1]):
            return "a stop token before the end"
        if ids[-1] in stops:
            return None if finish_reason == "eos" else f"ends at a stop token but says {finish_reason!r}"
        if finish_reason != "length":
            return f"says {finish_reason!r} without a stop token at the end"
        return None if len(ids) == limit else f"stops after {len(ids)} of {limit} tokens without a stop token"
