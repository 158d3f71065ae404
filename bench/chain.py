"""A fresh Anvil node with the contracts deployed, for the benchmarks."""

from __future__ import annotations

import os
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tributa.chain.accounts import dev_account
from tributa.chain.contracts import Contracts, load_contracts
from tributa.chain.eip712 import sign_result
from tributa.chain.events import first_event
from tributa.chain.tx import Signer
from tributa.devnet import AnvilNode, ape_deploy, settings_for


@contextmanager
def deployed_chain(
    workdir: Path, block_time: float | None = None
) -> Iterator[tuple[AnvilNode, Contracts, dict[str, Signer]]]:
    with AnvilNode(block_time=block_time, log_path=workdir / "anvil.log") as node:
        settings = settings_for(node, workdir / "data", workdir / "deployments")
        ape_deploy(node.rpc_url, settings.deployments_dir)
        contracts = load_contracts(settings)
        roles = ("deployer", "oracle", "agent", "agent2", "requester", "creator", "publisher", "buyer", "buyer2")
        yield node, contracts, {r: Signer(contracts.w3, dev_account(r)) for r in roles}


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def register_model(contracts: Contracts, publisher: Signer, dataset_ids=(), weights=(), fee: int = 10**15) -> int:
    call = contracts.registry.functions.register_model(
        "bench", os.urandom(32), [], list(dataset_ids), list(weights), fee, publisher.address
    )
    receipt = publisher.transact(call).receipt
    return first_event(contracts.registry, "ModelRegistered", receipt)["model_id"]


def register_agent(contracts: Contracts, agent: Signer, models: list[int]) -> None:
    stake = contracts.escrow.functions.min_stake().call()
    from tributa.crypto import public_key_of

    agent.transact(
        contracts.escrow.functions.register_agent(models, 0, 1, public_key_of(bytes(agent.account.key))), value=stake
    )


def post(contracts: Contracts, requester: Signer, model_id: int, fee: int = 10**16, deadline_s: int = 3600):
    now = contracts.w3.eth.get_block("latest")["timestamp"]
    # the fee a requester is shown
    _active, model_fee, _receiver = contracts.registry.functions.model_pricing(model_id).call()
    call = contracts.escrow.functions.post_task(model_id, os.urandom(32), now + deadline_s, 1, model_fee)
    result = requester.transact(call, value=fee)
    task_id = first_event(contracts.escrow, "TaskPosted", result.receipt)["task_id"]
    return task_id, result.gas_used


def settlement(
    contracts: Contracts, agent: Signer, task_id: int, agent_fee: int = 10**15, dataset_ids=(), weights=()
) -> tuple:
    digest = os.urandom(32)
    sig = sign_result(agent.account, contracts.chain_id, contracts.escrow.address, task_id, digest)
    return (task_id, digest, os.urandom(32), [agent.address], [sig], agent_fee, [], list(dataset_ids), list(weights))
