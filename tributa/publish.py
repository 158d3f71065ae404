"""Publishing models to the content store and the DataRegistry."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tributa.catalog import LocalModel, describe_folder
from tributa.chain.contracts import Contracts
from tributa.chain.events import first_event
from tributa.chain.tx import Signer, TxResult
from tributa.errors import TributaError
from tributa.registry import DEFAULT_MAX_NEW_TOKENS, MAX_NEW_TOKENS_CAP, ServingTerms, read_model, read_serving_terms

MAX_NAME = 64


@dataclass(frozen=True)
class PublishedModel:
    model_id: int
    base: LocalModel
    adapters: list[LocalModel]
    tx: TxResult


def register_model(
    contracts: Contracts,
    signer: Signer,
    store,
    name: str,
    base_path: Path,
    adapter_paths: Sequence[Path] = (),
    datasets: dict[int, int] | None = None,
    fee_per_task: int = 0,
    fee_receiver: str | None = None,
    progress=None,
) -> PublishedModel:
    """Add the folders to the store (pinned) and register the model with its provenance."""
    if not name or len(name) > MAX_NAME:
        raise TributaError(f"model name must be 1..{MAX_NAME} characters")
    datasets = datasets or {}
    if datasets and sum(datasets.values()) != 10_000:
        raise TributaError(f"dataset weights must sum to 10000 bps, not {sum(datasets.values())}")
    parts = []
    for path in [Path(base_path), *map(Path, adapter_paths)]:
        described = describe_folder(store, path)
        stored = str(store.put_dir(path, progress=progress))
        if stored != described.cid:
            raise TributaError(f"{path} changed while it was being added; try again")
        store.pin(stored)
        parts.append(described)
    base, adapters = parts[0], parts[1:]
    if base.kind == "adapter":
        raise TributaError(f"{base.path} is an adapter; pass the base model folder first")
    if any(a.kind != "adapter" for a in adapters):
        raise TributaError("every --adapter must be a LoRA adapter folder (with adapter_config.json)")
    key = contracts.registry.functions.weights_key(base.digest, [a.digest for a in adapters]).call()
    existing = contracts.registry.functions.model_id_of_weights(key).call()
    if existing:
        raise TributaError(
            f"these weights (base and adapters) are already registered as model {existing}; a weights set registers once"
        )
    ids = sorted(datasets)
    call = contracts.registry.functions.register_model(
        name,
        base.digest,
        [a.digest for a in adapters],
        ids,
        [datasets[i] for i in ids],
        fee_per_task,
        fee_receiver or signer.address,
    )
    result = signer.transact(call, action="register_model")
    model_id = first_event(contracts.registry, "ModelRegistered", result.receipt)["model_id"]
    return PublishedModel(model_id, base, adapters, result)


def set_serving_terms(
    contracts: Contracts,
    signer: Signer,
    model_id: int,
    max_new_tokens: int | None = None,
    min_cosine: float | None = None,
    logit_margin: float | None = None,
) -> ServingTerms:
    """Set a model's serving terms (publisher only); a term left None keeps its current value.
    Bounds are checked here first, so a bad value costs no transaction."""
    current = contracts.registry.functions.serving_terms(model_id).call()
    tokens = current[0] if max_new_tokens is None else max_new_tokens
    ppm = current[1] if min_cosine is None else round(min_cosine * 1e6)
    milli = current[2] if logit_margin is None else round(logit_margin * 1e3)
    if not 0 <= tokens <= MAX_NEW_TOKENS_CAP:
        raise TributaError(
            f"max_new_tokens must be 1..{MAX_NEW_TOKENS_CAP} (0: the default {DEFAULT_MAX_NEW_TOKENS}), not {tokens}"
        )
    if ppm and not 900_000 <= ppm <= 1_000_000:
        raise TributaError(f"min_cosine must be from 0.9 to 1.0, not {ppm / 1e6}")
    if not 0 <= milli <= 50_000:
        raise TributaError(f"logit_margin must be from 0 to 50, not {milli / 1e3}")
    model = read_model(contracts.registry, model_id)
    if model.publisher.lower() != signer.address.lower():
        raise TributaError(f"only model {model_id}'s publisher {model.publisher} can set its terms")
    signer.transact(
        contracts.registry.functions.set_serving_terms(model_id, tokens, ppm, milli), action="set_serving_terms"
    )
    return read_serving_terms(contracts.registry, model_id)
