"""Helpers for tests that drive the real chain."""

from __future__ import annotations
from tributa.chain.events import first_event


def signer_for(contracts, role: str):
    from tributa.chain.accounts import dev_account
    from tributa.chain.tx import Signer

    return Signer(contracts.w3, dev_account(role))


def advance_time(w3, seconds: int) -> None:
    w3.provider.make_request("evm_increaseTime", [seconds])
    w3.provider.make_request("evm_mine", [])



def register_test_model(contracts, publisher, fee_per_task: int = 10**15, name: str = "test-model") -> int:
    """A model with a random weights digest: enough for escrow tests that run no inference."""
    import os

    call = contracts.registry.functions.register_model(name, os.urandom(32), [], [], [], fee_per_task, publisher.address)
    result = publisher.transact(call)
    return first_event(contracts.registry, "ModelRegistered", result.receipt)["model_id"]


def ensure_agent(contracts, signer, models: list[int]) -> None:
    """Register `signer` as an agent serving `models` (or update its model list)."""
    from compute_agent.registration import AgentProfile, ensure_registered

    pubkey = b"\x04" + signer.account._key_obj.public_key.to_bytes()
    ensure_registered(contracts, signer, AgentProfile(models, 0, 1, pubkey))


def post_raw_task(contracts, requester, model_id: int, input_digest: bytes, deadline_s: int = 600, fee: int | None = None) -> int:
    from tributa.tasks import min_fee

    now = contracts.w3.eth.get_block("latest")["timestamp"]
    fee = fee if fee is not None else 2 * min_fee(contracts, model_id)
    call = contracts.escrow.functions.post_task(model_id, input_digest, now + deadline_s, 1)
    result = requester.transact(call, value=fee)
    return first_event(contracts.escrow, "TaskPosted", result.receipt)["task_id"]
