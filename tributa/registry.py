"""Reading models and datasets from the DataRegistry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the sandboxed worker imports the limits here, and never web3
    from web3.contract import Contract

from tributa.errors import TributaError

# What a task buys when its model's publisher set no terms (`DataRegistry.set_serving_terms`).
DEFAULT_MAX_NEW_TOKENS = 64
MAX_NEW_TOKENS_CAP = 4096  # DataRegistry.MAX_NEW_TOKENS_CAP: the most a task can buy; the runtime serves up to it


@dataclass(frozen=True)
class ServingTerms:
    """A model's serving terms as registered: the most new tokens a generation task may ask for
    (the fee per task pays for up to that many), and how agents' results are verified (None:
    the verifier's defaults, tributa.verification.VerificationParams)."""

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    min_cosine: float | None = None
    logit_margin: float | None = None

    @classmethod
    def from_chain(cls, max_new_tokens: int, min_cosine_ppm: int, logit_margin_milli: int) -> ServingTerms:
        return cls(
            max_new_tokens=max_new_tokens or DEFAULT_MAX_NEW_TOKENS,
            min_cosine=min_cosine_ppm / 1e6 if min_cosine_ppm else None,
            logit_margin=logit_margin_milli / 1e3 if logit_margin_milli else None,
        )


def read_serving_terms(registry: Contract, model_id: int) -> ServingTerms:
    return ServingTerms.from_chain(*registry.functions.serving_terms(model_id).call())


@dataclass(frozen=True)
class ModelInfo:
    model_id: int
    name: str
    weights_digest: bytes
    publisher: str
    fee_receiver: str
    fee_per_task: int
    active: bool
    adapter_digests: list[bytes]
    dataset_ids: list[int]
    dataset_weights_bps: list[int]
    fee_receiver_locked: bool = False  # a successful IMO pointed the fees at its token, for good
    imo_in_progress: bool = False
    scheduled_fee: int | None = None  # a fee cut not in effect yet ...
    scheduled_fee_at: int = 0  # ... from this timestamp
    deactivation_at: int = 0  # the model closes to new tasks at this timestamp (0 = not scheduled)
    serving: ServingTerms = ServingTerms()


def read_model(registry: Contract, model_id: int) -> ModelInfo:
    if not 1 <= model_id <= registry.functions.model_count().call():
        raise TributaError(f"model {model_id} is not registered (see `tributa model list`)")
    weights, publisher, receiver, fee, active, name = registry.functions.model(model_id).call()
    pending_fee, pending_fee_at, deactivation_at = registry.functions.pending_pricing(model_id).call()
    return ModelInfo(
        model_id=model_id,
        name=name,
        weights_digest=bytes(weights),
        publisher=publisher,
        fee_receiver=receiver,
        fee_per_task=fee,
        active=active,
        adapter_digests=[bytes(d) for d in registry.functions.model_adapters(model_id).call()],
        dataset_ids=list(registry.functions.model_dataset_ids(model_id).call()),
        dataset_weights_bps=list(registry.functions.model_dataset_weights(model_id).call()),
        fee_receiver_locked=registry.functions.fee_receiver_locked(model_id).call(),
        imo_in_progress=int(registry.functions.imo_launcher_of(model_id).call(), 16) != 0,
        scheduled_fee=pending_fee if pending_fee_at else None,
        scheduled_fee_at=pending_fee_at,
        deactivation_at=deactivation_at,
        serving=read_serving_terms(registry, model_id),
    )


def list_models(registry: Contract) -> list[ModelInfo]:
    return [read_model(registry, i) for i in range(1, registry.functions.model_count().call() + 1)]
