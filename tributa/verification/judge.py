"""Whether two job outputs (canonical JSON bytes) agree, by the acceptance rule of their kind."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from tributa.errors import TributaError
from tributa.verification.embeddings import embeddings_agree
from tributa.verification.params import VerificationParams

# A claimed generation -> None when the verifier's model accepts it, else why not.
ClaimCheck = Callable[[dict[str, Any]], "str | None"]
_IDENTITY = ("model", "adapter", "prompt_tokens")


class RescoreFailed(TributaError, RuntimeError):
    """The verifier's model could not judge a claim (a crash, not a rejection): the task's verdict
    must wait or fail, never fall back to byte equality."""


log = logging.getLogger("tributa.verification")


class Judge:
    """The rule for one task. Generations that differ need `check_claim` (the verifier's own
    model); without it only equal generations agree, as digests did."""

    def __init__(
        self, params: VerificationParams = VerificationParams(), check_claim: ClaimCheck | None = None
    ) -> None:
        self.params = params
        self.check_claim = check_claim
        self._verdicts: dict[bytes, str | None] = {}  # one rescoring per distinct claim

    def agree(self, a: bytes, b: bytes) -> bool:
        if a == b:
            return True
        x, y = _parse(a), _parse(b)
        if x is None or y is None or x.get("kind") != y.get("kind"):
            return False
        if x.get("kind") == "embed":
            return embeddings_agree(x, y, self.params.min_cosine)
        if x.get("kind") != "generate" or any(x.get(f) != y.get(f) for f in _IDENTITY):
            return False
        if self.check_claim is not None and self.rejection(a) is None and self.rejection(b) is None:
            return True
        return _same_generation(x, y)

    def rejection(self, output: bytes) -> str | None:
        """Why the verifier's model rejects a claimed generation (None: accepted)."""
        if output not in self._verdicts:
            claim = _parse(output)
            if claim is None or claim.get("kind") != "generate" or self.check_claim is None:
                self._verdicts[output] = "not a generation the verifier can check"
            else:
                try:
                    self._verdicts[output] = self.check_claim(claim)
                except Exception as exc:
                    # Not a verdict on this claim: falling back to equal bytes here would let one
                    # claim that breaks the check get honest hardware-variant answers slashed.
                    raise RescoreFailed(
                        f"the verifier could not rescore a claimed generation: {type(exc).__name__}: {exc}"
                    ) from exc
        return self._verdicts[output]


def _same_generation(x: dict[str, Any], y: dict[str, Any]) -> bool:
    return all(x.get(f) == y.get(f) for f in ("token_ids", "text", "finish_reason"))


def _parse(output: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(output)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None
