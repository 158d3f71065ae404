"""The acceptance rule on this machine's own copy of a model: how the oracle, a committee member
and a watcher check someone else's claimed generation, and which output a committee member signs.

A claim is rescored on a float32 CPU copy of the registered base and the adapter the input
names, loaded on the first claim that needs it (equal bytes, or a claim whose identity fields
already differ, need no model). `run_callable` (sandbox.run_callable) rescores in a bwrap worker
of its own, so a registered model's loader never runs next to the caller's key; without it the
claim is rescored in this process on `registry` (default: a float32 CPU one)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tributa.catalog import LocalModel
from tributa.verification.generation import ClaimChecker
from tributa.verification.judge import ClaimCheck, Judge
from tributa.verification.sandboxed import rescore_claim

log = logging.getLogger("tributa.verification")


def claim_checker(
    base: LocalModel,
    adapters: list[LocalModel],
    input_bytes: bytes,
    max_new_tokens: int,
    logit_margin: float,
    run_callable: Callable[..., Any] | None = None,
    registry: Any = None,
) -> ClaimCheck:
    """Checks claimed generations of the job (`base`, `adapters`, `input_bytes`) against this
    machine's model. JobInputError if the input is not a job."""
    from tributa.runtime.executor import job_spec
    from tributa.runtime.jobs import generation_request, parse_input

    payload = parse_input(input_bytes)
    spec = job_spec(base, adapters, payload, max_new_tokens)
    if spec.kind != "generate":  # a claimed generation for another kind of job is simply wrong
        return lambda claim: f"the job is a {spec.kind} job, not a generation"
    request = generation_request(spec, payload)
    if run_callable is not None:
        folders = [Path(str(spec.model_path))] + ([Path(str(spec.adapter_path))] if spec.adapter is not None else [])
        fields = (
            str(spec.model_path),
            spec.adapter,
            None if spec.adapter is None else str(spec.adapter_path),
            request.prompt,
            request.max_new_tokens,
            request.chat,
        )
        return lambda claim: run_callable(rescore_claim, *fields, claim, logit_margin, read_only=folders)
    loaded: list[ClaimChecker] = []

    def check(claim: dict[str, Any]) -> str | None:
        if not loaded:
            runner = (registry or _cpu_float32()).generation(Path(str(spec.model_path)))
            if spec.adapter is not None:
                runner.load_adapter(spec.adapter, str(spec.adapter_path))
            loaded.append(ClaimChecker(runner, request, logit_margin))
        return loaded[0](claim)

    return check


_CPU_FLOAT32: list[Any] = []
_CPU_FLOAT32_LOCK = threading.Lock()


def _cpu_float32():
    """The registry claims are rescored on without one given: float32 on the CPU, whatever the
    machine serves with, as in the sandboxed rescoring (one per process: its models stay loaded)."""
    from tributa.runtime.jobs import RunnerRegistry

    with _CPU_FLOAT32_LOCK:
        if not _CPU_FLOAT32:
            _CPU_FLOAT32.append(RunnerRegistry("cpu", "float32"))
        return _CPU_FLOAT32[0]


def committee_answer(posted: bytes | None, own: bytes, judge: Judge) -> bytes:
    """The output a committee member signs: the posted one when the rule accepts it beside the
    member's own run, else its own.

    Signing its own bytes whenever they differ would let two members on the same hardware, whose
    outputs agree with each other byte for byte, outvote an honest answer from other hardware that
    the rule accepts, and slash its agent. RescoreFailed propagates: a member that cannot judge
    gives no verdict rather than a vote against."""
    if posted is None or posted == own:
        return own
    if judge.agree(posted, own):
        log.info("the posted answer differs from this run's but the rule accepts it: upholding it")
        return posted
    return own
