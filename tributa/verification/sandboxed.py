"""Rescoring a claimed generation inside a sandboxed worker (`SandboxedExecutor.run_callable`),
so that the oracle never loads a registered model in the process that holds its key: a model's
loader is the publisher's data, and the folder check is one line of defence, not two."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def rescore_claim(
    base_dir: str,
    adapter: str | None,
    adapter_dir: str | None,
    prompt: str,
    max_new_tokens: int,
    chat: bool,
    claim: dict[str, Any],
    logit_margin: float,
) -> str | None:
    """ClaimChecker's verdict on `claim` (None: accepted), on a float32 CPU copy of the model.
    Runs in the worker: a module-level function taking and returning JSON-able values."""
    from tributa.runtime.generation import GenerationRequest, GenerationRunner
    from tributa.verification.generation import ClaimChecker

    runner = GenerationRunner(Path(base_dir), device="cpu", dtype="float32")
    if adapter is not None:
        if adapter_dir is None:
            raise ValueError(f"adapter {adapter!r} named without its folder")
        runner.load_adapter(adapter, adapter_dir)
    return ClaimChecker(runner, GenerationRequest(prompt, adapter, max_new_tokens, chat), logit_margin)(claim)
