"""Data-royalty gas from real Anvil receipts: settlement is flat in the number of contributors."""

from __future__ import annotations

import random
from pathlib import Path

from bench.chain import deployed_chain, median, post, register_agent, register_model, settlement
from tributa import merkle
from tributa.datasets import commit_and_register

REPEATS = 3
SIZES = (1, 100, 1000)
# Seeded: calldata gas depends on the bytes (zero bytes are cheaper), so random addresses and
# roots would move the figures a little from run to run.
SEED = 20261122
_rng = random.Random(SEED)


def _address() -> str:
    return "0x" + _rng.randbytes(20).hex()


def _register_dataset(contracts, creator, contributors: list[str]) -> tuple[int, list[str], list[int], int, int]:
    """Commit, next block, reveal; returns (id, contributors, shares, reveal gas, commit gas)."""
    n = len(contributors)
    shares = [10_000 // n + (1 if i < 10_000 % n else 0) for i in range(n)]
    ordered, shares = merkle.sort_contributors(zip(contributors, shares))
    commit, reveal, dataset_id = commit_and_register(
        contracts, creator, _rng.randbytes(32), _rng.randbytes(32), ordered, shares, "bench", gas=29_000_000 if n > 100 else None
    )
    return dataset_id, ordered, shares, reveal.gas_used, commit.gas_used


def run(workdir: Path) -> dict[str, float]:
    workdir.mkdir(parents=True, exist_ok=True)
    _rng.seed(SEED)
    figures: dict[str, float] = {}
    with deployed_chain(workdir) as (node, contracts, s):
        escrow = contracts.escrow.functions
        claimer = s["creator"]
        datasets = {}
        for n in SIZES:
            members = [claimer.address] + [_address() for _ in range(n - 1)]
            datasets[n] = _register_dataset(contracts, s["creator"], members)
        register_gas = [
            _register_dataset(contracts, s["creator"], [claimer.address] + [_address() for _ in range(9)])
            for _ in range(REPEATS)
        ]
        figures["gas_register_dataset_contributors_10"] = median([g[3] for g in register_gas])  # the reveal
        figures["gas_commit_dataset"] = median([g[4] for g in register_gas])
        figures["gas_commit_register_dataset_contributors_10"] = median([g[3] + g[4] for g in register_gas])

        model = register_model(contracts, s["publisher"])
        register_agent(contracts, s["agent"], [model])
        warm, _ = post(contracts, s["requester"], model)
        s["oracle"].transact(escrow.settle(settlement(contracts, s["agent"], warm, dataset_ids=[datasets[1][0]], weights=[10_000])))
        for n, (dataset_id, *_rest) in datasets.items():
            gas = []
            for _ in range(REPEATS):
                task_id, _ = post(contracts, s["requester"], model)
                call = escrow.settle(settlement(contracts, s["agent"], task_id, dataset_ids=[dataset_id], weights=[10_000]))
                gas.append(s["oracle"].transact(call).gas_used)
            figures[f"gas_settle_contributors_{n}"] = median(gas)

        # A contributor of the 1,000-member dataset claims for the first time (its first claim ever, so
        # nothing of its is warm or non-zero in the vault), then again after one more task was credited.
        dataset_id, ordered, shares = datasets[1000][:3]
        index = ordered.index(claimer.address)
        proof = merkle.contributors_proof(ordered, shares, index)
        claim = contracts.vault.functions.claim(dataset_id, 1, shares[index], proof)
        figures["gas_claim_first_contributors_1000"] = claimer.transact(claim).gas_used
        task_id, _ = post(contracts, s["requester"], model)
        s["oracle"].transact(escrow.settle(settlement(contracts, s["agent"], task_id, dataset_ids=[dataset_id], weights=[10_000])))
        # The share is proven now, so the repeat claim sends no proof (as tributa.royalties does).
        repeat = contracts.vault.functions.claim(dataset_id, 1, shares[index], [])
        figures["gas_claim_repeat_contributors_1000"] = claimer.transact(repeat).gas_used

        # One contributor of a 10-member dataset claims what several tasks credited.
        dataset_id, ordered, shares = register_gas[0][:3]
        for _ in range(REPEATS):
            task_id, _ = post(contracts, s["requester"], model)
            s["oracle"].transact(escrow.settle(settlement(contracts, s["agent"], task_id, dataset_ids=[dataset_id], weights=[10_000])))
        index = ordered.index(claimer.address)
        proof = merkle.contributors_proof(ordered, shares, index)
        claim = contracts.vault.functions.claim(dataset_id, 1, shares[index], proof)
        figures["gas_claim"] = claimer.transact(claim).gas_used
    figures["settle_contributors_1000_vs_1_ratio"] = round(
        figures["gas_settle_contributors_1000"] / figures["gas_settle_contributors_1"], 4
    )
    return figures
