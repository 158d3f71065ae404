"""Gas of the escrow's entry points, from real Anvil receipts (medians over repeats)."""

from __future__ import annotations

import os
from pathlib import Path

from bench.chain import deployed_chain, median, register_agent, register_model, settlement
from tributa.chain.events import first_event

REPEATS = 5
BATCH = 50


def post(contracts, requester, model_id: int, fee: int = 10**16, deadline_s: int = 3600):
    """post_task with the model's current fee as max_model_fee (as the CLI passes the fee it showed)."""
    now = contracts.w3.eth.get_block("latest")["timestamp"]
    max_model_fee = contracts.registry.functions.model(model_id).call().fee_per_task
    call = contracts.escrow.functions.post_task(model_id, os.urandom(32), now + deadline_s, 1, max_model_fee)
    result = requester.transact(call, value=fee)
    return first_event(contracts.escrow, "TaskPosted", result.receipt)["task_id"], result.gas_used


def run(workdir: Path) -> dict[str, float]:
    workdir.mkdir(parents=True, exist_ok=True)
    with deployed_chain(workdir) as (_node, contracts, s):
        escrow = contracts.escrow.functions
        model = register_model(contracts, s["publisher"])
        register_agent(contracts, s["agent"], [model])
        # One settled task first, so every balance slot is warm as in steady state.
        first, _ = post(contracts, s["requester"], model)
        s["oracle"].transact(escrow.settle(settlement(contracts, s["agent"], first)))

        post_gas, settle_gas, refund_gas, withdraw_gas = [], [], [], []
        for _ in range(REPEATS):
            task_id, gas = post(contracts, s["requester"], model)
            post_gas.append(gas)
            settle_gas.append(s["oracle"].transact(escrow.settle(settlement(contracts, s["agent"], task_id))).gas_used)
            withdraw_gas.append(s["agent"].transact(escrow.withdraw()).gas_used)
        for _ in range(REPEATS):
            task_id, _ = post(contracts, s["requester"], model, deadline_s=60)
            contracts.w3.provider.make_request("evm_increaseTime", [61])
            contracts.w3.provider.make_request("evm_mine", [])
            refund_gas.append(s["requester"].transact(escrow.refund(task_id)).gas_used)

        batch_ids = [post(contracts, s["requester"], model)[0] for _ in range(BATCH)]
        batch = [settlement(contracts, s["agent"], t) for t in batch_ids]
        batch_gas = s["oracle"].transact(escrow.settle_batch(batch), gas=25_000_000).gas_used

    figures = {
        "gas_post_task": median(post_gas),
        "gas_settle": median(settle_gas),
        "gas_refund": median(refund_gas),
        "gas_withdraw": median(withdraw_gas),
        f"gas_settle_batch_per_task_{BATCH}": batch_gas / BATCH,
    }
    figures["settle_batch_vs_settle_ratio"] = round(
        figures[f"gas_settle_batch_per_task_{BATCH}"] / figures["gas_settle"], 3
    )
    return figures
