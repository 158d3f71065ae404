"""From a job's model parts (resolved by digest) and input bytes to canonical output bytes."""

from __future__ import annotations

from typing import Protocol

from tributa.catalog import LocalModel
from tributa.registry import DEFAULT_MAX_NEW_TOKENS as MAX_NEW_TOKENS  # a model without registered terms
from tributa.runtime.jobs import JobInputError, JobSpec, RunnerRegistry, default_registry, parse_input, run_payload

__all__ = ["Executor", "JobInputError", "JobRunner", "job_spec"]


class JobRunner(Protocol):
    """What runs a job: the in-process Executor or the SandboxedExecutor."""

    def run(
        self, base: LocalModel, adapters: list[LocalModel], input_bytes: bytes, max_new_tokens: int = MAX_NEW_TOKENS
    ) -> bytes: ...


_FIRST = object()  # no "adapter" field: the model's first adapter, as before several were served


def choose_adapter(adapters: list[LocalModel], wanted: object = _FIRST) -> LocalModel | None:
    """The adapter a generation job asked for by CID in its "adapter" field; null asks for the bare
    base model, and no field for the model's first adapter (or the base if it has none)."""
    if wanted is _FIRST:
        return adapters[0] if adapters else None
    if wanted is None:
        return None
    for adapter in adapters:
        if adapter.cid == wanted:
            return adapter
    served = ", ".join(a.cid for a in adapters) or "none (only the base, with null)"
    raise JobInputError(f'"adapter" {wanted!r} is not one of this model\'s adapters: {served}')


class Executor:
    """Runs jobs on this process's loaded models (one base, many adapters stay in memory)."""

    def __init__(self, registry: RunnerRegistry | None = None) -> None:
        self.registry = registry or default_registry()

    def run(
        self, base: LocalModel, adapters: list[LocalModel], input_bytes: bytes, max_new_tokens: int = MAX_NEW_TOKENS
    ) -> bytes:
        payload = parse_input(input_bytes)  # once: it names the adapter and is the job's input
        return run_payload(job_spec(base, adapters, payload, max_new_tokens), payload, self.registry).output


def job_spec(
    base: LocalModel, adapters: list[LocalModel], payload: dict, max_new_tokens: int = MAX_NEW_TOKENS
) -> JobSpec:
    """What a job on `base` runs: its kind, folder, the adapter its input asks for, and the most
    new tokens its model's registered terms allow (also the default when the input names none)."""
    wanted = payload.get("adapter", _FIRST) if base.kind == "generate" else _FIRST
    adapter = choose_adapter(adapters, wanted)
    return JobSpec(
        kind=base.kind,
        model_path=str(base.path),
        # Adapters are named by their CID, so two folders with one name never collide.
        adapter=adapter.cid if adapter else None,
        adapter_path=str(adapter.path) if adapter else None,
        max_new_tokens=max_new_tokens,
    )
